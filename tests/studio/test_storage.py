"""The SQL storage on embedded SQLite and on the real local PostgreSQL (the scale-out database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.draw import DrawSettings
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.storage.database import Database
from studio.storage.images import FileImageStore, ImageNotFound
from studio.subjects import Subject
from studio.turns import CropView, TurnEvent, TurnRequest, TurnStatus


def test_keys_are_stored_hashed_and_revocable(db: Database) -> None:
    key = db.create_key("alice", "laptop")
    assert db.tenant_for_key(key) == "alice" and db.tenant_for_key(key + "x") is None
    (row,) = db.list_keys()
    assert "key_hash" not in row and key not in str(row)
    assert db.revoke_key(row["id"]) and db.tenant_for_key(key) is None


def test_turns_sessions_subjects_events(db: Database) -> None:
    session = db.create_session("alice", "t", 512, 768, DrawSettings(steps=5))
    assert db.get_session(session.id, tenant="bob") is None
    assert db.get_session(session.id, tenant="alice").settings.steps == 5
    first, created = db.create_turn(session.id, TurnRequest(message="hi"), "key-1")
    again, created_again = db.create_turn(session.id, TurnRequest(message="hi"), "key-1")
    second, _ = db.create_turn(session.id, TurnRequest(message="two"), None)
    assert created and not created_again and again.id == first.id and (first.index, second.index) == (1, 2)
    assert [t.index for t in db.list_turns(session.id) if not t.status.finished] == [1, 2]
    plan = TurnPlan(items=[PlanItem(subject_id="1", phrase="a girl", box=Box(x=1, y=2, w=30, h=40))])
    memory = [Subject(id="1", name="girl", reference_image_id="a" * 64, first_seen_turn=1)]
    db.finish_turn(
        first,
        "alice",
        plan,
        "b" * 64,
        None,
        [CropView(subject_id="1", found=True)],
        {"denoise": 1.0},
        {"llm_calls": 3},
        memory,
        {"b" * 64: "final", "a" * 64: "reference"},
    )
    done = db.get_turn(session.id, 1)
    assert done.status == TurnStatus.DONE and done.plan == plan and done.info == {"llm_calls": 3}
    assert db.list_subjects(session.id) == memory
    assert db.image_visible_to("a" * 64, "alice") and not db.image_visible_to("a" * 64, "bob")
    assert [t.index for t in db.list_turns(session.id) if not t.status.finished] == [2]
    seqs = [db.append_event(session.id, TurnEvent(type="queued", turn_id=first.id)).seq for _ in range(3)]
    assert seqs == [1, 2, 3] and [e.seq for e in db.events_after(session.id, 1)] == [2, 3]
    assert db.list_sessions("alice")[0].turn_count == 2
    db.delete_session(session.id)
    assert db.get_session(session.id) is None and db.list_turns(session.id) == []
    assert not db.image_visible_to("a" * 64, "alice")


def test_image_store_is_atomic_and_content_addressed(tmp_path: Path) -> None:
    store = FileImageStore(tmp_path)
    image_id = store.put(b"png bytes")
    assert store.put(b"png bytes") == image_id and store.get(image_id) == b"png bytes"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{image_id}.png"]  # no temporary left
    with pytest.raises(ImageNotFound):
        store.get("../../etc/passwd")
    with pytest.raises(ImageNotFound):
        store.get("0" * 64)
