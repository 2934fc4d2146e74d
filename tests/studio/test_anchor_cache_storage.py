"""Anchor-cache rows in the SQL storage (SQLite and PostgreSQL): a branch shares the cache, an upload made while a
turn ran drops the turn's cache, pruning keeps one per subject, and a cache is never visible as an image."""

from __future__ import annotations

from studio.draw import DrawSettings
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.storage.database import ANCHOR_CACHE, Database
from studio.subjects import ReferenceSource, Subject
from studio.turns import CropView, Turn, TurnRequest

PLAN = TurnPlan(items=[PlanItem(subject_id="1", phrase="a girl", box=Box(x=1, y=2, w=30, h=40))])
REF, CACHE, NEWER, FINAL, UPLOAD = ("a" * 64, "c" * 64, "d" * 64, "b" * 64, "e" * 64)


def finish(db: Database, turn: Turn, cache: str) -> None:
    memory = [Subject(id="1", name="girl", reference_image_id=REF, anchor_cache_id=cache, first_seen_turn=1)]
    images = {FINAL: "final", REF: "reference", cache: ANCHOR_CACHE}
    assert db.finish_turn(turn, "alice", PLAN, FINAL, None, [CropView(subject_id="1", found=True)], {}, {}, memory,
                          images)


def test_a_branch_shares_the_cache_and_pruning_keeps_one_per_subject(db: Database) -> None:
    session = db.create_session("alice", "t", 512, 512, DrawSettings())
    first, _ = db.create_turn(session.id, TurnRequest(message="one"), None)
    finish(db, first, CACHE)
    assert not db.image_visible_to(CACHE, "alice") and db.image_visible_to(FINAL, "alice")
    child = db.branch_session(session.id, 1)
    assert [s.anchor_cache_id for s in db.list_subjects(child.id)] == [CACHE]

    second, _ = db.create_turn(session.id, TurnRequest(message="two"), None)
    finish(db, second, NEWER)  # a better-seen cache replaced the first
    assert db.prune_anchor_caches(session.id) == []  # the branch still holds the first: its file stays
    assert db.delete_session(child.id) == [CACHE]  # now nothing holds it
    assert db.prune_anchor_caches(session.id) == [] and NEWER in db.delete_session(session.id)


def test_an_upload_made_while_a_turn_ran_drops_the_turns_cache(db: Database) -> None:
    session = db.create_session("alice", "t", 512, 512, DrawSettings())
    turn, _ = db.create_turn(session.id, TurnRequest(message="one"), None)
    uploaded = Subject(id="1", name="girl", reference_image_id=UPLOAD, reference_source=ReferenceSource.UPLOAD)
    assert db.put_subject(session.id, "alice", uploaded, UPLOAD)  # meanwhile, in another request
    finish(db, turn, CACHE)  # the turn drew with no reference and recorded a cache
    [subject] = db.list_subjects(session.id)
    assert (subject.reference_image_id, subject.anchor_cache_id) == (UPLOAD, None)
    assert db.prune_anchor_caches(session.id) == [CACHE]
