"""Tiny Grounding DINO (Swin + BERT) and tiny SAM / SAM 2 through the whole vision path, offline, with
no torchvision: well-formed SubjectCrops, found or missing with a reason."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from studio.draw import SubjectCrop
from studio.protocols import LocateTarget, SubjectLocator
from studio.settings import VisionSettings
from tests.vision.conftest import CallCounter, target
from vision import load_locator
from vision.detector import GroundingDetector
from vision.locator import GroundedSamLocator
from vision.matching import MatchSettings
from vision.segmenter import BoxSegmenter


def _targets(image: Image.Image) -> list[LocateTarget]:
    w, h = image.size
    # planned boxes over the whole picture, so any random box overlaps its plan
    return [target("1", "girl", 0, 0, w, h), target("2", "boy", 0, 0, w, h), target("3", "dog", 0, 0, w, h)]


def _check_well_formed(crops: dict[str, SubjectCrop], image: Image.Image, ids: list[str]) -> None:
    assert list(crops) == ids
    for subject_id, crop in crops.items():
        assert crop.subject_id == subject_id
        if not crop.found:
            assert crop.reason and crop.crop is None and crop.mask is None
            continue
        assert crop.box is not None and 0.0 <= crop.score <= 1.0 and 0.0 < crop.iou_with_plan <= 1.0
        mask = Image.open(io.BytesIO(crop.mask or b""))
        assert mask.mode == "L" and mask.size == image.size
        assert np.asarray(mask).max() == 255
        square = Image.open(io.BytesIO(crop.crop or b""))
        assert square.format == "PNG" and square.width == square.height


def test_tiny_models_run_end_to_end_and_find_subjects(
    open_detector: GroundingDetector, sam_segmenter: BoxSegmenter, noise_image: Image.Image
) -> None:
    locator = GroundedSamLocator(open_detector, sam_segmenter, MatchSettings(min_iou=0.0))
    with CallCounter(open_detector.model) as detector_spy, CallCounter(sam_segmenter.model) as sam_spy:
        crops = locator.locate(noise_image, _targets(noise_image))
    _check_well_formed(crops, noise_image, ["1", "2", "3"])
    assert any(c.found for c in crops.values()), {k: c.reason for k, c in crops.items()}
    assert len(detector_spy.calls) == 1
    assert len(sam_spy.calls) == 1
    assert sam_spy.calls[0]["input_boxes"].shape[1] == sum(c.box is not None for c in crops.values())
    assert "torchvision" not in sys.modules


@pytest.mark.parametrize("segmenter", ["sam", "sam2"])
def test_load_locator_builds_tiny_models_from_settings(segmenter: str, noise_image: Image.Image) -> None:
    settings = VisionSettings(detector="tiny", segmenter="tiny", box_threshold=0.0, text_threshold=0.0, device="cpu")
    locator = load_locator(settings, segmenter_model_type=segmenter)
    assert isinstance(locator, SubjectLocator)
    assert locator.detector.box_threshold == 0.0  # type: ignore[attr-defined]
    assert locator.segmenter.model_type == segmenter  # type: ignore[attr-defined]
    locator.matching = MatchSettings(min_iou=0.0)
    crops = locator.locate(noise_image, _targets(noise_image))
    _check_well_formed(crops, noise_image, ["1", "2", "3"])
    assert any(c.found for c in crops.values())
    assert "torchvision" not in sys.modules


def test_default_thresholds_report_misses_with_reasons(noise_image: Image.Image) -> None:
    locator = load_locator(VisionSettings(box_threshold=1.0, text_threshold=1.0, device="cpu"))
    crops = locator.locate(noise_image, [*_targets(noise_image), target("1-1", "hat", 0, 0, 20, 20)])
    _check_well_formed(crops, noise_image, ["1", "2", "3", "1-1"])
    assert not any(c.found for c in crops.values())
    assert crops["1"].reason == "no 'girl' detected"
    assert crops["1-1"].reason == "its parent '1' was not found"
