"""A stand-in SubjectLocator for when no detector is wired in: it trusts the plan."""

from __future__ import annotations

from PIL import Image

from drawer.images import box_mask, square_pad
from studio.draw import SubjectCrop
from studio.images import encode_png
from studio.protocols import LocateTarget


class PlannedBoxLocator:
    """Reports every target exactly at its planned box: the box is the mask and the crop is the box region,
    padded to a square. Implements `studio.protocols.SubjectLocator`."""

    def __init__(self, score: float = 1.0) -> None:
        self.score = score

    def locate(self, image: Image.Image, targets: list[LocateTarget]) -> dict[str, SubjectCrop]:
        out: dict[str, SubjectCrop] = {}
        for target in targets:
            box = target.planned_box.clipped(image.height, image.width)
            if box is None:
                out[target.subject_id] = SubjectCrop(
                    subject_id=target.subject_id, found=False, reason="planned box lies outside the image"
                )
                continue
            x0, y0, x1, y1 = box.pixel_bounds(image.height, image.width)
            crop = square_pad(image.convert("RGB").crop((x0, y0, x1, y1)))
            out[target.subject_id] = SubjectCrop(
                subject_id=target.subject_id,
                found=True,
                box=box,
                score=self.score,
                iou_with_plan=1.0,
                mask=encode_png(box_mask(box, image.height, image.width)),
                crop=encode_png(crop),
            )
        return out
