"""The subject-memory policy: which crops become references after a turn. Pure logic, no I/O beyond
the image store it is handed."""

from __future__ import annotations

from typing import Literal

from studio.draw import SubjectCrop
from studio.plan import TurnPlan
from studio.protocols import ImageStore
from studio.subjects import ReferenceSource, Subject, id_key


def update_memory(
    subjects: list[Subject],
    plan: TurnPlan,
    crops: dict[str, SubjectCrop],
    turn_index: int,
    images: ImageStore,
    refresh: Literal["first", "better"] = "first",
    source: ReferenceSource = ReferenceSource.FINAL,
    anchor_caches: dict[str, bytes] | None = None,
) -> list[Subject]:
    """Return the memory after a turn.

    - a planned subject found with a crop and no reference gets the crop as its reference;
    - with `refresh="better"`, a found subject whose new detection score beats the stored one gets it;
    - a user-uploaded reference is never replaced;
    - every planned subject is marked seen (first_seen_turn kept, refreshed_turn updated on a new crop);
    - ConsiStory anchor caches: a cache the drawer returned (it beat the subject's, `anchor_caches`) is stored and
      becomes the subject's; a new reference drops the old cache (a cache recorded in the same turn as the
      new reference's crop goes with it and is kept).
    """
    by_id = {subject.id: subject for subject in subjects}
    for item in plan.items:
        current = by_id.get(item.subject_id)
        if current is None:
            current = Subject(id=item.subject_id, name=item.detection_name, description=item.phrase)
        if current.first_seen_turn is None:
            current = current.model_copy(update={"first_seen_turn": turn_index})
        crop = crops.get(item.subject_id)
        if crop is not None and crop.found and crop.crop is not None and _should_replace(current, crop, refresh):
            image_id = images.put(crop.crop)
            current = current.model_copy(
                update={
                    "reference_image_id": image_id,
                    "reference_source": source,
                    "reference_score": crop.score,
                    "refreshed_turn": turn_index,
                    "anchor_cache_id": None,
                }
            )
        cache = (anchor_caches or {}).get(item.subject_id)
        if cache is not None:
            current = current.model_copy(update={"anchor_cache_id": images.put(cache)})
        by_id[current.id] = current
    return sorted(by_id.values(), key=lambda s: id_key(s.id))


def _should_replace(current: Subject, crop: SubjectCrop, refresh: str) -> bool:
    if current.reference_image_id is None:
        return True
    if current.reference_source == ReferenceSource.UPLOAD:
        return False
    if refresh == "better":
        return crop.score > (current.reference_score or 0.0)
    return False
