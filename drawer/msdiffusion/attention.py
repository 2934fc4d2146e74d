"""MS-Diffusion's multi-subject cross-attention, as processors on top of the drawer's own stack.

Every `attn2` gets an `MSCrossAttnProcessor`: the drawer's ParallelCrossAttnProcessor (so the text branch is
whatever the turn's other mechanisms make it: plain text attention by default, Parallel-UNet regional rows,
ConsiStory's recording) plus MS-Diffusion's image branch, fed per render through the `msdiffusion` keyword
(an `MSDiffusionContext`, drawer.msdiffusion.context). The image branch, on the conditional rows only:

- keys/values: the layer's own `to_k_ms` / `to_v_ms` (the adapter's `to_k_ip` / `to_v_ip`) over
  [dummy tokens, subject 1's tokens, …, subject n's tokens];
- logits get a bias of −10000 wherever a token may not be attended to: subject i's tokens outside its mask,
  the dummy tokens inside any mask; softmax over all image tokens, so background pixels attend to the dummies
  (a sink) and each pixel in a box to the subjects covering it;
- probabilities are scaled per column (subject i's tokens × its scale, dummies × 1) and zeroed on background
  rows, so the background gets no image conditioning and the dummies contribute nothing;
- the result goes through the layer's `to_out` weight (no bias: the text branch's `to_out` already added it)
  and is added to the text branch's output, which equals `to_out(text + image)` as in the published processor.

The unconditional half gets nothing from the image branch: the published model feeds it zero image tokens
(zero values), so its image output is exactly zero and is skipped.

A diffusers `Attention` only passes a processor the `cross_attention_kwargs` its `__call__` names; these
processors name every keyword of the processor they extend plus `msdiffusion`, so mechanisms added to the
stack later reach the extended processor unchanged.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn

from drawer.parallel_attention import ParallelCrossAttnProcessor, SelfAttnProcessor

if TYPE_CHECKING:
    from drawer.msdiffusion.context import MSDiffusionContext

KWARG = "msdiffusion"


def _signature_with(function: Any, extra: str) -> inspect.Signature:
    """`function`'s signature with one more keyword-only parameter `extra` (default None) before **kwargs."""
    params = [p for p in inspect.signature(function).parameters.values() if p.kind != p.VAR_KEYWORD]
    params = [p.replace(kind=p.KEYWORD_ONLY) if p.kind == p.VAR_POSITIONAL else p for p in params]
    params.append(inspect.Parameter(extra, inspect.Parameter.KEYWORD_ONLY, default=None))
    params.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


