"""Subject-analysis validation, the offline reading of messages, the deterministic layout checks and the
supervisor's verdict."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agents.analysis import check_analysis, memory_before_draw
from agents.checks import check_layout
from agents.offline import analyze_message
from agents.planner import LayoutDraft, ReviewRequest, SubjectRequest
from agents.prompts import PromptError, load_prompt
from agents.schemas import Relation, Review, SubjectAnalysis, SubjectMention
from agents.supervisor import BestDraft, SemanticReview, Verdict, supervise
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.subjects import Subject

MEMORY = [
    Subject(id="1", name="girl", description="a girl with a red scarf"),
    Subject(id="2", name="boy", description="a boy"),
    Subject(id="3", name="sparrow", description="a tiny sparrow"),
]


def read(message: str, memory: list[Subject] = MEMORY, previous: list[str] | None = None) -> SubjectAnalysis:
    request = SubjectRequest(message=message, turn_index=3, memory=memory, previous_ids=previous or [])
    analysis = analyze_message(request)
    check_analysis(analysis, memory)
    return analysis


def shown(analysis: SubjectAnalysis) -> list[str]:
    return [m.id for m in analysis.subjects]


def mention(sid: str, status: str = "known", parent: str | None = None) -> SubjectMention:
    return SubjectMention(id=sid, status=status, name="x", description="x", parent_id=parent, action="")  # type: ignore[arg-type]


def analysis_of(*mentions: SubjectMention, **extra: object) -> SubjectAnalysis:
    fields: dict = {"caption": "", "updates": [], "leaving": [], "background": None, "background_only": False}
    return SubjectAnalysis(subjects=list(mentions), relations=[], **{**fields, **extra})


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("She smiles.", ["1"]),
        ("He runs after the bird.", ["2", "3"]),
        ("The girl and the boy dance; it sings.", ["1", "2", "3"]),
        ("Another girl arrives.", ["4"]),
        ("Three cats sleep.", ["4", "5", "6"]),
        ("A girl waves.", ["1"]),
    ],
)
def test_mentions_resolve_to_memory(message: str, expected: list[str]) -> None:
    assert shown(read(message)) == expected


def test_departure_background_only_and_continuity() -> None:
    left = read("The boy leaves, the girl stays.", previous=["1", "2"])
    assert shown(left) == ["1"] and left.leaving == ["2"]
    without = read("The girl plays without the bird.", previous=["1", "3"])
    assert without.leaving == ["3"] and shown(without) == ["1"]
    scene = read("The background changes to a snowy mountain.", previous=["1", "2"])
    assert scene.background_only and shown(scene) == ["1", "2"] and scene.background == "a snowy mountain"
    nothing = read("Night falls slowly.", previous=["2"])
    assert shown(nothing) == ["2"]


def test_component_and_attribute_update() -> None:
    worn = read("The girl now wears a hat.")
    assert shown(worn) == ["1", "1-1"] and worn.subjects[1].parent_id == "1"
    memory = memory_before_draw(MEMORY, worn, 3)
    again = read("She takes another hat.", memory=memory)
    assert "1-2" in shown(again)
    hair = read("The boy now has short blue hair.")
    assert hair.updates[0].id == "2" and hair.updates[0].description == "a boy with short blue hair"
    assert memory_before_draw(MEMORY, hair, 3)[1].description == "a boy with short blue hair"


def test_spatial_words_become_relations() -> None:
    analysis = read("The girl stands to the left of the boy, the sparrow above them.")
    kinds = {(r.subject_id, r.relation, r.other_id) for r in analysis.relations}
    assert ("1", "left_of", "2") in kinds


def test_validation_names_every_inconsistency() -> None:
    with pytest.raises(ValueError, match="next free id '4', got '6'"):
        check_analysis(analysis_of(mention("6", "new")), MEMORY)
    with pytest.raises(ValueError, match="marked known but is not in memory"):
        check_analysis(analysis_of(mention("9")), MEMORY)
    with pytest.raises(ValueError, match="needs its mother '2'"):
        check_analysis(analysis_of(mention("2-1", "new", parent="2")), MEMORY)
    with pytest.raises(ValueError, match="must have parent_id '1'"):
        check_analysis(analysis_of(mention("1"), mention("1-1", "new")), MEMORY)
    with pytest.raises(ValueError, match="cannot both leave and be shown"):
        check_analysis(analysis_of(mention("1"), leaving=["1"]), MEMORY)
    check_analysis(analysis_of(mention("1"), mention("1-1", "new", parent="1"), mention("4", "new")), MEMORY)


def test_layout_checks() -> None:
    analysis = analysis_of(mention("1"), mention("3"))
    analysis.relations = [Relation(subject_id="1", relation="left_of", other_id="3")]
    analysis.subjects[0].name, analysis.subjects[1].name = "girl", "sparrow"

    def draft(*items: tuple[str, float, float, float, float], clipped: list[str] | None = None) -> LayoutDraft:
        plan_items = [PlanItem(subject_id=s, phrase=s, box=Box(x=x, y=y, w=w, h=h)) for s, x, y, w, h in items]
        return LayoutDraft(plan=TurnPlan(height=768, width=1024, items=plan_items), clipped=clipped or [])

    assert check_layout(draft(("1", 100, 100, 250, 600), ("3", 600, 400, 120, 100)), analysis) == []
    issues = check_layout(draft(("1", 600, 100, 250, 600), ("3", 100, 100, 400, 650), clipped=["3"]), analysis)
    text = " | ".join(issues)
    assert "must be left of subject 3" in text
    assert "outside" in text
    assert "subject 3 (sparrow) is drawn larger than subject 1 (girl)" in text
    assert "missing boxes for ['3']" in check_layout(draft(("1", 100, 100, 250, 600)), analysis)[0]
    drift = check_layout(
        draft(("1", 100, 100, 250, 600), ("3", 600, 400, 120, 100)), analysis, {"1": Box(x=0, y=0, w=50, h=60)}
    )
    assert any("changed size too much" in issue for issue in drift)


def test_prompts_load_with_versions(tmp_path) -> None:
    for name in ("subject_manager", "layout_generator", "supervisor"):
        prompt = load_prompt(name)
        assert prompt.version.startswith("1+") and prompt.examples
        messages = prompt.messages({"message": "hi"})
        assert messages[0]["role"] == "system" and messages[-1]["content"] == '{"message": "hi"}'
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "system.md").write_text("no version line\n")
    with pytest.raises(PromptError, match="version"):
        load_prompt("broken", tmp_path)


def test_subject_limit_is_enforced() -> None:
    many = [mention(str(n), "new") for n in range(4, 13)]
    with pytest.raises(ValueError, match="at most 8 can be drawn"):
        check_analysis(analysis_of(*many), MEMORY, max_subjects=8)
    crowd = read("Nine cats: a cat, a dog, a fox, an owl, a frog, a duck, a bear, a pig and a cow.", memory=[])
    assert len(crowd.subjects) == 8


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Under it she sleeps.", ("1", "below", "3")),
        ("Above her he juggles.", ("2", "above", "1")),
    ],
)
def test_a_pronoun_object_put_first_relates_the_subject_right_after_it(
    message: str, expected: tuple[str, str, str]
) -> None:
    """'Under it she sleeps': the object is the pronoun, the subject follows it at once (a noun object is
    not followed at once by its subject: that is a compound such as 'the baby elephant')."""
    analysis = read(message, previous=["1", "3"])
    assert {(r.subject_id, r.relation, r.other_id) for r in analysis.relations} == {expected}


def test_supervise_approves_revises_and_at_the_bound_draws_the_best() -> None:
    analysis = analysis_of(mention("1"), mention("3"))
    analysis.relations = [Relation(subject_id="1", relation="left_of", other_id="3")]
    analysis.subjects[0].name, analysis.subjects[1].name = "girl", "sparrow"

    def layout(girl_x: float) -> LayoutDraft:
        items = [
            PlanItem(subject_id="1", phrase="girl", box=Box(x=girl_x, y=100, w=250, h=600)),
            PlanItem(subject_id="3", phrase="sparrow", box=Box(x=500, y=400, w=120, h=100)),
        ]
        return LayoutDraft(plan=TurnPlan(height=768, width=1024, items=items))

    good, wrong_side = layout(100), layout(700)
    asked: list[int] = []

    def semantic(answer: bool) -> SemanticReview:
        def review(request: ReviewRequest) -> tuple[Review, list[dict]]:
            asked.append(request.round)
            return Review(approve=answer, feedback="" if answer else "more air", source="llm"), [{"agent": "x"}]

        return review

    def judge(draft: LayoutDraft, round_: int, best: BestDraft | None, answer: bool = True) -> Verdict:
        request = ReviewRequest(analysis=analysis, draft=draft, memory=MEMORY, round=round_)
        return supervise(semantic(answer), request, {}, best, max_revisions=2)

    approved = judge(good, 0, None)
    assert (approved.decision, approved.plan, approved.calls, asked) == ("approve", good.plan, [{"agent": "x"}], [0])

    checked = judge(wrong_side, 0, None)
    assert checked.decision == "revise" and checked.plan is None and checked.calls == [] and asked == [0]
    assert checked.review.source == "checks" and "must be left of subject 3" in checked.review.feedback
    assert (checked.best.score, checked.best.round) == (2, 0)

    rejected = judge(good, 1, checked.best, answer=False)
    assert rejected.decision == "revise" and (rejected.best.score, rejected.best.round) == (1, 1)

    bound = judge(wrong_side, 2, rejected.best)
    assert bound.decision == "bound" and bound.plan == good.plan and bound.best.round == 1
    assert bound.record() == {"round": 2, **bound.review.model_dump(mode="json")}


def test_the_graph_and_the_offline_planner_load_without_the_openai_client() -> None:
    code = "import sys, agents, agents.offline, agents.graph; print('openai' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Two baby pandas play.", ["a baby panda", "a baby panda"]),
        ("A mother duck swims.", ["a mother duck"]),
        ("The knight shields the princess.", ["a knight", "a princess"]),
        ("A boy and his grandfather fish at the lake.", ["a boy", "a grandfather"]),
        ("The lion watches the bird.", ["a lion", "a bird"]),
    ],
)
def test_a_noun_right_after_a_noun_is_a_compound_or_a_verb(message: str, expected: list[str]) -> None:
    """'a baby panda' is one subject described by the first noun; 'shields', 'watches', and 'fish' after a
    pair of subjects are verbs."""
    assert [s.description for s in read(message, memory=[]).subjects] == expected
