"""The locator with scripted detections (so outcomes are known) and the real tiny SAM or a box-filling
fake: one detector call, one segmentation call, each subject with its own mask or a reason."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from studio.geometry import Box
from studio.images import decode_mask_png
from studio.protocols import SubjectLocator
from tests.vision.conftest import CallCounter, target
from vision.locator import GroundedSamLocator
from vision.matching import Detection
from vision.segmenter import BoxSegmenter


class ScriptedDetector:
    def __init__(self, detections: list[Detection]) -> None:
        self.detections = detections
        self.calls: list[list[str]] = []

    def detect(self, image: Image.Image, names: list[str]) -> list[Detection]:
        self.calls.append(names)
        return [d for d in self.detections if d.label in names]


class BoxFillSegmenter:
    """Returns each box filled as its mask, so a mask shows which box it was made for."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[float, float, float, float]]] = []

    def segment(self, image: Image.Image, boxes: list[tuple[float, float, float, float]]) -> list[np.ndarray]:
        self.calls.append(list(boxes))
        masks = []
        for x0, y0, x1, y1 in boxes:
            mask = np.zeros((image.height, image.width), dtype=bool)
            mask[int(y0) : int(y1), int(x0) : int(x1)] = True
            masks.append(mask)
        return masks


IMAGE = Image.new("RGB", (300, 200), (10, 20, 30))


def det(label: str, x: float, y: float, w: float, h: float, score: float) -> Detection:
    return Detection(label=label, box=Box(x=x, y=y, w=w, h=h), score=score)


def test_missing_subject_leaves_the_others_with_their_own_masks() -> None:
    detector = ScriptedDetector([det("girl", 0, 0, 100, 200, 0.8), det("dog", 200, 100, 100, 100, 0.6)])
    segmenter = BoxFillSegmenter()
    locator = GroundedSamLocator(detector, segmenter)
    assert isinstance(locator, SubjectLocator)
    targets = [
        target("1", "girl", 0, 0, 100, 200),
        target("2", "boy", 100, 0, 100, 200),
        target("3", "dog", 200, 100, 100, 100),
    ]
    crops = locator.locate(IMAGE, targets)
    assert detector.calls == [["girl", "boy", "dog"]]
    assert len(segmenter.calls) == 1 and len(segmenter.calls[0]) == 2
    assert list(crops) == ["1", "2", "3"]
    assert not crops["2"].found and "boy" in (crops["2"].reason or "") and crops["2"].mask is None
    girl_mask, dog_mask = decode_mask_png(crops["1"].mask or b""), decode_mask_png(crops["3"].mask or b"")
    assert girl_mask[:, :100].all() and not girl_mask[:, 100:].any()
    assert dog_mask[100:, 200:].all() and dog_mask.sum() == 100 * 100
    assert crops["3"].box == Box(x=200, y=100, w=100, h=100) and crops["3"].score == 0.6
    crop = Image.open(io.BytesIO(crops["1"].crop or b""))
    assert crop.size == (200, 200)  # 100 × 200 subject padded to a square


def test_no_targets_means_no_work() -> None:
    detector, segmenter = ScriptedDetector([]), BoxFillSegmenter()
    assert GroundedSamLocator(detector, segmenter).locate(IMAGE, []) == {}
    assert detector.calls == [] and segmenter.calls == []


def test_real_sam_gets_every_matched_box_in_one_prompt_batch(sam_segmenter: BoxSegmenter) -> None:
    detections = [
        det("girl", 0, 0, 100, 200, 0.8),
        det("boy", 100, 0, 100, 200, 0.7),
        det("dog", 200, 100, 100, 100, 0.6),
    ]
    locator = GroundedSamLocator(ScriptedDetector(detections), sam_segmenter)
    targets = [
        target("1", "girl", 0, 0, 100, 200),
        target("2", "boy", 100, 0, 100, 200),
        target("3", "dog", 200, 100, 100, 100),
    ]
    with CallCounter(sam_segmenter.model) as spy:
        crops = locator.locate(Image.effect_noise((300, 200), 60).convert("RGB"), targets)
    assert len(spy.calls) == 1
    assert tuple(spy.calls[0]["input_boxes"].shape) == (1, 3, 4)
    for subject_id, crop in crops.items():
        assert crop.box is not None, subject_id
        if crop.found:  # random SAM weights: a mask may come out empty, which must then be reported
            mask = decode_mask_png(crop.mask or b"")
            x0, y0, x1, y1 = crop.box.to_xyxy()
            outside = mask.copy()
            outside[max(int(y0) - 10, 0) : int(y1) + 10, max(int(x0) - 5, 0) : int(x1) + 5] = False
            assert not outside.any()
        else:
            assert "empty mask" in (crop.reason or "")
