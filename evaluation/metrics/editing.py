"""The four editing checks of CMIGBench, one per turn, decided from detections:

- turn 1, spatial: every object is detected and the caption's relation ("X to the left of Y", …) holds;
- turn 2, attribute: the object whose phrase shares most words with the caption is detected;
- turn 3, negative: the negative prompt's object is not detected;
- turn 4, numeracy: the first object's phrase is detected exactly as many times as there are objects.

A check returns True / False, or None when it does not apply (no relation in the caption, no negative prompt).
`quirks=True` reproduces the original decisions; see docs/evaluation.md for each difference."""

from __future__ import annotations

import re
from dataclasses import dataclass

from studio.geometry import Box

SPATIAL_THRESHOLD = 0.35
ATTRIBUTE_THRESHOLD = 0.5
NEGATIVE_THRESHOLD = 0.8
NUMERACY_THRESHOLD = 0.35
TEXT_THRESHOLD = 0.25

# (relation, pattern, which side Y must be on): "X to the right of Y" holds when Y is left of X, and so on
_RELATIONS: list[tuple[str, str]] = [
    ("right", r"(.+?)\sto the right of\s(.+)"),
    ("left", r"(.+?)\sto the left of\s(.+)"),
    ("above", r"(.+?)\sto the top of\s(.+)"),
    ("below", r"(.+?)\sto the down of\s(.+)"),
    ("below", r"(.+?)\sbelow\s(.+)"),
    ("middle", r"(.+?)\sin the middle of\s(.+)"),
]
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "with",
        "and",
        "on",
        "in",
        "at",
        "to",
        "is",
        "are",
        "its",
        "their",
        "his",
        "her",
        "by",
        "for",
        "from",
    ]
)
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Found:
    """A detected object: the phrase it was asked for and its box (None: not detected)."""

    phrase: str
    box: Box | None


def _last_word(text: str) -> str:
    words = text.split()
    return words[-1] if words else ""


def _centre(box: Box) -> tuple[float, float]:
    return box.x + box.w / 2, box.y + box.h / 2


def spatial(caption: str, objects: list[Found], quirks: bool = False) -> bool | None:
    if any(o.box is None for o in objects):
        return False
    for relation, pattern in _RELATIONS:
        match = re.search(pattern, caption)
        if match:
            if quirks:
                return _spatial_official(relation, match.group(2), objects)
            return _spatial_fixed(relation, match.group(1), match.group(2), objects)
    return None


def _spatial_official(relation: str, item2: str, objects: list[Found]) -> bool | None:
    """The original: Y (last word after the relation) must be the extreme object by box corner; "middle" passes
    whenever two objects are found, and gives no answer (the dialogue is dropped) with more."""
    if relation == "middle":
        return True if len(objects) == 2 else (False if len(objects) < 2 else None)
    key = {
        "right": lambda o: o.box.x,
        "left": lambda o: -o.box.x,
        "above": lambda o: -o.box.y,
        "below": lambda o: o.box.y,
    }[relation]
    extreme = min(objects, key=key)
    return _last_word(extreme.phrase) == _last_word(item2)


def _head(phrase: str) -> str:
    """The noun a phrase is about: the last word of its text before the first comma ("a red car, parked" → car)."""
    words = _WORD.findall(phrase.split(",", 1)[0].lower())
    return words[-1] if words else ""


def _mentions(text: str, noun: str) -> int | None:
    """Where `noun` (or its plural) first appears in `text` as a whole word, or None."""
    match = re.search(rf"\b{re.escape(noun)}(e?s)?\b", text.lower()) if noun else None
    return match.start() if match else None


def _pick(text: str, objects: list[Found], exclude: Found | None = None, last: bool = False) -> Found | None:
    hits = [(pos, o) for o in objects if o is not exclude and (pos := _mentions(text, _head(o.phrase))) is not None]
    if not hits:
        return None
    return (max if last else min)(hits, key=lambda pair: pair[0])[1]


def _spatial_fixed(relation: str, item1: str, item2: str, objects: list[Found]) -> bool:
    """X and Y are found by their nouns in the caption and compared by box centres; "middle" means X's centre lies
    between the other objects' centres (or inside Y's box when there is only one other object)."""
    y = _pick(item2, objects)
    x = _pick(item1, objects, exclude=y, last=True)
    if x is None and y is not None and len(objects) == 2:
        x = next(o for o in objects if o is not y)
    if x is None or x.box is None:
        return False
    xc, yc = _centre(x.box)
    if relation == "middle":
        others = [o for o in objects if o is not x and o.box is not None]
        if len(others) >= 2:
            centres = [_centre(o.box)[0] for o in others if o.box is not None]
            return min(centres) < xc < max(centres)
        anchor = y if y is not None and y is not x else (others[0] if others else None)
        if anchor is None or anchor.box is None:
            return False
        ax0, ay0, ax1, ay1 = anchor.box.to_xyxy()
        return ax0 <= xc <= ax1 and ay0 <= yc <= ay1
    if y is None or y.box is None:
        return False
    ox, oy = _centre(y.box)
    return {"right": xc > ox, "left": xc < ox, "above": yc < oy, "below": yc > oy}[relation]


def attribute_target(caption: str, phrases: list[str], quirks: bool = False) -> str:
    """The phrase sharing most words with the caption (first one on ties). The original counts substring hits of
    every word, "a" included, and falls back to the empty phrase when nothing overlaps."""
    best, best_count = ("" if quirks else (phrases[0] if phrases else "")), 0
    caption_words = set(_WORD.findall(caption.lower()))
    for phrase in phrases:
        if quirks:
            count = sum(1 for word in phrase.split() if word in caption)
        else:
            count = len({w for w in _WORD.findall(phrase.lower()) if w not in _STOPWORDS} & caption_words)
        if count > best_count:
            best, best_count = phrase, count
    return best


def attribute(detections: int) -> bool:
    return detections >= 1


def negative(negative_prompt: str | None, detections: int, quirks: bool = False) -> bool | None:
    """Passes when the negative object is not found. Without a negative prompt the check does not apply; the
    original queries the literal text "None" instead."""
    if negative_prompt is None and not quirks:
        return None
    return detections == 0


def numeracy(expected: int, boxes: list[Box], quirks: bool = False, duplicate_iou: float = 0.5) -> bool:
    """Exactly `expected` instances. The fixed rule first merges boxes that overlap by IoU > `duplicate_iou`
    (the same instance found twice); the original counts every box."""
    count = len(boxes) if quirks else len(distinct_boxes(boxes, duplicate_iou))
    return count == expected


def distinct_boxes(boxes: list[Box], iou: float) -> list[Box]:
    kept: list[Box] = []
    for box in boxes:
        if all(box.iou(other) <= iou for other in kept):
            kept.append(box)
    return kept
