"""Subjects of a session: list them with their references, upload a reference for a named subject, rename one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth import get_service
from api.errors import error_responses
from api.routes_sessions import owned_session
from api.urls import subject_view
from studio.images import ImageRejected
from studio.reference_controls import CONTROL_FIELDS, ReferenceCombine, ReferenceScale, ReferenceWindow
from studio.service import RequestRejected, SessionGone, TurnService
from studio.text import Text
from studio.turns import Session, SubjectView

router = APIRouter(
    prefix="/v1/sessions/{session_id}/subjects", tags=["subjects"], responses=error_responses(401, 404, 422)
)


@router.get("", response_model=list[SubjectView])
def list_subjects(
    session: Session = Depends(owned_session), service: TurnService = Depends(get_service)
) -> list[SubjectView]:
    return [subject_view(subject) for subject in service.db.list_subjects(session.id)]


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=SubjectView, responses=error_responses(400, 413, 415)
)
async def upload_reference(
    name: Annotated[Text, Form(min_length=1, max_length=100, description="the subject's noun, e.g. 'girl'")],
    file: UploadFile = File(..., description="PNG, JPEG or WebP"),
    description: Annotated[Text, Form(max_length=500)] = "",
    subject_id: Annotated[
        Text | None, Form(max_length=20, description="attach to this id; default: the subject of that name, or new")
    ] = None,
    add: Annotated[
        bool, Form(description="add the image to the subject's references instead of replacing them (at most 8)")
    ] = False,
    session: Session = Depends(owned_session),
    service: TurnService = Depends(get_service),
) -> SubjectView:
    """Set a user-supplied reference image (or, with `add`, one more). It is never overwritten by a crop of a
    drawn image."""
    data = await file.read(service.settings.max_upload_bytes + 1)
    try:
        # decoding and re-encoding are CPU work: off the event loop
        subject = await run_in_threadpool(
            service.upload_reference, session, name, data, description, subject_id, add
        )
    except ImageRejected as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    except RequestRejected as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except SessionGone as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return subject_view(subject)


class SubjectPatch(BaseModel):
    """A new name and/or description for a subject; fields left out keep their value."""

    name: Text | None = Field(default=None, min_length=1, max_length=100, description="the subject's noun")
    description: Text | None = Field(default=None, max_length=500)
    reference_scale: ReferenceScale | None = Field(default=None, description="null: back to the default (1)")
    reference_window: ReferenceWindow | None = Field(default=None, description="null: back to [0, 1]")
    reference_combine: ReferenceCombine | None = Field(default=None, description="null: back to 'average'")

    def controls(self) -> dict[str, object]:
        """The reference controls this patch sets (given explicitly, null included)."""
        return {name: getattr(self, name) for name in CONTROL_FIELDS if name in self.model_fields_set}


@router.patch("/{subject_id}", response_model=SubjectView, responses=error_responses(400, 413))
def rename_subject(
    subject_id: str,
    body: SubjectPatch,
    session: Session = Depends(owned_session),
    service: TurnService = Depends(get_service),
) -> SubjectView:
    """Rename a subject, change its description or its reference controls (docs/reference_controls.md); its
    reference images and turn history stay."""
    try:
        subject = service.rename_subject(session, subject_id, body.name, body.description, body.controls())
    except SessionGone as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    if subject is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"subject {subject_id} not found")
    return subject_view(subject)


style_router = APIRouter(
    prefix="/v1/sessions/{session_id}", tags=["subjects"], responses=error_responses(401, 404, 422)
)


@style_router.post("/style-reference", response_model=Session, responses=error_responses(400, 413, 415))
async def upload_style_reference(
    file: UploadFile = File(..., description="PNG, JPEG or WebP"),
    scale: Annotated[
        float | None, Form(ge=0.0, le=2.0, allow_inf_nan=False, description="the style's IP scale; default: kept")
    ] = None,
    session: Session = Depends(owned_session),
    service: TurnService = Depends(get_service),
) -> Session:
    """Make an uploaded image the session's global style reference (whole canvas, every later turn; a turn's
    own `settings.style_reference` overrides it). Answers the session with its new settings."""
    data = await file.read(service.settings.max_upload_bytes + 1)
    try:
        return await run_in_threadpool(service.upload_style_reference, session, data, scale)
    except ImageRejected as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    except SessionGone as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
