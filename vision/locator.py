"""The one SubjectLocator used everywhere: on the drawer's pre-renders (subject-initialized generation)
and on every finished turn (memory update). One detector pass per image, one batched segmentation."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from PIL import Image

from studio.draw import SubjectCrop
from studio.geometry import Box
from studio.images import encode_mask_png, encode_png
from studio.protocols import LocateTarget
from vision.crops import GREY, mask_bbox, masked_square_crop
from vision.matching import Detection, Match, MatchSettings, match_targets, nms, normalize_name


class Detector(Protocol):
    def detect(self, image: Image.Image, names: list[str]) -> list[Detection]: ...


class Segmenter(Protocol):
    def segment(self, image: Image.Image, boxes: list[tuple[float, float, float, float]]) -> list[np.ndarray]: ...


class GroundedSamLocator:
    """Detect (one pass, all names) → match to the plan → segment the matched boxes (one batch) → crop.

    Implements `studio.protocols.SubjectLocator`."""

    def __init__(
        self,
        detector: Detector,
        segmenter: Segmenter,
        matching: MatchSettings | None = None,
        fill: tuple[int, int, int] = GREY,
    ) -> None:
        self.detector = detector
        self.segmenter = segmenter
        self.matching = matching or MatchSettings()
        self.fill = fill

    def locate(self, image: Image.Image, targets: list[LocateTarget]) -> dict[str, SubjectCrop]:
        if not targets:
            return {}
        image = image.convert("RGB")
        width, height = image.size
        names = list(dict.fromkeys(normalize_name(t.name) for t in targets))
        detections = nms(self.detector.detect(image, names), self.matching.nms_iou)
        matches = match_targets(_clipped(targets, height, width), detections, self.matching)
        found = [m for m in matches.values() if m.detection is not None]
        masks = self.segmenter.segment(image, [m.detection.box.to_xyxy() for m in found])  # type: ignore[union-attr]
        mask_of = {m.subject_id: mask for m, mask in zip(found, masks, strict=True)}
        return {t.subject_id: self._crop(image, matches[t.subject_id], mask_of.get(t.subject_id)) for t in targets}

    def _crop(self, image: Image.Image, match: Match, mask: np.ndarray | None) -> SubjectCrop:
        if match.detection is None:
            return SubjectCrop(subject_id=match.subject_id, found=False, reason=match.reason)
        det = match.detection
        common = {
            "subject_id": match.subject_id,
            "box": det.box,
            "score": det.score,
            "iou_with_plan": match.iou_with_plan,
        }
        if mask is None or mask_bbox(mask) is None:
            return SubjectCrop(found=False, reason="detected, but segmentation left an empty mask in its box", **common)
        return SubjectCrop(
            found=True,
            mask=encode_mask_png(mask),
            crop=encode_png(masked_square_crop(image, mask, self.fill)),
            **common,
        )


def _clipped(targets: list[LocateTarget], height: int, width: int) -> list[LocateTarget]:
    """Planned boxes clipped to the image (a box wholly outside keeps a 1-pixel sliver at the edge, so
    the subject is reported missing by IoU instead of failing validation)."""
    out = []
    for t in targets:
        box = t.planned_box.clipped(height, width)
        if box is None:
            x = min(max(t.planned_box.x, 0.0), width - 1.0)
            y = min(max(t.planned_box.y, 0.0), height - 1.0)
            box = Box(x=x, y=y, w=1.0, h=1.0)
        out.append(t if box == t.planned_box else t.model_copy(update={"planned_box": box}))
    return out
