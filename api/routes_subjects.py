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
    session: Session = Depends(owned_session),
    service: TurnService = Depends(get_service),
) -> SubjectView:
    """Set a user-supplied reference image. It is never overwritten by a crop of a drawn image."""
    data = await file.read(service.settings.max_upload_bytes + 1)
    try:
        # decoding and re-encoding are CPU work: off the event loop
        subject = await run_in_threadpool(service.upload_reference, session, name, data, description, subject_id)
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


@router.patch("/{subject_id}", response_model=SubjectView, responses=error_responses(400, 413))
def rename_subject(
    subject_id: str,
    body: SubjectPatch,
    session: Session = Depends(owned_session),
    service: TurnService = Depends(get_service),
) -> SubjectView:
    """Rename a subject or change its description; its reference image and turn history stay."""
    try:
        subject = service.rename_subject(session, subject_id, body.name, body.description)
    except SessionGone as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    if subject is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"subject {subject_id} not found")
    return subject_view(subject)
