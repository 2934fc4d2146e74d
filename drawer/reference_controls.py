"""Reference controls for every backend with image rows (docs/reference_controls.md).

One module, four jobs, each callable by any backend:

- `step_scale(controls, step, steps)`: a subject's image-row multiplier at a step (its `reference_scale`
  inside its step window, 0 outside);
- `SubjectReferences.encode(pipe)`: several reference images per subject, combined by averaging their image
  embeddings (one slot) or kept as several slots whose tokens a row reads side by side (`tokens`);
- `install(pipe, batch, stack)`: the per-render part for the Parallel-UNet backend: rows of `tokens` subjects
  read all their slots (RowGroup.image_sources), and a step listener rewrites the image rows' weights at each
  step (base weight × step_scale), so the processors receive the controlled weights through the `layout`
  context and no processor changes;
- the global style reference: one image over the whole canvas at its own scale, laid out in the one
  `ip_adapter_image_embeds` tensor after the subject references and the GRCA frames, and attended to with
  the GRCA code (`GlobalReferenceContext`); with GRCA on as well, both go through `CanvasReferences`.

With no control set (one image per subject, scale 1, window [0, 1), no style image) `install` does nothing
and `encode` returns exactly what `encode_references` returns, so default outputs are unchanged bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from PIL import Image

from drawer.conditioning import ReferenceEmbeds, encode_references
from drawer.mechanisms.global_reference import KWARG as CANVAS_KWARG
from drawer.mechanisms.global_reference import GlobalReferenceContext, stock_ip_branches, with_global_frames
from drawer.parallel_attention import LAYOUT_KWARG, RegionalContext, RowGroup
from studio.draw import DrawJob
from studio.reference_controls import ReferenceControls, resolve_controls

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from drawer.mechanisms import AttentionStack
    from drawer.render import RenderBatch

Encoder = Callable[["DiffusionPipeline", list[Image.Image]], ReferenceEmbeds]

DEFAULT_CONTROLS = ReferenceControls()


def step_scale(controls: ReferenceControls, step: int, steps: int) -> float:
    """The multiplier of a subject's image rows at denoising step `step` (0-based) of `steps`: its
    `reference_scale` when start <= step / steps < end, else 0."""
    start, end = controls.reference_window
    inside = start <= step / steps < end
    return float(controls.reference_scale) if inside else 0.0


# --- several references per subject -------------------------------------------------------------------


@dataclass
class ReferencePlan:
    """Where each subject's references sit among the encoded slots, and its controls. Keyed by the subject's
    first slot, which is the `reference_index` its image rows carry."""

    slots: dict[int, list[int]] = field(default_factory=dict)
    controls: dict[int, ReferenceControls] = field(default_factory=dict)

    def controls_of(self, first_slot: int) -> ReferenceControls:
        return self.controls.get(first_slot, DEFAULT_CONTROLS)

    @property
    def has_token_slots(self) -> bool:
        return any(len(slots) > 1 for slots in self.slots.values())

    @property
    def scales_vary(self) -> bool:
        return any(
            c.reference_scale != DEFAULT_CONTROLS.reference_scale
            or tuple(c.reference_window) != DEFAULT_CONTROLS.reference_window
            for c in self.controls.values()
        )

    @property
    def is_trivial(self) -> bool:
        return not self.has_token_slots and not self.scales_vary


@dataclass
class SubjectReferences:
    """Each referenced subject's images (in order: its main reference first) and its effective controls."""

    images: dict[str, list[Image.Image]] = field(default_factory=dict)
    controls: dict[str, ReferenceControls] = field(default_factory=dict)

    def add(self, subject_id: str, images: list[Image.Image]) -> None:
        self.images.setdefault(subject_id, []).extend(images)

    @property
    def subject_ids(self) -> list[str]:
        return list(self.images)

    def encode(
        self, pipe: DiffusionPipeline, encoder: Encoder = encode_references
    ) -> tuple[ReferenceEmbeds, dict[str, int], ReferencePlan]:
        """Encode every image in one batch, then combine per subject. Returns the embeddings (one slot per
        `average` subject, one per image for a `tokens` subject), each subject's first slot (its
        `reference_index`) and the render's ReferencePlan."""
        order = [(sid, image) for sid, images in self.images.items() for image in images]
        encoded = encoder(pipe, [image for _, image in order])
        positive, negative = [], []
        first: dict[str, int] = {}
        plan = ReferencePlan()
        at = 0
        for sid, images in self.images.items():
            k = len(images)
            controls = self.controls.get(sid, DEFAULT_CONTROLS)
            slot = len(positive)
            first[sid] = slot
            if k > 1 and controls.reference_combine == "average":
                positive.append(encoded.positive[:, at : at + k].mean(dim=1, keepdim=True))
                negative.append(encoded.negative[:, at : at + k].mean(dim=1, keepdim=True))
                plan.slots[slot] = [slot]
            else:
                positive.extend(encoded.positive[:, i : i + 1] for i in range(at, at + k))
                negative.extend(encoded.negative[:, i : i + 1] for i in range(at, at + k))
                plan.slots[slot] = list(range(slot, slot + k))
            plan.controls[slot] = controls
            at += k
        if not positive or len(positive) == encoded.count:
            # one slot per image (no average taken): the encoder's own tensors, untouched
            return encoded, first, plan
        return ReferenceEmbeds(positive=torch.cat(positive, dim=1), negative=torch.cat(negative, dim=1)), first, plan


