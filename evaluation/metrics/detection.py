"""Detection for scoring, through the vision package's SubjectLocator interface.

The benchmark fixes its own thresholds per check (0.5 for the story crops, 0.35 / 0.5 / 0.8 for the editing
checks, text 0.25 throughout), so locators are asked for by threshold from a factory and cached.

Story crops use `locate` with the benchmark's planned boxes (the locator matches each subject id to a detection
near its box). The editing checks need every box of a phrase anywhere in the picture: a locator that offers
`detector.detect(image, names)` (vision's GroundedSamLocator does) is used for that; any other locator is asked
through `locate` with a whole-canvas target, which finds at most one box per phrase."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from studio.geometry import Box
from studio.protocols import LocateTarget, SubjectLocator

LocatorFactory = Callable[[float, float], SubjectLocator]
"""(box_threshold, text_threshold) → a SubjectLocator using those thresholds."""


@runtime_checkable
class _DetectsAll(Protocol):
    def detect(self, image: Image.Image, names: list[str]) -> list[Any]: ...


class LocatorPool:
    def __init__(self, factory: LocatorFactory) -> None:
        self.factory = factory
        self._cache: dict[tuple[float, float], SubjectLocator] = {}

    def get(self, box_threshold: float, text_threshold: float) -> SubjectLocator:
        key = (box_threshold, text_threshold)
        if key not in self._cache:
            self._cache[key] = self.factory(box_threshold, text_threshold)
        return self._cache[key]

    def boxes(self, image: Image.Image, phrase: str, box_threshold: float, text_threshold: float) -> list[Box]:
        """Every box found for `phrase`, best score first."""
        locator = self.get(box_threshold, text_threshold)
        detector = getattr(locator, "detector", None)
        if isinstance(detector, _DetectsAll):
            found = [d for d in detector.detect(image, [phrase]) if getattr(d, "score", 1.0) >= box_threshold]
            return [d.box for d in sorted(found, key=lambda d: -float(getattr(d, "score", 1.0)))]
        whole = Box(x=0, y=0, w=image.width, h=image.height)
        crops = locator.locate(image, [LocateTarget(subject_id="1", name=phrase, planned_box=whole)])
        crop = crops.get("1")
        return [crop.box] if crop is not None and crop.found and crop.box is not None else []


def vision_factory(detector: str = "tiny", segmenter: str = "tiny", device: str = "auto") -> LocatorFactory:
    """Locators from the vision package, one per threshold pair (models are loaded once per pair)."""

    def build(box_threshold: float, text_threshold: float) -> SubjectLocator:
        from studio.settings import VisionSettings
        from vision import load_locator

        settings = VisionSettings(
            detector=detector,
            segmenter=segmenter,
            box_threshold=box_threshold,
            text_threshold=text_threshold,
            device=device,
        )
        return load_locator(settings)

    return build
