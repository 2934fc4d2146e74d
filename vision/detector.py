"""Open-vocabulary detection: every subject name of a turn in one forward pass.

Grounding DINO (and MM-Grounding-DINO) score each box against every *token* of one prompt
"girl. boy. dog."; OWL-ViT / OWLv2 score each box against each *query*. Either way the result is, per
box, one label among the queried names, decided here from the logits (never by decoding tokens back to
text, which merges or drops labels when several names' tokens pass the threshold).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
from PIL import Image

from studio.geometry import Box
from vision.devices import resolve_device, resolve_dtype
from vision.matching import Detection, normalize_name

PER_QUERY_MODEL_TYPES = frozenset({"owlv2", "owlvit"})


def label_token_spans(input_ids: list[int], label_ids: list[list[int]]) -> list[list[int]]:
    """Positions of each label's tokens in the prompt, searched left to right so that a name that is a
    prefix of a later one ("man" … "woman" tokenized alike) is still found at its own place. A label whose
    tokens are not found (truncated prompt) gets an empty span and can never be detected."""
    spans: list[list[int]] = []
    start = 0
    for ids in label_ids:
        found: list[int] = []
        if ids:
            for pos in range(start, len(input_ids) - len(ids) + 1):
                if input_ids[pos : pos + len(ids)] == ids:
                    found = list(range(pos, pos + len(ids)))
                    start = pos + len(ids)
                    break
        spans.append(found)
    return spans


def detections_from_token_probs(
    probs: np.ndarray,
    boxes_xyxy: np.ndarray,
    spans: list[list[int]],
    labels: list[str],
    box_threshold: float,
    text_threshold: float,
) -> list[Detection]:
    """Grounding DINO semantics: a box is kept when its best token probability reaches `box_threshold`;
    its label is the name whose tokens it matches best (max over the name's tokens), accepted when that
    reaches `text_threshold`; its score is that label probability.

    probs: (queries, text positions) sigmoid probabilities; boxes_xyxy: (queries, 4) in pixels."""
    if not labels or probs.size == 0:
        return []
    per_label = np.stack(
        [probs[:, span].max(axis=1) if span else np.zeros(len(probs)) for span in spans], axis=1
    )  # (queries, labels)
    box_score = probs.max(axis=1)
    best = per_label.argmax(axis=1)
    out = []
    for q in range(len(probs)):
        score = float(per_label[q, best[q]])
        if box_score[q] >= box_threshold and score >= text_threshold:
            det = _detection(labels[best[q]], boxes_xyxy[q], score)
            if det is not None:
                out.append(det)
    return out


def detections_from_query_probs(
    probs: np.ndarray, boxes_xyxy: np.ndarray, labels: list[str], box_threshold: float
) -> list[Detection]:
    """OWL semantics: probs (boxes, queries); a box takes its best query when that reaches the threshold."""
    out = []
    if not labels or probs.size == 0:
        return out
    best = probs.argmax(axis=1)
    for q in range(len(probs)):
        score = float(probs[q, best[q]])
        if score >= box_threshold:
            det = _detection(labels[best[q]], boxes_xyxy[q], score)
            if det is not None:
                out.append(det)
    return out


def _detection(label: str, xyxy: np.ndarray, score: float) -> Detection | None:
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    if x1 - x0 < 1.0 or y1 - y0 < 1.0:
        return None
    return Detection(label=label, box=Box.from_xyxy(x0, y0, x1, y1), score=min(max(score, 0.0), 1.0))


def cxcywh_to_xyxy(boxes: np.ndarray, width: float, height: float, clip_w: int, clip_h: int) -> np.ndarray:
    """Normalized centre boxes → pixel corner boxes scaled by (width, height), clipped to the image."""
    cx, cy, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    xyxy = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, clip_w)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, clip_h)
    return xyxy


class GroundingDetector:
    """A zero-shot detector and its processor. `detect(image, names)` runs one forward pass for all names."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.device = torch.device(device)
        self.dtype = dtype
        self.per_query = getattr(model.config, "model_type", "") in PER_QUERY_MODEL_TYPES
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = "IDEA-Research/grounding-dino-base",
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        device: str = "auto",
        dtype: str = "auto",
    ) -> GroundingDetector:
        """Any checkpoint `AutoModelForZeroShotObjectDetection` loads: Grounding DINO (default family),
        MM-Grounding-DINO, OWL-ViT, OWLv2 — a hub id or a local folder."""
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(name_or_path, dtype=torch_dtype).to(dev)
        processor = AutoProcessor.from_pretrained(name_or_path)
        return cls(model, processor, box_threshold, text_threshold, dev, torch_dtype)

    def _to_device(self, inputs: Any) -> dict[str, Any]:
        moved = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            moved[key] = value
        return moved

    def detect(self, image: Image.Image, names: list[str]) -> list[Detection]:
        """Detections of the given names (labels are their normalized forms), in image pixels."""
        labels = list(dict.fromkeys(normalize_name(n) for n in names))
        if not labels:
            return []
        image = image.convert("RGB")
        with self._lock, torch.inference_mode():
            if self.per_query:
                return self._detect_per_query(image, labels)
            return self._detect_tokens(image, labels)

    def _detect_tokens(self, image: Image.Image, labels: list[str]) -> list[Detection]:
        prompt = ". ".join(labels) + "."
        inputs = self.processor(images=image, text=prompt, return_tensors="pt")
        outputs = self.model(**self._to_device(inputs))
        tokenizer = self.processor.tokenizer
        label_ids = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in labels]
        spans = label_token_spans(inputs["input_ids"][0].tolist(), label_ids)
        probs = torch.sigmoid(outputs.logits[0].float()).cpu().numpy()
        boxes = cxcywh_to_xyxy(outputs.pred_boxes[0].float().cpu().numpy(), *image.size, *image.size)
        return detections_from_token_probs(probs, boxes, spans, labels, self.box_threshold, self.text_threshold)

    def _detect_per_query(self, image: Image.Image, labels: list[str]) -> list[Detection]:
        inputs = self.processor(images=image, text=[[f"a photo of a {label}" for label in labels]], return_tensors="pt")
        outputs = self.model(**self._to_device(inputs))
        probs = torch.sigmoid(outputs.logits[0].float()).cpu().numpy()
        width, height = image.size
        if self.model.config.model_type == "owlv2":  # OWLv2 pads to a square: boxes are relative to it
            width = height = max(width, height)
        boxes = cxcywh_to_xyxy(outputs.pred_boxes[0].float().cpu().numpy(), width, height, *image.size)
        return detections_from_query_probs(probs, boxes, labels, self.box_threshold)
