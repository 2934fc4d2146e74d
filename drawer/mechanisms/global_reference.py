"""Story-Adapter's global reference cross-attention (GRCA): the stock IP-Adapter over every frame of the
previous round, all frames' image tokens under one softmax, added to the text attention of every
cross-attention layer at `settings.global_reference.scale`. No new weights.

The frames are encoded with the pipeline's own image encoder (global image embeddings: 4 tokens per frame for
the plain IP-Adapter, the resampler's tokens for Plus) and appended after the subject references in the one
`ip_adapter_image_embeds` tensor the pipeline projects; the context says where they start, so the regional
image rows and GRCA read disjoint slices of the same projected tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

from drawer.conditioning import ReferenceEmbeds

if TYPE_CHECKING:
    from drawer.mechanisms import AttentionStack
    from drawer.render import RenderBatch

KWARG = "global_reference"


@dataclass(frozen=True)
class GlobalReferenceContext:
    """Where the global frames sit among the projected IP tokens ([rows, images, tokens, C]) and their scale."""

    first: int
    count: int
    scale: float

    def tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return image_tokens[:, self.first : self.first + self.count]

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
        """Text attention plus GRCA outside the regional layout: diffusers' own IP-Adapter processor, fed with
        the frames only, at the GRCA scale (so it is the stock multi-image IP-Adapter, bit for bit)."""
        with _ip_scale(processor, self.scale):
            return IPAdapterAttnProcessor2_0.__call__(
                processor, attn, hidden_states, (text, [self.tokens(image_tokens)]), attention_mask, temb
            )

    def add_frames_attention(
        self,
        processor: IPAdapterAttnProcessor2_0,
        flat_query: torch.Tensor,
        batch_rows: int,
        heads: int,
        image_tokens: torch.Tensor,
        out: torch.Tensor,
    ) -> None:
        """GRCA inside the regional layout: every query token of row r attends to row r's frames (one softmax
        over all of them), scaled and added to the pre-`to_out` sum `out` [rows·L, C]."""
        if self.scale == 0:
            return
        frames = self.tokens(image_tokens)
        frames = frames.reshape(frames.shape[0], -1, frames.shape[-1])
        key, value = processor.to_k_ip[0](frames), processor.to_v_ip[0](frames)
        length = flat_query.shape[0] // batch_rows
        query = flat_query.view(batch_rows, length, heads, -1).transpose(1, 2)
        key = key.view(batch_rows, -1, heads, query.shape[-1]).transpose(1, 2)
        value = value.view(batch_rows, -1, heads, query.shape[-1]).transpose(1, 2)
        result = torch.nn.functional.scaled_dot_product_attention(query, key, value)
        result = result.transpose(1, 2).reshape(batch_rows * length, -1)
        out.add_(self.scale * result.to(out.dtype))


def with_global_frames(subjects: ReferenceEmbeds, frames: ReferenceEmbeds) -> ReferenceEmbeds:
    """One IP embedding tensor: the subject references first, then the frames."""
    return ReferenceEmbeds(
        positive=torch.cat([subjects.positive, frames.positive], dim=1),
        negative=torch.cat([subjects.negative, frames.negative], dim=1),
    )


@contextmanager
def _ip_scale(processor: IPAdapterAttnProcessor2_0, scale: float) -> Iterator[None]:
    saved = processor.scale
    processor.scale = [scale]
    try:
        yield
    finally:
        processor.scale = saved


def pipeline_references(subjects: ReferenceEmbeds | None, frames: ReferenceEmbeds | None) -> ReferenceEmbeds | None:
    """The IP embeddings the pipeline projects: the subject references, then the frames when there are any."""
    if subjects is None or frames is None:
        return subjects
    return with_global_frames(subjects, frames)


def install(pipe: object, batch: RenderBatch, stack: AttentionStack) -> None:
    if "global_reference" not in batch.mechanisms or batch.global_frames is None or batch.references is None:
        return
    stack.kwargs[KWARG] = GlobalReferenceContext(
        first=batch.references.count, count=batch.global_frames.count, scale=batch.global_scale
    )
    stack.installed.append("global_reference")
