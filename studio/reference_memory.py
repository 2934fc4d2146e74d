"""Subject-memory rules of the reference controls (docs/reference_controls.md): what an upload does to a
subject's references, and which fields a finished turn must not overwrite."""

from __future__ import annotations

from studio.reference_controls import CONTROL_FIELDS, MAX_SUBJECT_REFERENCES
from studio.rejections import RequestRejected
from studio.subjects import ReferenceSource, Subject

KEPT_FROM_STORE = ("more_reference_image_ids", *CONTROL_FIELDS)
"""Fields only the user changes (uploads, PATCH), never a turn: the stored row's values win over a turn's
copy of the memory when the turn is recorded."""


def uploaded_subject(
    existing: Subject | None, target: str, name: str, description: str, image_id: str, add: bool
) -> Subject:
    """The subject after an upload. Without `add` the image becomes its only reference (further ones are
    dropped); with `add` it joins the subject's references (the main one when it has none yet). The controls
    and history are kept; the anchor cache is dropped either way (the subject's look is another now)."""
    kept: dict[str, object] = {}
    if existing is not None:
        kept = {field: getattr(existing, field) for field in CONTROL_FIELDS}
    if not (add and existing is not None and existing.reference_image_id is not None):
        # a new main reference (as before these controls: source upload, no score, no anchor cache)
        return Subject(
            id=target,
            name=name,
            description=description or (existing.description if existing else ""),
            reference_image_id=image_id,
            reference_source=ReferenceSource.UPLOAD,
            reference_score=None,
            first_seen_turn=existing.first_seen_turn if existing else None,
            refreshed_turn=existing.refreshed_turn if existing else None,
            **kept,
        )
    more = [*existing.more_reference_image_ids, image_id]
    if len(more) > MAX_SUBJECT_REFERENCES - 1:
        raise RequestRejected(
            f"add: subject {target} already has {MAX_SUBJECT_REFERENCES} reference images (the most it may hold)"
        )
    return existing.model_copy(
        update={
            "name": name,
            "description": description or existing.description,
            "more_reference_image_ids": more,
            "anchor_cache_id": None,
        }
    )


def keep_user_fields(stored: Subject, turn_view: Subject) -> Subject:
    """The turn's view of a subject with the user-only fields taken from the stored row."""
    changes = {
        name: getattr(stored, name) for name in KEPT_FROM_STORE if getattr(stored, name) != getattr(turn_view, name)
    }
    return turn_view.model_copy(update=changes) if changes else turn_view
