"""Four-turn dialogues: subjects introduced, re-mentioned by pronoun, given a component and dropped."""

from __future__ import annotations

from pathlib import Path

from agents import build_engine
from studio.storage.images import FileImageStore
from tests.agents.conftest import llm_settings
from tests.agents.fakes import FakeDrawer, Session


def ids(subjects) -> list[str]:
    return [s.id for s in subjects]


def test_offline_dialogue_keeps_ids_and_memory(offline_engine) -> None:
    session = Session(offline_engine)

    first = session.turn("A girl and a boy walk in the park, the girl on the left.")
    assert first.plan.subject_ids == ["1", "2"]
    assert [(s.id, s.name) for s in first.subjects] == [("1", "girl"), ("2", "boy")]
    assert all(s.reference_image_id for s in first.subjects)
    girl, boy = first.plan.item("1").box, first.plan.item("2").box
    assert girl.x + girl.w / 2 < boy.x + boy.w / 2
    references = {s.id: s.reference_image_id for s in first.subjects}

    second = session.turn("She waves at him.")
    assert second.plan.subject_ids == ["1", "2"]
    assert ids(second.subjects) == ["1", "2"]
    assert {s.id: s.reference_image_id for s in second.subjects} == references, "first references are kept"
    assert second.plan.background == "the park", "the scene carries over"

    third = session.turn("The girl now wears a hat.")
    assert third.plan.subject_ids == ["1", "1-1"]
    hat = next(s for s in third.subjects if s.id == "1-1")
    assert hat.name == "hat" and hat.parent_id == "1" and hat.first_seen_turn == 2
    assert third.plan.item("1").box.contains_fraction(third.plan.item("1-1").box) > 0.99
    assert ids(third.subjects) == ["1", "1-1", "2"]

    fourth = session.turn("The boy leaves. The girl sits on the beach next to a small dog.")
    assert fourth.plan.subject_ids == ["1", "3"]
    assert fourth.info["analysis"]["leaving"] == ["2"]
    assert fourth.plan.background == "the beach"
    assert ids(fourth.subjects) == ["1", "1-1", "2", "3"], "a subject who left stays in memory"
    assert next(s for s in fourth.subjects if s.id == "2").reference_image_id == references["2"]
    assert next(s for s in fourth.subjects if s.id == "3").description == "a small dog"
    assert [fourth.info["memory_changes"][k] for k in ("new", "leaving")] == [["3"], ["2"]]


def mention(sid: str, status: str, name: str, description: str, action: str = "", parent: str | None = None) -> dict:
    return {
        "id": sid,
        "status": status,
        "name": name,
        "description": description,
        "parent_id": parent,
        "action": action,
    }


def analysis(subjects: list[dict], **extra: object) -> dict:
    base = {
        "caption": "",
        "subjects": subjects,
        "updates": [],
        "leaving": [],
        "background": None,
        "background_only": False,
        "relations": [],
    }
    return {**base, **extra}


def test_llm_dialogue_keeps_ids_and_memory(tmp_path: Path, fake_llm) -> None:
    fake, url = fake_llm
    engine = build_engine(llm_settings(tmp_path, url), FakeDrawer(), FileImageStore(tmp_path / "images"))
    session = Session(engine)
    girl = mention("1", "known", "girl", "a girl with a red scarf")
    fake.push(
        "subject_manager",
        analysis(
            [
                mention("1", "new", "girl", "a girl with a red scarf", "walking"),
                mention("2", "new", "dog", "a small dog"),
            ],
            background="a park",
            relations=[{"subject_id": "2", "relation": "right_of", "other_id": "1"}],
        ),
        analysis([{**girl, "action": "laughing"}, mention("2", "known", "dog", "a small dog", "jumping at her")]),
        analysis(
            [girl, mention("1-1", "new", "hat", "a straw hat", parent="1")],
            updates=[{"id": "1", "description": "a girl with short hair and a red scarf", "change": "short hair"}],
        ),
        analysis([mention("1", "known", "girl", "a girl with short hair and a red scarf", "reading")], leaving=["2"]),
    )
    session.turn("A girl with a red scarf walks her small dog in the park, the dog on the right.")
    assert ids(session.subjects) == ["1", "2"]
    session.turn("She laughs while it jumps at her.")
    assert ids(session.subjects) == ["1", "2"]
    third = session.turn("She now has short hair and wears a straw hat.")
    assert ids(session.subjects) == ["1", "1-1", "2"]
    assert session.subjects[0].description == "a girl with short hair and a red scarf"
    assert third.info["memory_changes"]["updated_descriptions"] == ["1"]
    fourth = session.turn("The dog is gone; she reads alone.")
    assert fourth.plan.subject_ids == ["1"]
    assert ids(session.subjects) == ["1", "1-1", "2"]
    payload = fake.requests[-3]["body"]["messages"][-1]["content"]
    assert '"next_free_id": "3"' in payload and "short hair" in payload
    assert fake.count("subject_manager") == 4


