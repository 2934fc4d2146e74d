"""Subjects of a session: list them with their references, upload a reference for a named subject."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, status

from api.auth import get_service
from api.errors import error_responses
from api.routes_sessions import owned_session
from studio.images import ImageRejected, encode_png, sniff_upload
from studio.service import TurnService
from studio.subjects import ReferenceSource, Subject, next_mother_id, parent_of, validate_subject_id
from studio.text import Text
from studio.turns import Session, SubjectView

router = APIRouter(
    prefix="/v1/sessions/{session_id}/subjects", tags=["subjects"], responses=error_responses(401, 404, 422)
)


def _view(subject: Subject) -> SubjectView:
    url = f"/v1/images/{subject.reference_image_id}" if subject.reference_image_id else None
    return SubjectView(**subject.model_dump(), reference_url=url)


@router.get("", response_model=list[SubjectView])
def list_subjects(
    session: Session = Depends(owned_session), service: TurnService = Depends(get_service)
) -> list[SubjectView]:
    return [_view(subject) for subject in service.db.list_subjects(session.id)]


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
    limit = service.settings.max_upload_bytes
    data = await file.read(limit + 1)
    try:
        image = sniff_upload(data, limit, service.settings.max_upload_pixels)
    except ImageRejected as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    memory = service.db.list_subjects(session.id)
    target = _resolve_target(memory, name, subject_id)
    image_id = service.images.put(encode_png(image))
    existing = next((s for s in memory if s.id == target), None)
    subject = Subject(
        id=target,
        name=name,
        description=description or (existing.description if existing else ""),
        reference_image_id=image_id,
        reference_source=ReferenceSource.UPLOAD,
        reference_score=None,
        first_seen_turn=existing.first_seen_turn if existing else None,
        refreshed_turn=existing.refreshed_turn if existing else None,
    )
    service.db.put_subject(session.id, session.tenant, subject, image_id)
    return _view(subject)


def _resolve_target(memory: list[Subject], name: str, subject_id: str | None) -> str:
    if subject_id is not None:
        try:
            target = validate_subject_id(subject_id)
        except ValueError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"subject_id: {exc}") from exc
        parent = parent_of(target)
        if parent is not None and all(s.id != parent for s in memory):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"subject_id: parent {parent!r} is unknown")
        return target
    for subject in memory:
        if subject.name.lower() == name.lower() and not subject.is_component:
            return subject.id
    return next_mother_id({s.id for s in memory})
