"""Finding planned subjects in images: Grounding DINO (or another zero-shot detector) → matching to the
plan → SAM / SAM 2 box-prompted masks → square-padded masked crops.

Built on transformers' own model classes; groundingdino-py and segment-anything are not used (see
docs/vision.md). Importing this package loads no model and no torch; `load_locator` does."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studio.settings import VisionSettings
    from vision.locator import GroundedSamLocator

__all__ = ["load_locator"]


def load_locator(settings: VisionSettings, segmenter_model_type: str = "sam") -> GroundedSamLocator:
    """The SubjectLocator the settings describe. 'tiny' builds random-weight models (tests, benches);
    anything else is a hub id or local folder loaded with from_pretrained on settings.device / dtype.
    `segmenter_model_type` picks SAM or SAM 2 only for the tiny segmenter (real checkpoints carry theirs)."""
    from studio.library_logs import quiet_known_library_warnings

    quiet_known_library_warnings()  # before the imports, which import transformers' processors
    from vision.detector import GroundingDetector
    from vision.devices import resolve_device, resolve_dtype
    from vision.locator import GroundedSamLocator
    from vision.segmenter import BoxSegmenter

    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    if settings.detector == "tiny":
        from vision.tiny import tiny_grounding_dino

        model, processor = tiny_grounding_dino()
        detector = GroundingDetector(
            model.to(device, dtype), processor, settings.box_threshold, settings.text_threshold, device, dtype
        )
    else:
        detector = GroundingDetector.from_pretrained(
            settings.detector, settings.box_threshold, settings.text_threshold, settings.device, settings.dtype
        )
    if settings.segmenter == "tiny":
        from vision.tiny import tiny_sam, tiny_sam2

        if segmenter_model_type == "sam2":
            segmenter = BoxSegmenter(tiny_sam2().to(device, dtype), None, device, dtype)
        else:
            sam, sam_processor = tiny_sam()
            segmenter = BoxSegmenter(sam.to(device, dtype), sam_processor, device, dtype)
    else:
        segmenter = BoxSegmenter.from_pretrained(settings.segmenter, settings.device, settings.dtype)
    from vision.matching import MatchSettings

    return GroundedSamLocator(detector, segmenter, MatchSettings(min_iou=settings.min_iou))