class MSCrossAttnProcessor(ParallelCrossAttnProcessor):
    """The drawer's cross-attention processor plus MS-Diffusion's per-layer image projections."""

    fast_path = True
    """With plain text attention (no other mechanism active in this call) compute text and image branch in one
    pass sharing the query projection and `to_out`, as the published processor does; otherwise let the
    extended processor compute the text branch and add the image branch to its output."""

    def __init__(self, hidden_size: int, cross_attention_dim: int) -> None:
        super().__init__(hidden_size, cross_attention_dim)
        self.to_k_ms = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ms = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def __call__(  # type: ignore[override]
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        msdiffusion: MSDiffusionContext | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if msdiffusion is None or not isinstance(encoder_hidden_states, torch.Tensor):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if hidden_states.ndim != 3:
            raise RuntimeError("MS-Diffusion's image branch expects [batch, tokens, channels] hidden states")
        if self.fast_path and attention_mask is None and _plain_attention(attn, kwargs) and not self.has_ip:
            return self._text_and_images(attn, hidden_states, encoder_hidden_states, msdiffusion)
        out = super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        images = msdiffusion.images
        query = attn.to_q(hidden_states[-images:])
        image = image_attention(self, attn, query, encoder_hidden_states, msdiffusion)
        image = F.linear(image, attn.to_out[0].weight) / attn.rescale_output_factor
        return torch.cat([out[:-images], out[-images:] + image.to(out.dtype)], dim=0)

    __call__.__signature__ = _signature_with(ParallelCrossAttnProcessor.__call__, KWARG)  # type: ignore[attr-defined]

    def _text_and_images(
        self, attn: Attention, hidden_states: torch.Tensor, text: torch.Tensor, context: MSDiffusionContext
    ) -> torch.Tensor:
        """Plain text attention (as AttnProcessor2_0) plus the image branch on the conditional rows."""
        rows = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        encoder = attn.norm_encoder_hidden_states(text) if attn.norm_cross else text
        key, value = attn.to_k(encoder), attn.to_v(encoder)
        heads = attn.heads
        head_dim = key.shape[-1] // heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(rows, -1, heads, head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(query), split(key), split(value), dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(rows, -1, heads * head_dim).to(query.dtype)
        images = context.images
        image = image_attention(self, attn, query[-images:], text, context)
        out = torch.cat([out[:-images], out[-images:] + image.to(out.dtype)], dim=0)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def _plain_attention(attn: Attention, kwargs: dict[str, Any]) -> bool:
    """Whether the extended processor would run plain text attention: no spatial/group norm, the regional
    layout absent or inactive, and no other mechanism's context in this call."""
    if attn.spatial_norm is not None or attn.group_norm is not None:
        return False
    layout = kwargs.get("layout")
    if layout is not None and getattr(layout, "active", True):
        return False
    return all(value is None for key, value in kwargs.items() if key not in ("layout", "scale"))


class MSSelfAttnProcessor(SelfAttnProcessor):
    """The drawer's self-attention processor, accepting (and ignoring) the `msdiffusion` keyword."""

    def __call__(  # type: ignore[override]
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        msdiffusion: MSDiffusionContext | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

    __call__.__signature__ = _signature_with(SelfAttnProcessor.__call__, KWARG)  # type: ignore[attr-defined]


def image_attention(
    processor: MSCrossAttnProcessor,
    attn: Attention,
    query: torch.Tensor,
    text: torch.Tensor,
    context: MSDiffusionContext,
) -> torch.Tensor:
    """The image branch of the conditional rows, before `to_out`: [images, tokens, inner] from their projected
    queries [images, tokens, inner]."""
    images, length, inner = query.shape
    heads = attn.heads
    head_dim = inner // heads
    q = query.view(images, length, heads, head_dim).transpose(1, 2)
    key, value = context.image_kv(processor, attn)
    k = key.view(1, -1, heads, head_dim).transpose(1, 2)
    v = value.view(1, -1, heads, head_dim).transpose(1, 2)

    layer = id(attn)
    masks = context.masks(layer, length)
    if context.records_text_maps:
        context.record_text_map(layer, _text_probabilities(attn, q, text[-images:], heads, head_dim), length)
    logits = (q @ k.transpose(-2, -1)) * head_dim**-0.5 + context.bias(masks).to(q.dtype)
    probs = torch.softmax(logits.float(), dim=-1).to(q.dtype)  # [images, heads, length, tokens]
    background = context.background(masks).to(q.dtype)  # [length]
    weights = probs * context.column_scale.to(q.dtype) * (1.0 - background)[:, None]
    out = (weights @ v).transpose(1, 2).reshape(images, length, inner)
    context.observe(layer, masks, probs, out)
    return out


def _text_probabilities(
    attn: Attention, q: torch.Tensor, text: torch.Tensor, heads: int, head_dim: int
) -> torch.Tensor:
    """The conditional rows' text cross-attention probabilities [images, heads, length, text tokens]."""
    if attn.norm_cross:
        text = attn.norm_encoder_hidden_states(text)
    k = attn.to_k(text).view(text.shape[0], -1, heads, head_dim).transpose(1, 2)
    return torch.softmax(((q @ k.transpose(-2, -1)) * head_dim**-0.5).float(), dim=-1)
