"""Large JSON request bodies are decoded in a worker thread, never on the event loop.

FastAPI decodes and validates a body on the event loop even for sync endpoints. Validation of any body is
bounded by the schemas (lists and strings have maximum lengths, and pydantic stops a too-long list early), but
decoding is not: a 1 MiB body (the app's limit) costs about 7 ms of `json.loads`, during which no other client
is served. Routes of routers built with `route_class=OffLoopJSONRoute` decode bodies above
`INLINE_JSON_BYTES` with `anyio.to_thread`; the OpenAPI schema is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import anyio.to_thread
from fastapi import Request, Response
from fastapi.routing import APIRoute

INLINE_JSON_BYTES = 64 * 1024
"""Bodies up to this size (a fraction of a millisecond to decode) are decoded in place."""


class OffLoopJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            if len(body) <= INLINE_JSON_BYTES:
                self._json = json.loads(body)
            else:
                self._json = await anyio.to_thread.run_sync(json.loads, body)
        return self._json


class OffLoopJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_off_loop(request: Request) -> Response:
            return await handle(OffLoopJSONRequest(request.scope, request.receive))

        return handle_off_loop
