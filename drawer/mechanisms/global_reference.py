"""Story-Adapter's global reference cross-attention (GRCA): the stock IP-Adapter over every frame of the
previous round, all frames' image tokens under one softmax, added to the text attention of every
cross-attention layer at `settings.global_reference.scale`. No new weights.

The frames are encoded with the pipeline's own image encoder (global image embeddings: 4 tokens per frame for
the plain IP-Adapter, the resampler's tokens for Plus) and appended after the subject references in the one
`ip_adapter_image_embeds` tensor the pipeline projects; the context says where they start, so the regional
image rows and GRCA read disjoint slices of the same projected tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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
    """Where the global frames sit among the projected IP tokens ([rows, images, tokens, C]) and their scale.

    The frames' image tokens are the same at every step of a render, so each layer projects them through
    `to_k_ip` / `to_v_ip` once and keeps the keys and values here (`cache_kv`); a context serves one render."""

    first: int
    count: int
    scale: float
    cache_kv: bool = True
    _kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, compare=False, repr=False)

    def tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return image_tokens[:, self.first : self.first + self.count]

    def frames_kv(
        self, processor: IPAdapterAttnProcessor2_0, frames: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames' keys and values through the layer's IP projections, projected once per layer."""
        cached = self._kv.get(id(processor))
        if cached is not None and cached[0].shape[:-1] == frames.shape[:-1]:
            return cached
        kv = (processor.to_k_ip[0](frames), processor.to_v_ip[0](frames))
        if self.cache_kv:
            self._kv[id(processor)] = kv
        return kv

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
        the frames only, at the GRCA scale (so it is the stock multi-image IP-Adapter, bit for bit). It runs on
        a stand-in for the processor whose IP projections return the layer's cached keys and values."""
        return stock_ip_branches([self], processor, attn, hidden_states, text, image_tokens, attention_mask, temb)

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
        key, value = self.frames_kv(processor, frames)
        length = flat_query.shape[0] // batch_rows
        query = flat_query.view(batch_rows, length, heads, -1).transpose(1, 2)
        key = key.view(batch_rows, -1, heads, query.shape[-1]).transpose(1, 2)
        value = value.view(batch_rows, -1, heads, query.shape[-1]).transpose(1, 2)
        result = torch.nn.functional.scaled_dot_product_attention(query, key, value)
        result = result.transpose(1, 2).reshape(batch_rows * length, -1)
        out.add_(self.scale * result.to(out.dtype))


class _Projected:
    """A stand-in IP projection returning precomputed outputs (the frames' cached keys or values)."""

    def __init__(self, output: torch.Tensor) -> None:
        self.output = output

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return self.output


@dataclass
class _ProjectedBranches:
    """What diffusers' IPAdapterAttnProcessor2_0.__call__ reads from its processor (`num_tokens`, `scale`,
    `to_k_ip`, `to_v_ip`): one branch per whole-canvas context, its keys and values already projected."""

    num_tokens: list[int]
    scale: list[float]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def to_k_ip(self) -> list[_Projected]:
        return [_Projected(key) for key in self.keys]

    @property
    def to_v_ip(self) -> list[_Projected]:
        return [_Projected(value) for value in self.values]


def stock_ip_branches(
    parts: Sequence[GlobalReferenceContext],
    processor: IPAdapterAttnProcessor2_0,
    attn: torch.nn.Module,
    hidden_states: torch.Tensor,
    text: torch.Tensor,
    image_tokens: torch.Tensor,
    attention_mask: torch.Tensor | None,
    temb: torch.Tensor | None,
) -> torch.Tensor:
    """Text attention plus one IP branch per whole-canvas context (GRCA's frames, the style reference), each
    under its own softmax and scale: diffusers' own IP-Adapter processor run on a stand-in whose projections
    return each context's cached keys and values (the layer's one `to_k_ip`/`to_v_ip` served every branch),
    so the result is the stock multi-adapter sum, bit for bit. The processor itself is never changed."""
    tokens = [part.tokens(image_tokens) for part in parts]
    projected = [part.frames_kv(processor, part_tokens) for part, part_tokens in zip(parts, tokens, strict=True)]
    stand_in = _ProjectedBranches(
        processor.num_tokens, [part.scale for part in parts], [k for k, _ in projected], [v for _, v in projected]
    )
    return IPAdapterAttnProcessor2_0.__call__(  # type: ignore[arg-type]
        stand_in, attn, hidden_states, (text, tokens), attention_mask, temb
    )


def with_global_frames(subjects: ReferenceEmbeds, frames: ReferenceEmbeds) -> ReferenceEmbeds:
    """One IP embedding tensor: the subject references first, then the frames."""
    return ReferenceEmbeds(
        positive=torch.cat([subjects.positive, frames.positive], dim=1),
        negative=torch.cat([subjects.negative, frames.negative], dim=1),
    )


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
