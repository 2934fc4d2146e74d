"""The detector: all names in one prompt and one forward pass; each box mapped back to one query label
from the logits."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from tests.vision.conftest import CallCounter
from vision.detector import GroundingDetector, detections_from_token_probs, label_token_spans
from vision.tiny import tiny_grounding_dino, tiny_owlv2


def test_label_spans_are_found_left_to_right() -> None:
    # [CLS] 5 . 5 6 . [SEP]: label "5" must take position 1, label "5 6" positions 3-4
    ids = [101, 5, 9, 5, 6, 9, 102]
    assert label_token_spans(ids, [[5], [5, 6]]) == [[1], [3, 4]]
    assert label_token_spans(ids, [[5, 6], [5]]) == [[3, 4], []]  # order matters; a lost label gets nothing
    assert label_token_spans(ids, [[7]]) == [[]]


def test_each_box_gets_the_label_it_matches_best() -> None:
    labels = ["girl", "boy"]
    spans = [[1], [3, 4]]
    probs = np.zeros((4, 8))
    probs[0, [1, 3]] = [0.5, 0.8]  # matches both names: the better one (boy) wins, no merged "girl boy"
    probs[1, 1] = 0.9  # girl
    probs[2, 4] = 0.2  # below the box threshold
    probs[3, 0] = 0.9  # strong on [CLS] only: passes the box threshold, but no name reaches the text threshold
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 30], [0, 0, 5, 5], [1, 1, 9, 9]], dtype=float)
    dets = detections_from_token_probs(probs, boxes, spans, labels, box_threshold=0.35, text_threshold=0.25)
    assert [(d.label, round(d.score, 2)) for d in dets] == [("boy", 0.8), ("girl", 0.9)]
    assert dets[1].box.to_xyxy() == (5, 5, 20, 30)


def test_all_names_go_through_one_forward_pass(open_detector: GroundingDetector, noise_image: Image.Image) -> None:
    tokenizer = open_detector.processor.tokenizer
    with CallCounter(open_detector.model) as spy:
        detections = open_detector.detect(noise_image, ["Girl", "boy", "dog", "girl"])
    assert len(spy.calls) == 1
    prompt = tokenizer.decode(spy.calls[0]["input_ids"][0], skip_special_tokens=True)
    assert prompt.replace(" .", ".") == "girl. boy. dog."
    assert detections, "thresholds at 0 must let the random model's boxes through"
    width, height = noise_image.size
    for det in detections:
        assert det.label in {"girl", "boy", "dog"}
        x0, y0, x1, y1 = det.box.to_xyxy()
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert 0.0 <= det.score <= 1.0


def test_thresholds_filter_detections(open_detector: GroundingDetector, noise_image: Image.Image) -> None:
    strict = GroundingDetector(open_detector.model, open_detector.processor, box_threshold=1.0, text_threshold=1.0)
    assert strict.detect(noise_image, ["girl"]) == []
    assert open_detector.detect(noise_image, []) == []


def test_owlv2_takes_the_per_query_path_in_one_pass() -> None:
    model, processor = tiny_owlv2(seed=0)
    detector = GroundingDetector(model, processor, box_threshold=0.0)
    assert detector.per_query
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 80, 3), dtype=np.uint8))
    with CallCounter(model) as spy:
        detections = detector.detect(image, ["girl", "dog", "Girl"])
    assert len(spy.calls) == 1 and spy.calls[0]["input_ids"].shape[0] == 2  # one query per distinct name
    assert detections and {d.label for d in detections} <= {"girl", "dog"}


def test_owlv2_boxes_are_scaled_by_its_padded_square() -> None:
    model, processor = tiny_owlv2(seed=0)
    detector = GroundingDetector(model, processor, box_threshold=0.0)
    original = model.forward

    def rigged(*args: object, **kwargs: object) -> object:
        out = original(*args, **kwargs)
        out.pred_boxes[:] = torch.tensor([0.25, 0.25, 0.5, 0.5])  # the top-left quarter of the padded square
        return out

    model.forward = rigged
    try:
        detections = detector.detect(Image.new("RGB", (80, 48)), ["girl"])
    finally:
        del model.forward
    # 80×48 is padded to 80×80 at the bottom: the box is 40×40 pixels, not 40×24
    assert detections and all(d.box.to_xyxy() == (0.0, 0.0, 40.0, 40.0) for d in detections)


def test_mm_grounding_dino_uses_the_same_token_path() -> None:
    model, processor = tiny_grounding_dino(seed=0, mm=True)
    assert model.config.model_type == "mm-grounding-dino"
    detector = GroundingDetector(model, processor, box_threshold=0.0, text_threshold=0.0)
    assert not detector.per_query
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    with CallCounter(model) as spy:
        detections = detector.detect(image, ["girl", "boy"])
    assert len(spy.calls) == 1
    assert detections and {d.label for d in detections} <= {"girl", "boy"}
