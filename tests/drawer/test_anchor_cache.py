"""The ConsiStory anchor cache as the subject memory carries it: a job's caches are the only ones a render
attends to, the recorded ones that beat them come back as blobs, the size bound trims or refuses them, and the
blobs survive JSON (the Celery job and outcome)."""

from __future__ import annotations

import pytest
import torch

import drawer.mechanisms as mechanisms
import studio.draw as draw_module
from drawer import Drawer
from drawer.mechanisms.anchor_cache import AnchorCache, caches_to_return
from drawer.mechanisms.shared_attention import KWARG, SharedAttentionContext
from studio.draw import DrawJob, DrawResult, SharedAttentionSettings
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from tests.drawer.conftest import fast_settings

H, W = 64, 96


def _plan(subjects: list[str]) -> TurnPlan:
    items = {
        "1": PlanItem(subject_id="1", phrase="a girl with a red scarf", box=Box(x=0, y=8, w=40, h=48)),
        "2": PlanItem(subject_id="2", phrase="a brown dog", box=Box(x=56, y=16, w=32, h=40)),
    }
    return TurnPlan(height=H, width=W, background="a park", items=[items[s] for s in subjects])


@pytest.fixture
def contexts(monkeypatch: pytest.MonkeyPatch) -> list[SharedAttentionContext]:
    """The shared-attention context of every render, as the processors see it."""
    seen: list[SharedAttentionContext] = []
    original = mechanisms.ATTENTION_INSTALLERS["shared_attention"]

    def capture(pipe, batch, stack):  # type: ignore[no-untyped-def]
        original(pipe, batch, stack)
        seen.append(stack.kwargs[KWARG])

    monkeypatch.setitem(mechanisms.ATTENTION_INSTALLERS, "shared_attention", capture)
    return seen


def _same(a: AnchorCache, b: AnchorCache) -> bool:
    return a.patches.keys() == b.patches.keys() and all(torch.equal(a.patches[k], b.patches[k]) for k in a.patches)


SETTINGS = fast_settings(mechanisms=["regional", "shared_attention"])


def test_a_job_carrying_caches_attends_to_those_and_returns_what_it_recorded(
    tiny_drawer: Drawer, contexts: list[SharedAttentionContext]
) -> None:
    tiny_drawer.anchors.caches.clear()
    first = tiny_drawer.draw(DrawJob(plan=_plan(["1", "2"]), settings=SETTINGS, anchor_caches={}))
    assert set(first.anchor_caches) == {"1", "2"} and not tiny_drawer.anchors.caches  # the caller keeps them
    recorded = AnchorCache.from_bytes(first.anchor_caches["1"])
    assert _same(recorded, contexts[0].recorded["1"])

    third = tiny_drawer.draw(
        DrawJob(plan=_plan(["1"]), settings=SETTINGS, anchor_caches={"1": first.anchor_caches["1"]})
    )
    [(cache, image, box)] = contexts[1].setup.cached
    assert _same(cache, recorded) and image == 0 and box == _plan(["1"]).items[0].box
    assert contexts[1].cache_reads > 0
    assert set(third.anchor_caches) == {"1"}  # the same box: seen as well as before, the newer one is returned
    plain = tiny_drawer.draw(DrawJob(plan=_plan(["1"]), settings=SETTINGS, anchor_caches={}))
    assert contexts[2].cache_reads == 0 and plain.image != third.image


def test_a_job_with_caches_never_reads_the_drawers_own_store(
    tiny_drawer: Drawer, contexts: list[SharedAttentionContext]
) -> None:
    """Another session's subject "1" in the drawer's memory must not reach this session's subject "1"."""
    tiny_drawer.anchors.caches.clear()
    tiny_drawer.draw(DrawJob(plan=_plan(["1"]), settings=SETTINGS))  # no subject memory: the drawer keeps it
    assert "1" in tiny_drawer.anchors.caches
    tiny_drawer.draw(DrawJob(plan=_plan(["1"]), settings=SETTINGS, anchor_caches={}))
    assert contexts[1].setup.cached == [] and contexts[1].cache_reads == 0
    tiny_drawer.anchors.caches.clear()


