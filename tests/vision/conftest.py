"""Tiny random-weight models, built once per session, and small helpers shared by the vision tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from studio.geometry import Box
from studio.protocols import LocateTarget
from vision.detector import GroundingDetector
from vision.segmenter import BoxSegmenter
from vision.tiny import tiny_grounding_dino, tiny_sam, tiny_sam2


class CallCounter:
    """Wraps a module's forward, counting calls and keeping their keyword arguments."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.original = module.forward
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.original(*args, **kwargs)

    def __enter__(self) -> CallCounter:
        self.module.forward = self
        return self

    def __exit__(self, *exc: object) -> None:
        del self.module.forward


def target(subject_id: str, name: str, x: float, y: float, w: float, h: float) -> LocateTarget:
    return LocateTarget(subject_id=subject_id, name=name, planned_box=Box(x=x, y=y, w=w, h=h))


@pytest.fixture(scope="session")
def tiny_gd() -> tuple[Any, Any]:
    return tiny_grounding_dino(seed=0)


@pytest.fixture(scope="session")
def tiny_sam_parts() -> tuple[Any, Any]:
    return tiny_sam(seed=0)


@pytest.fixture(scope="session")
def tiny_sam2_model() -> Any:
    return tiny_sam2(seed=0)


@pytest.fixture(scope="session")
def open_detector(tiny_gd: tuple[Any, Any]) -> GroundingDetector:
    """The tiny detector with thresholds at 0, so random weights still yield detections."""
    model, processor = tiny_gd
    return GroundingDetector(model, processor, box_threshold=0.0, text_threshold=0.0)


@pytest.fixture(scope="session")
def sam_segmenter(tiny_sam_parts: tuple[Any, Any]) -> BoxSegmenter:
    model, processor = tiny_sam_parts
    return BoxSegmenter(model, processor)


@pytest.fixture(scope="session")
def noise_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8), "RGB")
