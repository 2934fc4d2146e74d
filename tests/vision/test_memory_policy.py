"""studio.memory.update_memory with crops as the locator makes them: first appearance kept by default,
refresh on a better score when asked, uploads never replaced, misses never stored."""

from __future__ import annotations

from studio.draw import SubjectCrop
from studio.geometry import Box
from studio.memory import update_memory
from studio.plan import PlanItem, TurnPlan
from studio.storage.images import MemoryImageStore
from studio.subjects import ReferenceSource, Subject

PLAN = TurnPlan(items=[PlanItem(subject_id="1", phrase="girl, smiling", box=Box(x=0, y=0, w=200, h=300))])


def crop(score: float, payload: bytes, found: bool = True) -> dict[str, SubjectCrop]:
    if not found:
        return {"1": SubjectCrop(subject_id="1", found=False, reason="no 'girl' detected")}
    return {"1": SubjectCrop(subject_id="1", found=True, score=score, box=Box(x=0, y=0, w=10, h=10), crop=payload)}


def test_first_appearance_is_kept_by_default() -> None:
    store = MemoryImageStore()
    memory = update_memory([], PLAN, crop(0.4, b"first"), 0, store)
    first = memory[0].reference_image_id
    assert store.get(first) == b"first"
    assert memory[0].first_seen_turn == 0 and memory[0].reference_source == ReferenceSource.FINAL
    memory = update_memory(memory, PLAN, crop(0.9, b"second"), 1, store)
    assert memory[0].reference_image_id == first
    assert memory[0].refreshed_turn == 0


def test_refresh_better_replaces_only_on_a_higher_score() -> None:
    store = MemoryImageStore()
    memory = update_memory([], PLAN, crop(0.5, b"first"), 0, store, refresh="better")
    memory = update_memory(memory, PLAN, crop(0.3, b"worse"), 1, store, refresh="better")
    assert store.get(memory[0].reference_image_id) == b"first"
    memory = update_memory(memory, PLAN, crop(0.8, b"better"), 2, store, refresh="better")
    assert store.get(memory[0].reference_image_id) == b"better"
    assert memory[0].reference_score == 0.8 and memory[0].refreshed_turn == 2
    assert memory[0].first_seen_turn == 0


def test_upload_is_never_overwritten() -> None:
    store = MemoryImageStore()
    upload = store.put(b"uploaded")
    subject = Subject(id="1", name="girl", reference_image_id=upload, reference_source=ReferenceSource.UPLOAD)
    for refresh in ("first", "better"):
        memory = update_memory([subject], PLAN, crop(0.99, b"detected"), 3, store, refresh=refresh)
        assert memory[0].reference_image_id == upload
        assert memory[0].reference_source == ReferenceSource.UPLOAD


def test_a_missing_subject_gets_no_reference_but_is_marked_seen() -> None:
    store = MemoryImageStore()
    memory = update_memory([], PLAN, crop(0.0, b"", found=False), 0, store)
    assert memory[0].reference_image_id is None
    assert memory[0].first_seen_turn == 0
    memory = update_memory(memory, PLAN, crop(0.6, b"later"), 1, store)
    assert store.get(memory[0].reference_image_id) == b"later"