def test_concurrent_sessions_share_one_engine(offline_engine) -> None:
    import threading

    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def converse(n: int) -> None:
        try:
            session = Session(offline_engine, height=256, width=256)
            for message in (
                "A girl and a boy walk.",
                "She waves at him.",
                "The girl now wears a hat.",
                "The boy leaves.",
            ):
                session.turn(message)
            results[n] = ids(session.subjects)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=converse, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and all(v == ["1", "1-1", "2"] for v in results.values()) and len(results) == 4


def test_offline_dialogue_puts_a_subject_above_a_pronoun_object(offline_engine) -> None:
    """'Above her it flutters.': the sparrow (it) goes above the girl (her) — the relation was lost before."""
    session = Session(offline_engine)
    first = session.turn("A girl and a tiny sparrow play in the garden.")
    assert first.plan.subject_ids == ["1", "2"]

    second = session.turn("Above her it flutters.")
    assert second.info["analysis"]["relations"] == [{"subject_id": "2", "relation": "above", "other_id": "1"}]
    girl, sparrow = second.plan.item("1").box, second.plan.item("2").box
    assert sparrow.y + sparrow.h <= girl.y, "the sparrow's box is wholly above the girl's"


def test_appended_lists_grow_within_a_turn_and_start_afresh_with_the_next(tmp_path: Path, fake_llm) -> None:
    """calls, reviews and messages have reducers: nodes append to them within a turn, and a new turn's input
    replaces them (the session's messages are rebuilt from the history, not appended twice)."""
    fake, url = fake_llm
    fake.push("supervisor", {"approve": False, "feedback": "move subject 1 further left"})
    engine = build_engine(llm_settings(tmp_path, url), FakeDrawer(), FileImageStore(tmp_path / "images"))
    session = Session(engine)

    first = session.turn("A girl reads a book.")
    assert [call["agent"] for call in first.info["calls"]] == [
        "subject_manager",
        "layout_generator",
        "supervisor",
        "layout_generator",
        "supervisor",
    ]
    assert [(r["round"], r["approve"]) for r in first.info["reviews"]] == [(0, False), (1, True)]

    second = session.turn("She smiles.")
    assert [call["agent"] for call in second.info["calls"]] == ["subject_manager", "layout_generator", "supervisor"]
    assert [(r["round"], r["approve"]) for r in second.info["reviews"]] == [(0, True)]
    messages = engine.state(session.session_id)["messages"]
    # a new turn's messages are rebuilt from the history (its user messages), then this turn's reply is appended
    assert [(m["role"], m["turn_index"]) for m in messages] == [("user", 0), ("user", 1), ("assistant", 1)]
    engine.close()


def test_offline_story_keeps_two_cats_apart_and_changes_the_season(offline_engine) -> None:
    """Through the graph: 'a black one and a white one' become two described cats, 'the white cat' picks the
    white one and the table it jumps onto stays scenery, 'make it winter' changes the background of the park,
    and 'from the left side' places the girl who watches, not the cat (before: two plain 'a cat', the black one
    picked, a table subject, the park kept, the cat sent left)."""
    session = Session(offline_engine, height=256, width=384)
    first = session.turn("Two cats play in the park, a black one and a white one.")
    assert [(s.id, s.description) for s in first.subjects] == [("1", "a black cat"), ("2", "a white cat")]

    second = session.turn("The white cat jumps onto the table.")
    assert second.plan.subject_ids == ["2"]
    assert ids(second.subjects) == ["1", "2"], "no table in memory"

    third = session.turn("Now make it winter with snow falling.")
    assert third.plan.subject_ids == ["2"]
    assert third.plan.background == "the park, winter with snow falling"

    fourth = session.turn("A girl watches them from the left side.")
    assert sorted(fourth.plan.subject_ids) == ["2", "3"]
    assert fourth.info["analysis"]["relations"] == [{"subject_id": "3", "relation": "left", "other_id": None}]
    girl, cat = fourth.plan.item("3").box, fourth.plan.item("2").box
    assert girl.x + girl.w / 2 < cat.x + cat.w / 2
