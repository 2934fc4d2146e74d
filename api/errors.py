"""One shape for every error answer, and the handlers that guarantee it.

Every error body is `{"detail": …}`: a message string for 400/401/404/409/413/415/429, and for 422 always a
list of `{loc, msg, type}` objects naming the offending field, whether pydantic found the problem or a route
refused the request. The offending input is never echoed: it may hold values JSON cannot carry (NaN, infinity).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorMessage(BaseModel):
    """The body of every error answer other than 422."""

    detail: str


class FieldError(BaseModel):
    """One problem of a refused request: where (`loc`, e.g. ["body", "settings", "fuse_scale", 0]) and what."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """The body of every 422 answer."""

    detail: list[FieldError] = Field(min_length=1)


_DESCRIPTIONS = {
    400: "The request body could not be read",
    401: "Missing, unknown or revoked API key",
    404: "Not found, or not visible to this tenant",
    409: "Conflicts with the resource's current state",
    413: "Request body or image too large",
    415: "Unsupported image type",
    422: "The request is invalid; `detail` names each offending field",
    429: "Too many unfinished turns in this session; retry after `Retry-After` seconds",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for these error statuses, each with its body model. A body over the app's
    size limit is refused by Starlette's limiter before any route runs, with a plain-text 413."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        responses[code] = {
            "model": ValidationErrorBody if code == 422 else ErrorMessage,
            "description": _DESCRIPTIONS[code],
        }
        if code == 413:
            responses[code]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    return responses


def field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic/FastAPI error dicts reduced to `FieldError`s (no `input`, no `ctx`: always serializable)."""
    return [
        {
            "loc": [part if isinstance(part, int) else str(part) for part in error["loc"]],
            "msg": error["msg"],
            "type": error["type"],
        }
        for error in errors
    ]


def rejection(message: str, loc: Sequence[str | int] = ("body",)) -> list[dict[str, Any]]:
    """The 422 `detail` of a request a route refused after validation (e.g. a canvas the preset cannot draw)."""
    return [{"loc": list(loc), "msg": message, "type": "value_error"}]


async def _validation_failed(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": field_errors(exc.errors())}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _http_error(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT and isinstance(exc.detail, str):
        return JSONResponse(
            {"detail": rejection(exc.detail)}, status_code=exc.status_code, headers=dict(exc.headers or {})
        )
    return await http_exception_handler(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(StarletteHTTPException, _http_error)
