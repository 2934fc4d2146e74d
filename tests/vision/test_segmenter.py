"""The segmenter: every box of an image prompted in one SAM / SAM 2 forward; the best of three masks by
predicted IoU; masks kept inside their box."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from tests.vision.conftest import CallCounter
from vision.segmenter import BoxSegmenter, best_masks, clip_to_boxes

BOXES = [(4.0, 4.0, 40.0, 60.0), (50.0, 10.0, 120.0, 90.0), (0.0, 0.0, 128.0, 96.0)]


def test_best_of_three_by_predicted_iou() -> None:
    masks = np.zeros((2, 3, 4, 4), dtype=bool)
    masks[0, 1, 0, 0] = True  # box 0: mask 1 is marked
    masks[1, 2, 3, 3] = True  # box 1: mask 2 is marked
    iou = np.array([[0.1, 0.9, 0.5], [0.2, 0.3, 0.8]])
    best = best_masks(masks, iou)
    assert best.shape == (2, 4, 4)
    assert best[0, 0, 0] and best[0].sum() == 1
    assert best[1, 3, 3] and best[1].sum() == 1


def test_masks_are_clipped_to_their_box() -> None:
    masks = np.ones((1, 10, 10), dtype=bool)
    clipped = clip_to_boxes(masks, [(2.0, 3.0, 6.0, 8.0)], margin=0.0)
    assert clipped[0].sum() == 4 * 5
    assert clipped[0, 3:8, 2:6].all()


def _check_one_batched_call(segmenter: BoxSegmenter, image: Image.Image) -> None:
    with CallCounter(segmenter.model) as spy:
        masks = segmenter.segment(image, BOXES)
    assert len(spy.calls) == 1
    assert tuple(spy.calls[0]["input_boxes"].shape) == (1, len(BOXES), 4)
    assert len(masks) == len(BOXES)
    for mask in masks:
        assert mask.dtype == bool and mask.shape == (image.height, image.width)
    assert not masks[0][:, 45:].any()  # nothing of box 0's mask beyond its box (+5 % margin)


def test_sam_prompts_all_boxes_in_one_call(sam_segmenter: BoxSegmenter, noise_image: Image.Image) -> None:
    _check_one_batched_call(sam_segmenter, noise_image)
    assert sam_segmenter.segment(noise_image, []) == []


def test_sam2_prompts_all_boxes_in_one_call(tiny_sam2_model: Any, noise_image: Image.Image) -> None:
    segmenter = BoxSegmenter(tiny_sam2_model)
    assert segmenter.model_type == "sam2"
    _check_one_batched_call(segmenter, noise_image)


class RiggedOutputs:
    """Makes mask `best` of every box all-foreground and the others all-background, and gives `best`
    the highest predicted IoU, so the returned masks show which of the three was picked."""

    def __init__(self, module: Any, best: int) -> None:
        self.module, self.best, self.original = module, best, module.forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.original(*args, **kwargs)
        out.pred_masks.fill_(-10.0)
        out.pred_masks[:, :, self.best] = 10.0
        out.iou_scores.fill_(0.1)
        out.iou_scores[:, :, self.best] = 0.9
        return out

    def __enter__(self) -> RiggedOutputs:
        self.module.forward = self
        return self

    def __exit__(self, *exc: object) -> None:
        del self.module.forward


def _check_best_mask_is_used(segmenter: BoxSegmenter, image: Image.Image) -> None:
    box = (10.0, 10.0, 50.0, 70.0)
    for best in (1, 2):
        with RiggedOutputs(segmenter.model, best):
            (mask,) = segmenter.segment(image, [box])
        assert mask[15:65, 15:45].all()  # the all-foreground mask (clipped to its box) was chosen
        assert not mask[80:, :].any() and not mask[:, 60:].any()


def test_sam_returns_the_mask_with_the_best_predicted_iou(
    sam_segmenter: BoxSegmenter, noise_image: Image.Image
) -> None:
    _check_best_mask_is_used(sam_segmenter, noise_image)


def test_sam2_returns_the_mask_with_the_best_predicted_iou(tiny_sam2_model: Any, noise_image: Image.Image) -> None:
    _check_best_mask_is_used(BoxSegmenter(tiny_sam2_model), noise_image)
