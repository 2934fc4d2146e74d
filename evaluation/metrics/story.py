"""Story metrics of one dialogue from its detections: which crop each later appearance of a subject is compared
with (CCS), the crop pairs for the per-dialogue FID, and the text–image score (TIS).

The fixed rules and the original ones (`quirks=True`) differ as listed in docs/evaluation.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from evaluation.metrics.fid import FeatureExtractor, frechet_distance

Embed = Callable[[list[Image.Image]], np.ndarray]
"""Unit-norm image embeddings, (n, d)."""


@dataclass
class TurnCrops:
    """One drawn turn: its number, the key it had in the file, and per planned subject its crop (None: missed)."""

    turn: int
    key: str
    crops: dict[str, Image.Image | None]


@dataclass
class Pair:
    subject_id: str
    turn: int
    reference: Image.Image
    later: Image.Image | None  # None: the subject was missed (scores 0, a black image in the FID)


@dataclass
class Consistency:
    pairs: list[Pair] = field(default_factory=list)
    zeros: dict[str, int] = field(default_factory=dict)  # subject → misses scored 0 without a pair


def _later(a: TurnCrops, b: TurnCrops, quirks: bool) -> bool:
    """Is turn `a` after turn `b`? The original compares the keys as strings ("turn 10" < "turn 2")."""
    return a.key > b.key if quirks else a.turn > b.turn


def consistency_pairs(turns: list[TurnCrops], quirks: bool = False) -> Consistency:
    """Reference = the subject's first detected appearance; every later appearance is paired with it."""
    return _official_pairs(turns) if quirks else _fixed_pairs(turns)


def _fixed_pairs(turns: list[TurnCrops]) -> Consistency:
    out = Consistency()
    ordered = sorted(turns, key=lambda t: t.turn)
    subjects = list(dict.fromkeys(sid for t in ordered for sid in t.crops))
    for sid in subjects:
        appearances = [(t.turn, t.crops[sid]) for t in ordered if sid in t.crops]
        first_found = next((i for i, (_, crop) in enumerate(appearances) if crop is not None), None)
        if first_found is None:
            # never detected: each appearance after the first is a miss (nothing to pair it with)
            if len(appearances) > 1:
                out.zeros[sid] = len(appearances) - 1
            continue
        reference = appearances[first_found][1]
        assert reference is not None
        # appearances before the reference were misses: they score 0 and enter the FID as black images
        for turn, _ in appearances[:first_found]:
            out.pairs.append(Pair(sid, turn, reference, None))
        for turn, crop in appearances[first_found + 1 :]:
            out.pairs.append(Pair(sid, turn, reference, crop))
    return out


def _official_pairs(turns: list[TurnCrops]) -> Consistency:
    """The original bookkeeping: the reference slot is the first *planned* appearance; if the subject is missed
    there, the next detection becomes the reference and the gap in turn *numbers* is filled with zeros."""
    out = Consistency()
    slot: dict[str, TurnCrops] = {}
    reference: dict[str, Image.Image] = {}
    for turn in turns:  # file order, as the original iterates the JSON keys
        for sid, crop in turn.crops.items():
            if sid not in slot:
                slot[sid] = turn
                if crop is not None:
                    reference[sid] = crop
                continue
            if not _later(turn, slot[sid], quirks=True):
                continue
            if sid in reference:
                out.pairs.append(Pair(sid, turn.turn, reference[sid], crop))
            elif crop is not None:
                for gap_turn in range(slot[sid].turn, turn.turn):
                    out.pairs.append(Pair(sid, gap_turn, crop, None))
                slot[sid], reference[sid] = turn, crop
    return out


def ccs(consistency: Consistency, embed: Embed) -> tuple[float | None, dict[str, float]]:
    """Per subject the mean cosine of its later crops to its reference (misses 0), then the mean over subjects.
    None when no subject appears twice."""
    scores: dict[str, list[float]] = {sid: [0.0] * n for sid, n in consistency.zeros.items()}
    found = [p for p in consistency.pairs if p.later is not None]
    if found:
        refs = embed([p.reference for p in found])
        later = embed([p.later for p in found if p.later is not None])
        cosines = np.sum(refs * later, axis=1)
    position = 0
    for pair in consistency.pairs:
        value = 0.0
        if pair.later is not None:
            value = float(cosines[position])
            position += 1
        scores.setdefault(pair.subject_id, []).append(value)
    per_subject = {sid: float(np.mean(values)) for sid, values in scores.items() if values}
    if not per_subject:
        return None, {}
    return float(np.mean(list(per_subject.values()))), per_subject


def black_like(image: Image.Image) -> Image.Image:
    return Image.new("RGB", image.size)


def dialogue_fid(consistency: Consistency, features: FeatureExtractor) -> float | None:
    """Fréchet distance between the reference crops and the later crops of every pair (a miss enters as a black
    image the size of its reference). None without pairs."""
    if not consistency.pairs:
        return None
    references = [p.reference for p in consistency.pairs]
    later = [p.later if p.later is not None else black_like(p.reference) for p in consistency.pairs]
    return frechet_distance(features(references), features(later))


def tis_prompt(background: str, phrases: list[str], quirks: bool = False) -> str:
    """The text TIS compares with. The original builds "<background> with p1,p2," (trailing comma)."""
    if quirks:
        return f"{background} with " + "".join(f"{p}," for p in phrases)
    joined = ", ".join(phrases)
    return f"{background} with {joined}" if background and joined else background or joined


def dialogue_tis(turn_scores: list[float], quirks: bool = False, turns_in_dialogue: int = 4) -> float | None:
    """Mean TIS over the dialogue's drawn turns; the original divides the sum by 4 whatever was drawn."""
    if quirks:
        return sum(turn_scores) / turns_in_dialogue
    return float(np.mean(turn_scores)) if turn_scores else None
