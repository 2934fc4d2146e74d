"""Small stand-ins for the drawer and the locator: deterministic, fast, and sensitive to what they are given."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
from PIL import Image

from studio.draw import DrawJob, DrawResult, SubjectCrop
from studio.images import encode_png
from studio.protocols import LocateTarget, StepCallback


class FakeDrawer:
    """Paints a picture whose pixels depend on the seed, the plan and the reference bytes, and returns a crop per
    planned subject. Records every job it gets."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.jobs: list[DrawJob] = []
        self.fail_on_call = fail_on_call

    def draw(
        self, job: DrawJob, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> DrawResult:
        self.jobs.append(job)
        if self.fail_on_call is not None and len(self.jobs) == self.fail_on_call:
            raise RuntimeError("injected drawer failure")
        plan = job.plan
        digest = hashlib.sha256(plan.model_dump_json().encode() + str(job.settings.seed).encode())
        for subject_id in sorted(job.references):
            digest.update(subject_id.encode() + job.references[subject_id])
        rng = np.random.default_rng(int.from_bytes(digest.digest()[:8], "big"))
        pixels = rng.integers(0, 256, size=(plan.height, plan.width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        crops = {}
        for item in plan.items:
            x0, y0, x1, y1 = item.box.pixel_bounds(plan.height, plan.width)
            crops[item.subject_id] = SubjectCrop(
                subject_id=item.subject_id,
                found=True,
                box=item.box,
                score=0.9,
                iou_with_plan=1.0,
                crop=encode_png(image.crop((x0, y0, x1, y1))),
            )
        return DrawResult(
            image=encode_png(image), width=plan.width, height=plan.height, seed=job.settings.seed or 0, crops=crops
        )


class ScriptedLocator:
    """Answers `locate` from a script, the same for every image: {name: (box_xyxy, score)}, or, with `default`,
    that hit for every name not in `missing`."""

    def __init__(
        self,
        found: dict[str, tuple[tuple[float, float, float, float], float]] | None = None,
        default: tuple[tuple[float, float, float, float], float] | None = None,
        missing: frozenset[str] = frozenset(),
    ) -> None:
        self.found = found or {}
        self.default = default
        self.missing = missing
        self.calls: list[list[LocateTarget]] = []

    def locate(self, image: Image.Image, targets: list[LocateTarget]) -> dict[str, SubjectCrop]:
        from studio.geometry import Box

        self.calls.append(targets)
        out = {}
        for target in targets:
            hit = None if target.name in self.missing else self.found.get(target.name, self.default)
            if hit is None:
                out[target.subject_id] = SubjectCrop(subject_id=target.subject_id, found=False, reason="not detected")
            else:
                box, score = hit
                out[target.subject_id] = SubjectCrop(
                    subject_id=target.subject_id, found=True, box=Box.from_xyxy(*box), score=score
                )
        return out


class FakeDetection:
    def __init__(self, label: str, box: tuple[float, float, float, float], score: float) -> None:
        from studio.geometry import Box

        self.label, self.box, self.score = label, Box.from_xyxy(*box), score


class ScriptedDetector:
    """`detect(image, names)`: every scripted hit of each name, whatever the threshold (the pool filters)."""

    def __init__(self, hits: dict[str, list[tuple[tuple[float, float, float, float], float]]]) -> None:
        self.hits = hits
        self.asked: list[str] = []

    def detect(self, image: Image.Image, names: list[str]) -> list[FakeDetection]:
        self.asked.extend(names)
        return [FakeDetection(n, box, score) for n in names for box, score in self.hits.get(n, [])]


class DetectingLocator(ScriptedLocator):
    """A locator that also offers `detector.detect`, like vision's GroundedSamLocator."""

    def __init__(self, detector: ScriptedDetector) -> None:
        super().__init__()
        self.detector = detector
