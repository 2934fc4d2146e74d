"""Live canvas, region weights (docs/fast_mode.md): each plan item's canvas weights and per-level coverage come
from the drawer's cache, keyed by what determines them, so an edit that moves one box recomputes that item only."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from drawer import Drawer, layout_masks, region_masks
from drawer.layout_masks import attention_grids, layout_weights
from drawer.live_canvas import EncodingCache, layout_coverages, region_key
from drawer.mechanisms import regional
from drawer.parallel_attention import RegionalContext
from studio.draw import DrawJob, DrawSettings
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.regions import RegionMask
from tests.drawer.conftest import png, two_subject_plan

SETTINGS: dict[str, object] = {"seed": 3, "mode": "fast", "mechanisms": ["regional", "subject_reference"]}


DOG = Box(x=56, y=16, w=32, h=40)


def _plan(dog: Box = DOG, std: float = 2.0) -> TurnPlan:
    """The girl as a feathered polygon mask, the dog as a plain box."""
    plan = two_subject_plan()
    girl = plan.items[0].model_copy(
        update={"box": None, "mask": RegionMask(polygon=[(2, 10), (38, 10), (30, 54)]), "mask_std": std}
    )
    items = [PlanItem.model_validate(girl.model_dump()), plan.items[1].model_copy(update={"box": dog})]
    return TurnPlan.model_validate(plan.model_copy(update={"items": items}).model_dump())


def _job(plan: TurnPlan, live: bool = True) -> DrawJob:
    return DrawJob(plan=plan, references={"1": png("red")}, settings=DrawSettings(**SETTINGS, live_canvas=live))


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the region-weight computations of a draw: canvas weights per item, coverage per (kind, level)."""
    counts: Counter[str] = Counter()
    real_canvas, real_grid = region_masks.canvas_weights, region_masks.grid_coverage
    real_box = layout_masks.box_coverage

    def canvas(item: PlanItem, height: int, width: int) -> torch.Tensor | None:
        counts[f"canvas {item.subject_id}"] += 1
        return real_canvas(item, height, width)

    def box(b: Box, *args: object) -> torch.Tensor:
        counts[f"box {b.x},{b.y}"] += 1
        return real_box(b, *args)  # type: ignore[arg-type]

    def grid(*args: object) -> torch.Tensor:
        counts["mask"] += 1
        return real_grid(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(region_masks, "canvas_weights", canvas)
    monkeypatch.setattr(layout_masks, "box_coverage", box)
    monkeypatch.setattr(region_masks, "box_coverage", box)
    monkeypatch.setattr(region_masks, "grid_coverage", grid)
    return counts


@pytest.fixture
def contexts(monkeypatch: pytest.MonkeyPatch) -> list[RegionalContext]:
    built: list[RegionalContext] = []
    real = regional.build_regional_context

    def spy(*args: object, **kwargs: object) -> RegionalContext:
        built.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return built[-1]

    monkeypatch.setattr(regional, "build_regional_context", spy)
    return built


def _weights(context: RegionalContext) -> list[torch.Tensor]:
    return [g.weights[k] for g in (*context.text_groups, *context.image_groups) for k in sorted(g.weights)]


def test_moving_one_box_recomputes_only_its_weights(
    tiny_drawer: Drawer, computed: Counter[str], contexts: list[RegionalContext]
) -> None:
    levels = len(tiny_drawer.pipe.unet.config.block_out_channels)
    tiny_drawer.encodings = EncodingCache()
    tiny_drawer.draw(_job(_plan()))
    assert computed == {"canvas 1": 1, "canvas 2": 1, "mask": levels, "box 56.0,16.0": levels}
    assert tiny_drawer.encodings.canvas_calls == 2 and tiny_drawer.encodings.coverage_calls == 2

    computed.clear()
    tiny_drawer.draw(_job(_plan()))
    assert computed == {}, "an identical redraw computes no region weights"

    computed.clear()
    moved = _plan(dog=Box(x=50, y=10, w=40, h=40))
    tiny_drawer.draw(_job(moved))
    assert computed == {"canvas 2": 1, "box 50.0,10.0": levels}, "only the moved dog's weights are recomputed"

    computed.clear()
    tiny_drawer.draw(_job(_plan(dog=Box(x=50, y=10, w=40, h=40), std=3.0)))
    assert computed == {"canvas 1": 1, "mask": levels}, "a new mask_std recomputes the girl's weights only"

    # the cached weights (the moved draw again, all from the cache) are exactly a cold draw's
    computed.clear()
    tiny_drawer.draw(_job(moved))
    assert computed == {}
    cold_count = len(contexts)
    tiny_drawer.draw(_job(moved, live=False))
    warm, cold = _weights(contexts[cold_count - 1]), _weights(contexts[cold_count])
    assert len(warm) == len(cold) > 0
    assert all(torch.equal(a, b) for a, b in zip(warm, cold, strict=True))


def test_live_canvas_off_caches_no_region_weights(tiny_drawer: Drawer, computed: Counter[str]) -> None:
    levels = len(tiny_drawer.pipe.unet.config.block_out_channels)
    tiny_drawer.encodings = EncodingCache()
    for _ in range(2):
        tiny_drawer.draw(_job(_plan(), live=False))
    assert computed == {"canvas 1": 2, "canvas 2": 2, "mask": 2 * levels, "box 56.0,16.0": 2 * levels}
    cache = tiny_drawer.encodings
    assert cache.canvas_calls == cache.coverage_calls == 0 and not cache._canvas and not cache._coverage


def test_cached_coverage_gives_the_fresh_layout_weights() -> None:
    plan = _plan()
    height, width = plan.height, plan.width
    grids = attention_grids(height, width, 8, 3)
    masks = [region_masks.canvas_weights(item, height, width) for item in plan.items]
    boxes = [item.box for item in plan.items]
    keys = [region_key(item, height, width) for item in plan.items]
    cache = EncodingCache()
    fresh = layout_coverages(boxes, masks, keys, grids, height, width)  # type: ignore[arg-type]
    with cache.use():
        layout_coverages(boxes, masks, keys, grids, height, width)  # type: ignore[arg-type]
        cached = layout_coverages(boxes, masks, keys, grids, height, width)  # type: ignore[arg-type]
        plain = layout_coverages(boxes[1:], None, keys[1:], grids, height, width)  # type: ignore[arg-type]
    assert cache.coverage_calls == 2  # each item once; the dog alone comes from the cache
    other_grids = attention_grids(height, width, 4, 2)  # another UNet: the same items are covered again
    with cache.use():
        again = layout_coverages(boxes, masks, keys, other_grids, height, width)  # type: ignore[arg-type]
    expected = layout_coverages(boxes, masks, None, other_grids, height, width)  # type: ignore[arg-type]
    assert cache.coverage_calls == 4 and all(torch.equal(a, b) for a, b in zip(again, expected, strict=True))  # type: ignore[arg-type]
    for grid, a, b, c in zip(grids, fresh, cached, plain, strict=True):
        assert a is not None and b is not None and c is not None and torch.equal(a, b)
        args = (boxes, [True, False], grid, height, width, (0.8, 0.1), 0.2, 0.7)
        weights = layout_weights(*args, coverage=b)  # type: ignore[arg-type]
        assert torch.equal(weights.text, layout_weights(*args, coverage=a).text)  # type: ignore[arg-type]
        dog = (boxes[1:], [True], grid, height, width, (0.8, 0.1), 0.2, 0.7)
        box_path = layout_weights(*dog)  # type: ignore[arg-type]
        from_cache = layout_weights(*dog, coverage=c)  # type: ignore[arg-type]
        assert torch.equal(from_cache.text, box_path.text) and torch.equal(from_cache.image, box_path.image)


def test_region_key_names_what_the_weights_depend_on() -> None:
    girl, dog = _plan().items
    base = region_key(dog, 64, 96)
    assert region_key(dog, 64, 96) == base
    assert region_key(dog.model_copy(update={"phrase": "a cat"}), 64, 96) == base
    changed = [
        region_key(dog, 64, 104),
        region_key(dog.model_copy(update={"box": Box(x=57, y=16, w=32, h=40)}), 64, 96),
        region_key(dog.model_copy(update={"mask_std": 1.0}), 64, 96),
        region_key(dog.model_copy(update={"mask_strength": 0.5}), 64, 96),
        region_key(dog.model_copy(update={"mask": girl.mask}), 64, 96),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    other_mask = girl.model_copy(update={"mask": RegionMask(polygon=[(2, 10), (38, 10), (31, 54)])})
    assert region_key(other_mask, 64, 96) != region_key(girl, 64, 96)