def test_the_size_bound_trims_the_returned_cache_and_zero_records_none(
    tiny_drawer: Drawer, contexts: list[SharedAttentionContext]
) -> None:
    full = tiny_drawer.draw(DrawJob(plan=_plan(["1"]), settings=SETTINGS, anchor_caches={}))
    whole = AnchorCache.from_bytes(full.anchor_caches["1"])
    steps = whole.recorded_steps()
    assert len(steps) >= 2
    bound = SharedAttentionSettings(anchor_cache_mib=whole.nbytes / 2 / 2**20)
    trimmed = tiny_drawer.draw(
        DrawJob(plan=_plan(["1"]), settings=SETTINGS.model_copy(update={"shared_attention": bound}), anchor_caches={})
    )
    kept = AnchorCache.from_bytes(trimmed.anchor_caches["1"])
    assert kept.recorded_steps() == steps and 0 < kept.nbytes <= whole.nbytes / 2  # few steps: patches thinned
    none = SharedAttentionSettings(anchor_cache_mib=0)
    nothing = tiny_drawer.draw(
        DrawJob(plan=_plan(["1"]), settings=SETTINGS.model_copy(update={"shared_attention": none}), anchor_caches={})
    )
    assert nothing.anchor_caches == {} and contexts[-1].setup.record == {}


def test_trimming_keeps_evenly_spaced_steps_then_thins_patches_and_reads_the_nearest_step() -> None:
    patches = {(step, "up"): torch.full((2, 4, 8), float(step)) for step in range(1, 11)}
    cache = AnchorCache("1", "", 11, 0.3, patches)
    per_step = 2 * 4 * 8 * 4
    assert cache.trimmed(10 * per_step) is cache
    kept = cache.trimmed(5 * per_step - 1)
    assert kept is not None and kept.recorded_steps() == [1, 4, 7, 10] and kept.nbytes == 4 * per_step
    assert float(kept.at(5, 11, "up")[0, 0, 0]) == 4.0 and float(kept.at(6, 11, "up")[0, 0, 0]) == 7.0
    assert float(kept.at(10, 11, "up")[0, 0, 0]) == 10.0 and kept.at(5, 11, "other") is None
    thinned = cache.trimmed(2 * per_step)  # four steps at least: every second patch of each
    assert thinned is not None and thinned.recorded_steps() == [1, 4, 7, 10]
    assert thinned.patches[(4, "up")].shape == (2, 2, 8) and thinned.nbytes == 2 * per_step
    assert cache.trimmed(per_step // 8) is None  # not even one patch per layer fits: refused


def test_only_a_better_seen_cache_is_returned() -> None:
    patches = {(1, "up"): torch.zeros(2, 3, 4)}
    given = {"1": AnchorCache("1", "", 4, 0.5, patches)}
    assert caches_to_return({"1": AnchorCache("1", "", 4, 0.4, patches)}, given, 2**20) == {}
    assert set(caches_to_return({"1": AnchorCache("1", "", 4, 0.5, patches)}, given, 2**20)) == {"1"}
    assert caches_to_return({"1": AnchorCache("1", "", 4, 0.9, {})}, given, 2**20) == {}  # recorded nothing
    assert set(caches_to_return({"2": AnchorCache("2", "", 4, 0.1, patches)}, given, 2**20)) == {"2"}


def test_anchor_cache_blobs_survive_json_and_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = AnchorCache("1", "", 4, 0.5, {(1, "up"): torch.randn(2, 3, 4)}).to_bytes()
    job = DrawJob(plan=_plan(["1"]), settings=SETTINGS, anchor_caches={"1": blob})
    assert DrawJob.model_validate_json(job.model_dump_json()).anchor_caches == {"1": blob}
    result = DrawResult(image=b"x", width=1, height=1, seed=0, anchor_caches={"1": blob})
    assert DrawResult.model_validate_json(result.model_dump_json()).anchor_caches == {"1": blob}
    with pytest.raises(ValueError, match="anchor_caches given for subjects not in the plan"):
        DrawJob(plan=_plan(["1"]), settings=SETTINGS, anchor_caches={"2": blob})
    monkeypatch.setattr(draw_module, "MAX_ANCHOR_CACHE_BLOB", len(blob) - 1)
    with pytest.raises(ValueError, match=r"anchor_caches\['1'\]"):
        DrawJob(plan=_plan(["1"]), settings=SETTINGS, anchor_caches={"1": blob})
    with pytest.raises(ValueError, match=r"anchor_caches\['1'\]"):
        DrawResult(image=b"x", width=1, height=1, seed=0, anchor_caches={"1": blob})
