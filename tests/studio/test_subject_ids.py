"""studio.subjects, the one home of the subject-id rules every caller uses."""

from __future__ import annotations

from studio.subjects import family_of, id_key, is_component, next_component_id, next_mother_id, parent_of


def test_component_rules() -> None:
    assert [is_component(sid) for sid in ("1", "12", "1-2", "12-3")] == [False, False, True, True]
    assert [parent_of(sid) for sid in ("3", "3-1")] == [None, "3"]
    assert [family_of(sid) for sid in ("3", "3-1", "31-1")] == ["3", "3", "31"]


def test_ids_order_and_allocation() -> None:
    assert sorted(["10", "2-1", "2", "1-10", "1-2"], key=id_key) == ["1-2", "1-10", "2", "2-1", "10"]
    assert next_mother_id({"1", "2", "2-1", "2-7"}) == "3"
    assert next_component_id("2", {"1", "2", "2-1", "2-7"}) == "2-8"
