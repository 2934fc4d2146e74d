"""Subjects of a session: list them with their references, upload a reference for a named subject."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, status
from starlette.concurrency import run_in_threadpool

from api.auth import get_service
from api.routes_sessions import owned_session
from api.urls import subject_view
from studio.images import ImageRejected
from studio.service import RequestRejected, SessionGone, TurnService
from studio.turns import Session, SubjectView

router = APIRouter(prefix="/v1/sessions/{session_id}/subjects", tags=["subjects"])


@router.get("", response_model=list[SubjectView])
def list_subjects(
    session: Session = Depends(owned_session), service: TurnService = Depends(get_service)
) -> list[SubjectView]:
    return [subject_view(subject) for subject in service.db.list_subjects(session.id)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SubjectView)
async def upload_reference(
    name: str = Form(..., min_length=1, max_length=100, description="the subject's noun, e.g. 'girl'"),
    file: UploadFile = File(..., description="PNG, JPEG or WebP"),
    description: str = Form("", max_length=500),
    subject_id: str | None = Form(None, description="attach to this id; default: the subject of that name, or new"),
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