# --- the per-render part (Parallel-UNet backend) --------------------------------------------------------


def token_groups(groups: list[RowGroup], plan: ReferencePlan, num_references: int) -> list[RowGroup]:
    """Split image row groups by their subjects' slot count; rows of a `tokens` subject read all its slots
    side by side (RowGroup.image_sources). Groups whose rows all have one slot are returned as they are."""
    out: list[RowGroup] = []
    for group in groups:
        sources = group.source.tolist()
        slot_lists = []
        for source in sources:
            query, first = divmod(source, num_references)
            slot_lists.append([query * num_references + s for s in plan.slots.get(first, [first])])
        if all(len(s) == 1 for s in slot_lists):
            out.append(group)
            continue
        by_count: dict[int, list[int]] = {}
        for r, slots in enumerate(slot_lists):
            by_count.setdefault(len(slots), []).append(r)
        for count, rows in by_count.items():
            index = torch.tensor(rows, dtype=torch.long, device=group.source.device)
            out.append(
                RowGroup(
                    source=group.source.index_select(0, index),
                    tokens={n: t.index_select(0, index) for n, t in group.tokens.items()},
                    weights={n: w.index_select(0, index) for n, w in group.weights.items()},
                    image_sources=None
                    if count == 1
                    else torch.tensor([slot_lists[r] for r in rows], dtype=torch.long, device=group.source.device),
                )
            )
    return out


class ReferenceScheduler:
    """A step listener: before each step, every image row's weights = its base weights × the step_scale of
    the subject it belongs to. Set for step 0 at construction."""

    def __init__(self, context: RegionalContext, plan: ReferencePlan, steps: int) -> None:
        self.context = context
        self.plan = plan
        self.steps = steps
        self._base = [dict(group.weights) for group in context.image_groups]
        self._controls = [
            [plan.controls_of(int(source) % context.num_references) for source in group.source.tolist()]
            for group in context.image_groups
        ]
        self.apply(0)

    def apply(self, step: int) -> None:
        for group, base, controls in zip(self.context.image_groups, self._base, self._controls, strict=True):
            factors = [step_scale(c, step, self.steps) for c in controls]
            for tokens, weight in base.items():
                factor = torch.tensor(factors, dtype=weight.dtype, device=weight.device).view(-1, 1, 1)
                group.weights[tokens] = weight * factor

    def __call__(self, finished_step: int) -> None:
        if finished_step + 1 < self.steps:
            self.apply(finished_step + 1)


