"""Text and reference-image conditioning, computed once per turn with the pipeline's own encoders.

Every prompt row goes through the pipeline's `encode_prompt`, so SD1.5 and SDXL (two encoders, pooled
embeddings) are handled by diffusers itself and the pooled embeddings always stay in the same order as the
sequence embeddings (the fix of AutoStudio's SDXL ordering bug, notes §6.10).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline
from PIL import Image


@dataclass
class TextRows:
    """Conditional and negative embeddings of a list of prompts, row i ↔ prompt i."""

    embeds: torch.Tensor
    negative: torch.Tensor
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None

    def select(self, rows: list[int]) -> TextRows:
        index = torch.tensor(rows, device=self.embeds.device, dtype=torch.long)
        return TextRows(
            embeds=self.embeds.index_select(0, index),
            negative=self.negative.index_select(0, index),
            pooled=None if self.pooled is None else self.pooled.index_select(0, index),
            negative_pooled=None if self.negative_pooled is None else self.negative_pooled.index_select(0, index),
        )

    def pipeline_kwargs(self) -> dict[str, torch.Tensor]:
        kwargs = {"prompt_embeds": self.embeds, "negative_prompt_embeds": self.negative}
        if self.pooled is not None and self.negative_pooled is not None:
            kwargs["pooled_prompt_embeds"] = self.pooled
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled
        return kwargs


def is_sdxl(pipe: DiffusionPipeline) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None or hasattr(pipe, "tokenizer_2")


def encode_texts(pipe: DiffusionPipeline, prompts: list[str], negatives: list[str]) -> TextRows:
    """Encode prompts and their negatives (same length) in one call of the pipeline's own encoder (through the
    live-canvas cache when one is on, drawer/live_canvas.py)."""
    from drawer.live_canvas import active_cache

    cache = active_cache()
    if cache is not None:
        return cache.texts(pipe, prompts, negatives, _encode_texts)
    return _encode_texts(pipe, prompts, negatives)


@torch.no_grad()
def _encode_texts(pipe: DiffusionPipeline, prompts: list[str], negatives: list[str]) -> TextRows:
    device = pipe._execution_device
    if is_sdxl(pipe):
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompts,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=negatives,
        )
        return TextRows(embeds=embeds, negative=negative, pooled=pooled, negative_pooled=negative_pooled)
    embeds, negative = pipe.encode_prompt(
        prompts, device, 1, do_classifier_free_guidance=True, negative_prompt=negatives
    )
    return TextRows(embeds=embeds, negative=negative)


def has_ip_adapter(pipe: DiffusionPipeline) -> bool:
    return getattr(pipe.unet, "encoder_hid_proj", None) is not None


@dataclass
class ReferenceEmbeds:
    """Image embeddings of k reference images for one IP-Adapter: [1, k, …] conditional and negative."""

    positive: torch.Tensor
    negative: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.positive.shape[1])

    def pipeline_embeds(self, guided: bool) -> list[torch.Tensor]:
        """The `ip_adapter_image_embeds` argument: [negative; positive] with guidance, else positive."""
        if guided:
            return [torch.cat([self.negative, self.positive], dim=0)]
        return [self.positive]


def encode_references(pipe: DiffusionPipeline, images: list[Image.Image]) -> ReferenceEmbeds:
    """Encode reference images with the pipeline's image encoder (one batch). With no image, a white
    placeholder keeps the UNet's IP projection fed; the attention processors never read it. Through the
    live-canvas cache when one is on."""
    from drawer.live_canvas import active_cache

    cache = active_cache()
    if cache is not None:
        return cache.references(pipe, images, _encode_references)
    return _encode_references(pipe, images)


@torch.no_grad()
def _encode_references(pipe: DiffusionPipeline, images: list[Image.Image]) -> ReferenceEmbeds:
    if not images:
        images = [Image.new("RGB", (64, 64), (255, 255, 255))]
    (embeds,) = pipe.prepare_ip_adapter_image_embeds(
        ip_adapter_image=[images],
        ip_adapter_image_embeds=None,
        device=pipe._execution_device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
    )
    negative, positive = embeds.chunk(2)
    return ReferenceEmbeds(positive=positive, negative=negative)
