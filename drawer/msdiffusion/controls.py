"""The reference controls (docs/reference_controls.md) on MS-Diffusion's image branch: per subject its
`reference_scale` (a factor on the subject's `subject_scales` entry), its step window (the context's
`subject_active` hook), and several references combined as `average` (mean of the subject's resampler
tokens) or `tokens` (every reference's tokens side by side in the subject's box)."""

from __future__ import annotations

import torch

from drawer.msdiffusion.context import SubjectActive
from studio.reference_controls import ReferenceControls


def combine_tokens(tokens: torch.Tensor, controls: ReferenceControls) -> torch.Tensor:
    """[k, num_queries, width] tokens of one subject's k references (each through the grounding resampler,
    grounded on the subject's phrase and box) → the subject's tokens: their mean ([num_queries, width]) for
    `average`, all of them ([k × num_queries, width]) for `tokens`. One reference: its tokens unchanged."""
    if tokens.shape[0] > 1 and controls.reference_combine == "average":
        return tokens.mean(dim=0)
    return tokens.reshape(-1, tokens.shape[-1])


def subject_scales(scale: float, controls: list[ReferenceControls]) -> list[float] | None:
    """Each subject's image-branch strength: the preset's `scale` × its `reference_scale` (None: all default)."""
    if all(c.reference_scale == 1.0 for c in controls):
        return None
    return [scale * float(c.reference_scale) for c in controls]


def window_hook(controls: list[ReferenceControls], steps: int) -> SubjectActive | None:
    """Subject i conditions step s when start <= s / steps < end of its window (None: every window is full)."""
    windows = [tuple(c.reference_window) for c in controls]
    if all(w == (0.0, 1.0) for w in windows):
        return None

    def active(step: int, subject: int) -> bool:
        start, end = windows[subject]
        return start <= step / steps < end

    return active