# --- the global style reference ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CanvasReferences:
    """Several whole-canvas IP branches (GRCA frames, the style reference), each under its own softmax and
    scale, passed as the one `global_reference` keyword. Same interface as GlobalReferenceContext."""

    parts: tuple[GlobalReferenceContext, ...]

    def stock_with_frames(
        self,
        processor: IPAdapterAttnProcessor2_0,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        text: torch.Tensor,
        image_tokens: torch.Tensor,
        attention_mask: torch.Tensor | None,
        temb: torch.Tensor | None,
    ) -> torch.Tensor:
        """Outside the regional layout: the stock multi-adapter sum, one branch per part."""
        return stock_ip_branches(self.parts, processor, attn, hidden_states, text, image_tokens, attention_mask, temb)

    def add_frames_attention(
        self,
        processor: IPAdapterAttnProcessor2_0,
        flat_query: torch.Tensor,
        batch_rows: int,
        heads: int,
        image_tokens: torch.Tensor,
        out: torch.Tensor,
    ) -> None:
        for part in self.parts:
            part.add_frames_attention(processor, flat_query, batch_rows, heads, image_tokens, out)


def style_first(batch: RenderBatch) -> int:
    """Where the style reference sits among the projected IP tokens: after the subject slots and the frames."""
    assert batch.references is not None
    frames = batch.global_frames.count if batch.global_frames is not None else 0
    return batch.references.count + frames


def with_style(references: ReferenceEmbeds | None, style: ReferenceEmbeds | None) -> ReferenceEmbeds | None:
    """The IP embeddings the pipeline projects, with the style reference appended when there is one."""
    if references is None or style is None:
        return references
    return with_global_frames(references, style)


def install(pipe: DiffusionPipeline, batch: RenderBatch, stack: AttentionStack) -> None:
    """Apply the render's reference plan to the `layout` context and add the style reference's branch."""
    context = stack.kwargs.get(LAYOUT_KWARG)
    plan = batch.reference_plan
    if plan is not None and isinstance(context, RegionalContext) and context.image_groups and not plan.is_trivial:
        if plan.has_token_slots:
            context.image_groups = token_groups(context.image_groups, plan, context.num_references)
        if plan.scales_vary:
            stack.listeners.append(ReferenceScheduler(context, plan, batch.steps))
        stack.installed.append("reference_controls")
    if batch.style_reference is None or batch.references is None or batch.style_scale == 0:
        return
    style = GlobalReferenceContext(first=style_first(batch), count=batch.style_reference.count, scale=batch.style_scale)
    existing = stack.kwargs.get(CANVAS_KWARG)
    if isinstance(existing, GlobalReferenceContext):
        stack.kwargs[CANVAS_KWARG] = CanvasReferences(parts=(existing, style))
    else:
        stack.kwargs[CANVAS_KWARG] = style
    stack.installed.append("style_reference")


# --- from a DrawJob -----------------------------------------------------------------------------------


def job_references(job: DrawJob, main: dict[str, Image.Image]) -> SubjectReferences:
    """Each referenced subject's images (its decoded main reference, then the job's further ones) and every
    planned subject's effective controls: the plan item's, else the job's (the subject memory's), else the
    defaults."""
    from drawer.images import decode_image

    refs = SubjectReferences()
    for sid, image in main.items():
        more = [
            decode_image(data, f"reference image {i + 2} of subject {sid}")
            for i, data in enumerate(job.more_references.get(sid, []))
        ]
        refs.add(sid, [image, *more])
    for item in job.plan.items:
        refs.controls[item.subject_id] = resolve_controls(item, job.reference_controls.get(item.subject_id))
    return refs


def job_style(pipe: DiffusionPipeline, job: DrawJob, encoder: Encoder = encode_references) -> ReferenceEmbeds | None:
    """The style reference's embeddings (None without one, or at scale 0)."""
    from drawer.images import decode_image

    if job.style_reference is None or job.settings.style_reference.scale == 0:
        return None
    return encoder(pipe, [decode_image(job.style_reference, "the style reference image")])
