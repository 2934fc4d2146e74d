"""A turn's MS-Diffusion inputs: the referenced subjects' image tokens (encoder → grounding resampler), their
normalised boxes and their phrase token positions, computed once per turn before denoising."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import DiffusionPipeline
from PIL import Image
from transformers import CLIPImageProcessor

from drawer.msdiffusion.controls import combine_tokens
from drawer.msdiffusion.weights import MSAdapter, adapter_of
from studio.draw import DrawJob
from studio.msdiffusion_settings import MSDiffusionSettings
from studio.reference_controls import ReferenceControls

Xyxy = tuple[float, float, float, float]


@dataclass
class MSDiffusionInputs:
    """The render's image tokens [dummies, subject 1 × num_queries, …] and each subject's box and phrase."""

    subject_ids: list[str]
    tokens: torch.Tensor
    boxes: list[Xyxy]
    phrase_tokens: list[list[int]]
    num_dummy: int
    num_queries: int
    settings: MSDiffusionSettings
    controls: list[ReferenceControls] = field(default_factory=list)
    """Each subject's effective reference controls (docs/reference_controls.md); empty: all default."""
    token_counts: list[int] | None = None
    """Image tokens per subject when a subject keeps several references as `tokens`; None: num_queries each."""


def _clip01(value: float) -> float:
    return min(max(value, 0.0), 1.0)


@torch.no_grad()
def subject_tokens(
    pipe: DiffusionPipeline,
    adapter: MSAdapter,
    images: list[Image.Image],
    phrases: list[str],
    boxes: list[Xyxy],
    drop_grounding: bool | list[bool] = False,
) -> torch.Tensor:
    """[n, num_queries, cross-attention width]: each reference through the image encoder's penultimate hidden
    states and the grounding resampler, its queries grounded on (phrase, box) unless dropped."""
    device, dtype = pipe._execution_device, pipe.unet.dtype
    processor = getattr(pipe, "feature_extractor", None) or CLIPImageProcessor()
    encoder = pipe.image_encoder
    pixels = processor(images=[image.convert("RGB") for image in images], return_tensors="pt").pixel_values
    features = encoder(pixels.to(device=device, dtype=encoder.dtype), output_hidden_states=True).hidden_states[-2]
    tokenizer = pipe.tokenizer
    ids = tokenizer(
        phrases, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    phrase_embeds = pipe.text_encoder(ids.to(device)).pooler_output
    drops = drop_grounding if isinstance(drop_grounding, list) else [drop_grounding] * len(images)
    adapter.to(device=device, dtype=dtype)
    return adapter.resampler(
        features.to(dtype),
        phrase_embeds.to(dtype),
        torch.tensor(boxes, device=device, dtype=dtype),
        torch.tensor(drops, device=device, dtype=torch.bool),
    )


def msdiffusion_inputs(
    pipe: DiffusionPipeline, job: DrawJob, references: dict[str, Image.Image]
) -> MSDiffusionInputs | None:
    """The turn's inputs on an MS-Diffusion pipeline when `subject_reference` is on and a planned subject has a
    reference; None otherwise (no image branch: subjects without a reference get no image conditioning)."""
    adapter = adapter_of(pipe)
    settings = job.settings
    if adapter is None or "subject_reference" not in settings.mechanisms:
        return None
    from drawer.batches import scene_prompt
    from drawer.mechanisms.shared_attention import prompt_token_positions
    from drawer.reference_controls import job_references

    plan = job.plan
    items = [item for item in plan.items if item.subject_id in references]
    if not items:
        return None
    subject_refs = job_references(job, references)  # main reference first, then the job's further ones
    boxes = [tuple(_clip01(v) for v in item.box.normalized(plan.height, plan.width)) for item in items]
    phrases = [item.detection_name for item in items]
    images = [subject_refs.images[item.subject_id] for item in items]
    encoded = subject_tokens(
        pipe,
        adapter,
        [picture for pictures in images for picture in pictures],
        [phrase for phrase, pictures in zip(phrases, images, strict=True) for _ in pictures],
        [box for box, pictures in zip(boxes, images, strict=True) for _ in pictures],  # type: ignore[misc]
        settings.msdiffusion.drop_grounding,
    )
    controls = [subject_refs.controls[item.subject_id] for item in items]
    per_subject, at = [], 0
    for pictures, control in zip(images, controls, strict=True):
        per_subject.append(combine_tokens(encoded[at : at + len(pictures)], control))
        at += len(pictures)
    counts = [t.shape[0] for t in per_subject]
    num_queries = adapter.config.num_queries
    prompt = scene_prompt(plan, plan.items)
    dummy = adapter.dummy_image_tokens[0].to(encoded.dtype)
    return MSDiffusionInputs(
        subject_ids=[item.subject_id for item in items],
        tokens=torch.cat([dummy, *per_subject]),
        boxes=boxes,  # type: ignore[arg-type]
        phrase_tokens=[prompt_token_positions(pipe, prompt, phrase) for phrase in phrases],
        num_dummy=adapter.num_dummy,
        num_queries=num_queries,
        settings=settings.msdiffusion,
        controls=controls,
        token_counts=None if all(c == num_queries for c in counts) else counts,
    )
