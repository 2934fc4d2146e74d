"""Per-subject reference controls (the knobs users expect from IP-Adapter tools) and the global style
reference: the vocabulary shared by plans, subject memory, the API, the SDK and the drawer
(docs/reference_controls.md).

Every field is optional where it is set (a plan item, a subject in memory): None means "not set here". The
effective value for a subject is the plan item's, else the subject memory's, else the default
(`resolve_controls`). The defaults leave a draw exactly as it was before these controls existed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, FiniteFloat

from studio.text import Text

ReferenceCombine = Literal["average", "tokens"]
"""How several reference images of one subject condition it: `average` the image embeddings into one
reference (the subject keeps the token count of one image), or `tokens`: every image's tokens side by side
under one softmax (k images → k times the tokens)."""

MAX_SUBJECT_REFERENCES = 8
"""At most this many reference images per subject (the first plus seven more)."""

DEFAULT_REFERENCE_SCALE = 1.0
DEFAULT_REFERENCE_WINDOW: tuple[float, float] = (0.0, 1.0)
DEFAULT_REFERENCE_COMBINE: ReferenceCombine = "average"


def _check_window(window: tuple[float, float]) -> tuple[float, float]:
    start, end = window
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"needs 0 <= start < end <= 1 (fractions of the denoising steps), got [{start}, {end}]")
    return window


ReferenceScale = Annotated[FiniteFloat, Field(ge=0.0, le=5.0)]
"""Multiplier of a subject's image rows (on top of `img_scale` and its box share); 0 turns them off."""

_Fraction = Annotated[FiniteFloat, Field(ge=0.0, le=1.0)]
ReferenceWindow = Annotated[tuple[_Fraction, _Fraction], AfterValidator(_check_window)]
"""[start, end): the fractions of the denoising steps during which a subject's image rows are on. Step i of
n is inside when start <= i / n < end; (0, 1) is every step."""


class ReferenceControls(BaseModel):
    """The effective controls of one subject's reference rows."""

    reference_scale: ReferenceScale = DEFAULT_REFERENCE_SCALE
    reference_window: ReferenceWindow = DEFAULT_REFERENCE_WINDOW
    reference_combine: ReferenceCombine = DEFAULT_REFERENCE_COMBINE

    @property
    def is_default(self) -> bool:
        return (
            self.reference_scale == DEFAULT_REFERENCE_SCALE
            and tuple(self.reference_window) == DEFAULT_REFERENCE_WINDOW
            and self.reference_combine == DEFAULT_REFERENCE_COMBINE
        )


CONTROL_FIELDS = ("reference_scale", "reference_window", "reference_combine")


def resolve_controls(*layers: object) -> ReferenceControls:
    """The effective controls: for each field the first layer (plan item, subject memory, …) that sets it
    (not None), else the default. Layers are any objects with the three optional attributes."""
    values: dict[str, object] = {}
    for name in CONTROL_FIELDS:
        for layer in layers:
            value = getattr(layer, name, None) if layer is not None else None
            if value is not None:
                values[name] = value
                break
    return ReferenceControls.model_validate(values)


class StyleReferenceSettings(BaseModel):
    """A global style reference: one image whose IP-Adapter tokens condition the whole canvas at `scale`, on
    every step, through the same attention processors as the subject rows. Set per session (session settings)
    or per turn (the turn's settings). `image_id` names an image of the session's tenant (an upload through
    `POST /v1/sessions/{id}/style-reference`, or any picture of the session)."""

    image_id: Text | None = Field(default=None, min_length=1, max_length=200, description="image-store id")
    scale: FiniteFloat = Field(default=0.5, ge=0.0, le=2.0, description="IP-Adapter scale of the style reference")
