"""Sessions: create, list, get, delete, branch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Response, status
from fastapi.security import HTTPAuthorizationCredentials

from api.auth import bearer, current_tenant, get_service, tenant_of
from api.errors import error_responses
from studio.rejections import BranchConflict, SessionGone
from studio.service import RequestRejected, TurnService
from studio.turns import Session, SessionBranch, SessionCreate

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=error_responses(401, 422))


def owned_session(
    session_id: str,
    service: TurnService = Depends(get_service),
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Session:
    """The session if it belongs to the caller's tenant; otherwise 404 (never 403: existence is not revealed).
    Authentication and the ownership lookup share one worker-thread hop."""
    session = service.db.get_session(session_id, tenant=tenant_of(service, credentials))
    if session is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"session {session_id} not found")
    return session


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Session, responses=error_responses(400, 413))
def create_session(
    body: SessionCreate, tenant: str = Depends(current_tenant), service: TurnService = Depends(get_service)
) -> Session:
    try:
        return service.create_session(tenant, body.title, body.height, body.width, body.settings)
    except RequestRejected as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


@router.get("", response_model=list[Session])
def list_sessions(
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=2**31 - 1),
    tenant: str = Depends(current_tenant),
    service: TurnService = Depends(get_service),
) -> list[Session]:
    return service.db.list_sessions(tenant, limit=limit, offset=offset)


@router.get("/{session_id}", response_model=Session, responses=error_responses(404))
def get_session(session: Session = Depends(owned_session)) -> Session:
    return session


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404))
def delete_session(session: Session = Depends(owned_session), service: TurnService = Depends(get_service)) -> Response:
    service.delete_session(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


BranchPoint = Annotated[
    int, Path(ge=0, le=2**31 - 1, description="the turn to branch after (0: before the first turn)")
]


@router.post(
    "/{session_id}/turns/{index}/branch",
    status_code=status.HTTP_201_CREATED,
    response_model=Session,
    responses=error_responses(400, 404, 409, 413),
)
def branch_session(
    index: BranchPoint,
    body: Annotated[SessionBranch | None, Body()] = None,
    session: Session = Depends(owned_session),
    service: TurnService = Depends(get_service),
) -> Session:
    """A new session that shares this one's history up to turn `index`: its turns 1..index (the same
    records and images), the subject memory as it was after that turn, and the conversation state of that
    turn. Its `parent_id` and `branch_turn` name this session and turn; a new turn posted to it is turn
    index+1 of the branch. 409 when the turn is not done (queued, running, failed); 0 gives a fresh session
    with the same canvas and settings."""
    try:
        return service.branch_session(session, index, body.title if body is not None else None)
    except BranchConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except SessionGone as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{exc.args[0]} in session {session.id}") from exc
