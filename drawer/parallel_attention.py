"""Parallel-UNet: regional cross-attention processors for every `attn2`, fed through `cross_attention_kwargs`.

Per call the processor gets one keyword, `layout` (a RegionalContext built once per turn). With it:

- text branch: the query attends separately to every prompt row (the pipeline's negative and global rows,
  plus background and subject rows from the context) through the layer's frozen `to_k` / `to_v`; the row
  outputs are weighted per token by the layout weights and summed per image;
- image branch: the IP-Adapter's `to_k_ip` / `to_v_ip` attend to each referenced subject's image tokens
  (from the UNet's own IP projection), weighted by img_scale · box share; unreferenced subjects have no row
  (so no IP output at all there, in the conditional and the unconditional half alike, notes §6.9).

The query projection and `to_out` run once per layer. Rows are batched into at most two
scaled-dot-product-attention calls per branch, whatever the number of subjects: "dense" rows (negative,
background) attend from every token, "sparse" rows (global, subjects, references) only from the tokens where
their weight is non-zero, so a subject costs in proportion to its box area. The region rows' keys and values
are projected once per layer and turn and cached in the context.

With `layout.active` False (after `refine_step`), the processor is plain attention on the pipeline's own
prompt rows with no image branch. Without `layout` it behaves exactly like
diffusers' IPAdapterAttnProcessor2_0 (or AttnProcessor2_0 for a model without IP-Adapter).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0

from drawer.layout_masks import Grid, layout_weights
from drawer.live_canvas import layout_coverages
from drawer.region_masks import negative_weights

if TYPE_CHECKING:
    from drawer.mechanisms.global_reference import GlobalReferenceContext
    from drawer.mechanisms.shared_attention import SharedAttentionContext
from studio.geometry import Box

LAYOUT_KWARG = "layout"


@dataclass
class RegionImage:
    """One image of the batch: its subjects' boxes, the rows of `region_text` holding its background and
    subject prompts, and the index of each subject's reference among the encoded references (or None)."""

    boxes: list[Box]
    background_row: int
    subject_rows: list[int]
    reference_index: list[int | None]
    masks: list[torch.Tensor | None] | None = None
    """Regions: each subject's soft canvas weights [H, W] (None: its box), drawer.region_masks."""
    negative_rows: list[int | None] | None = None
    """Regions: the `region_text` row of each subject's own negative prompt (None: the pipeline's)."""
    region_keys: list[Hashable] | None = None
    """Live canvas: each subject's region cache key (drawer.live_canvas.region_key); None: weights not cached."""


@dataclass
class _Rows:
    query: list[int] = field(default_factory=list)
    source: list[int] = field(default_factory=list)
    weights: list[list[torch.Tensor]] = field(default_factory=list)

    def add(self, query: int, source: int, weights: list[torch.Tensor]) -> None:
        if all(bool((w == 0).all()) for w in weights):
            return
        self.query.append(query)
        self.source.append(source)
        self.weights.append(weights)


@dataclass
class RowGroup:
    """Attention rows computed in one batched call. Row r attends from the tokens `tokens[L][r]` (flat indices
    into the batch's B·L query tokens, padded with weight-0 entries) to the keys of source `source[r]`, and its
    output is added back to those tokens with weights `weights[L][r]`; L is the layer's token count."""

    source: torch.Tensor
    tokens: dict[int, torch.Tensor]
    weights: dict[int, torch.Tensor]
    image_sources: torch.Tensor | None = None
    """Image rows only: [R, k] sources per row when a subject's k references are read side by side as more
    tokens (drawer.reference_controls); None: one source per row, `source`."""

    def select_sources(self, flat: torch.Tensor) -> torch.Tensor:
        """The rows' key/value inputs from `flat` [N, T, C]: [R, T, C], or [R, k·T, C] with `image_sources`."""
        if self.image_sources is None:
            return flat.index_select(0, self.source)
        rows, k = self.image_sources.shape
        return flat.index_select(0, self.image_sources.flatten()).reshape(rows, k * flat.shape[1], *flat.shape[2:])

    def at(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return self.tokens[tokens], self.weights[tokens]
        except KeyError:
            raise RuntimeError(
                f"no layout weights for an attention map of {tokens} tokens (known: {sorted(self.tokens)})"
            ) from None


DENSE_FRACTION = 0.5
"""A row whose weights are non-zero on more than this fraction of the finest grid attends from every token;
the others attend only from their support (a subject's box), which keeps the cost proportional to box area."""


def _groups(
    rows: _Rows, grids: list[Grid], device: torch.device, dtype: torch.dtype, dense_only: bool
) -> list[RowGroup]:
    if not rows.weights:
        return []
    finest = 0
    dense = [dense_only or bool((w[finest] != 0).float().mean() > DENSE_FRACTION) for w in rows.weights]
    groups = []
    for want_dense in (True, False):
        members = [r for r, d in enumerate(dense) if d == want_dense]
        if not members:
            continue
        tokens: dict[int, torch.Tensor] = {}
        weights: dict[int, torch.Tensor] = {}
        for g, grid in enumerate(grids):
            supports = [
                torch.arange(grid.tokens) if want_dense else torch.nonzero(rows.weights[r][g]).flatten()
                for r in members
            ]
            width = max(1, max(len(s) for s in supports))
            index = torch.zeros(len(members), width, dtype=torch.long)
            value = torch.zeros(len(members), width, dtype=torch.float64)
            for i, (r, support) in enumerate(zip(members, supports, strict=True)):
                index[i, : len(support)] = support + rows.query[r] * grid.tokens
                value[i, : len(support)] = rows.weights[r][g][support]
            tokens[grid.tokens] = index.to(device)
            weights[grid.tokens] = value.to(device=device, dtype=dtype).unsqueeze(-1)
        source = torch.tensor([rows.source[r] for r in members], dtype=torch.long, device=device)
        groups.append(RowGroup(source=source, tokens=tokens, weights=weights))
    return groups


class RegionalContext:
    """Everything the processors need for one turn, on the UNet's device and dtype, built once.

    Text rows take their keys from cat(pipeline prompt rows, region_text); image rows from the flattened
    (batch row, reference) image tokens. The region rows' keys and values are constant for the whole
    denoising, so each layer projects them once and keeps them here (`cache_region_kv`)."""

    def __init__(
        self,
        region_text: torch.Tensor,
        text_groups: list[RowGroup],
        image_groups: list[RowGroup],
        num_references: int,
        cache_region_kv: bool = True,
    ) -> None:
        self.region_text = region_text
        self.text_groups = text_groups
        self.image_groups = image_groups
        self.num_references = num_references
        self.cache_region_kv = cache_region_kv
        self.active = True
        self._region_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def has_image_rows(self) -> bool:
        return bool(self.image_groups)

    def region_kv(self, attn: Attention) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._region_kv.get(id(attn))
        if cached is not None:
            return cached
        region = self.region_text
        if attn.norm_cross:
            region = attn.norm_encoder_hidden_states(region)
        kv = (attn.to_k(region), attn.to_v(region))
        if self.cache_region_kv:
            self._region_kv[id(attn)] = kv
        return kv


def build_regional_context(
    images: list[RegionImage],
    region_text: torch.Tensor,
    *,
    height: int,
    width: int,
    grids: list[Grid],
    fuse_scale: tuple[float, float],
    global_weight: float,
    img_scale: float,
    guided: bool,
    num_references: int,
    sparse: bool = True,
    region_rows: bool = True,
) -> RegionalContext:
    """Lay out the attention rows of a batch and precompute their token sets and weights at every grid.
    Without `region_rows` (the `regional` mechanism off) the text branch is the image's own global prompt row
    everywhere (weight 1); image rows are laid out as usual."""
    batch = len(images)
    offset = batch if guided else 0
    pipeline_rows = 2 * batch if guided else batch
    text, image = _Rows(), _Rows()
    for b, spec in enumerate(images):
        has_ref = [index is not None for index in spec.reference_index]
        coverages = layout_coverages(spec.boxes, spec.masks, spec.region_keys, grids, height, width)
        per_grid = [
            layout_weights(
                spec.boxes, has_ref, grid, height, width, fuse_scale, global_weight, img_scale, coverage=coverage
            )
            for grid, coverage in zip(grids, coverages, strict=True)
        ]
        if guided and spec.negative_rows is not None and any(r is not None for r in spec.negative_rows):
            uncond, negatives = negative_weights(per_grid, spec.negative_rows, grids)
            text.add(b, b, uncond)
            for row, weights in negatives:
                text.add(b, pipeline_rows + row, weights)
        elif guided:
            text.add(b, b, [torch.ones(grid.tokens, dtype=torch.float64) for grid in grids])
        cond = offset + b
        if region_rows:
            text.add(cond, cond, [w.text[0] for w in per_grid])
            text.add(cond, pipeline_rows + spec.background_row, [w.text[1] for w in per_grid])
            for i, row in enumerate(spec.subject_rows):
                text.add(cond, pipeline_rows + row, [w.text[2 + i] for w in per_grid])
        else:
            text.add(cond, cond, [torch.ones(grid.tokens, dtype=torch.float64) for grid in grids])
        for i, ref in enumerate(spec.reference_index):
            if ref is None:
                continue
            halves = (b, cond) if guided else (cond,)
            for query in halves:
                image.add(query, query * num_references + ref, [w.image[i] for w in per_grid])
    device, dtype = region_text.device, region_text.dtype
    return RegionalContext(
        region_text=region_text,
        text_groups=_groups(text, grids, device, dtype, dense_only=not sparse),
        image_groups=_groups(image, grids, device, dtype, dense_only=not sparse),
        num_references=num_references,
    )


def _heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    rows, length, inner = tensor.shape
    return tensor.view(rows, length, heads, inner // heads).transpose(1, 2)


def _attend(
    group: RowGroup,
    tokens: int,
    flat_query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    heads: int,
    out: torch.Tensor,
) -> None:
    """One batched attention call for all rows of a group (keys/values already one per row, [R, S, C]); the
    weighted row outputs are added into `out` [B·L, C] at their tokens."""
    index, weight = group.at(tokens)
    rows, width = index.shape
    query = flat_query.index_select(0, index.flatten()).view(rows, width, heads, -1).transpose(1, 2)
    result = F.scaled_dot_product_attention(query, _heads(keys, heads), _heads(values, heads))
    result = result.transpose(1, 2).reshape(rows, width, -1) * weight.to(result.dtype)
    out.index_add_(0, index.flatten(), result.reshape(rows * width, -1).to(out.dtype))


class ParallelCrossAttnProcessor(IPAdapterAttnProcessor2_0):
    """AutoStudio's parallel cross-attention on top of diffusers' IP-Adapter processor (its weights reused)."""

    def __init__(
        self,
        hidden_size: int,
        cross_attention_dim: int | None = None,
        num_tokens: tuple[int, ...] | list[int] = (),
        scale: float | list[float] = 1.0,
    ) -> None:
        num_tokens = list(num_tokens)
        scales = scale if isinstance(scale, list) else [scale] * len(num_tokens)
        super().__init__(hidden_size, cross_attention_dim or hidden_size, num_tokens=num_tokens, scale=scales)
        self._stock = AttnProcessor2_0()

    @classmethod
    def wrapping(cls, processor: object, hidden_size: int, cross_attention_dim: int) -> ParallelCrossAttnProcessor:
        """A processor sharing the IP-Adapter projections of an installed IPAdapterAttnProcessor2_0."""
        if isinstance(processor, IPAdapterAttnProcessor2_0):
            new = cls(processor.hidden_size, processor.cross_attention_dim, processor.num_tokens, processor.scale)
            new.to_k_ip = processor.to_k_ip
            new.to_v_ip = processor.to_v_ip
            return new
        return cls(hidden_size, cross_attention_dim)

    @property
    def has_ip(self) -> bool:
        return len(self.to_k_ip) > 0

    def __call__(  # type: ignore[override]
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | tuple | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        scale: float = 1.0,
        ip_adapter_masks: torch.Tensor | None = None,
        layout: RegionalContext | None = None,
        global_reference: GlobalReferenceContext | None = None,
        shared_attention: SharedAttentionContext | None = None,
    ) -> torch.Tensor:
        if shared_attention is not None:
            shared_attention.record_cross_attention(attn, hidden_states, encoder_hidden_states)
        if global_reference is not None and (layout is None or not layout.active):
            text, image_tokens = encoder_hidden_states  # type: ignore[misc]
            return global_reference.stock_with_frames(
                self, attn, hidden_states, text, image_tokens[0], attention_mask, temb
            )
        if layout is None:
            if self.has_ip:
                return super().__call__(
                    attn, hidden_states, encoder_hidden_states, attention_mask, temb, scale, ip_adapter_masks
                )
            return self._stock(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if isinstance(encoder_hidden_states, tuple):
            text, image_tokens = encoder_hidden_states
        else:
            text, image_tokens = encoder_hidden_states, None
        if not layout.active:
            return self._stock(attn, hidden_states, text, attention_mask, temb)
        return self._regional(attn, hidden_states, text, image_tokens, temb, layout, global_reference)

    def _regional(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        text: torch.Tensor,
        image_tokens: list[torch.Tensor] | None,
        temb: torch.Tensor | None,
        layout: RegionalContext,
        global_reference: GlobalReferenceContext | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.ndim == 4
        if spatial:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        batch_rows, tokens, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        inner = query.shape[-1]
        flat_query = query.reshape(batch_rows * tokens, attn.heads, inner // attn.heads)
        out = torch.zeros(batch_rows * tokens, inner, dtype=query.dtype, device=query.device)

        pipe_text = attn.norm_encoder_hidden_states(text) if attn.norm_cross else text
        region_key, region_value = layout.region_kv(attn)
        keys = torch.cat([attn.to_k(pipe_text), region_key.to(query.dtype)])
        values = torch.cat([attn.to_v(pipe_text), region_value.to(query.dtype)])
        for group in layout.text_groups:
            sources = group.source
            _attend(group, tokens, flat_query, keys[sources], values[sources], attn.heads, out)

        if layout.has_image_rows and image_tokens is not None and self.has_ip:
            tokens_ip = image_tokens[0][:, : layout.num_references]
            flat_ip = tokens_ip.reshape(-1, *tokens_ip.shape[2:])
            for group in layout.image_groups:
                chosen = group.select_sources(flat_ip)
                _attend(group, tokens, flat_query, self.to_k_ip[0](chosen), self.to_v_ip[0](chosen), attn.heads, out)
        if global_reference is not None and image_tokens is not None and self.has_ip:
            global_reference.add_frames_attention(self, flat_query, batch_rows, attn.heads, image_tokens[0], out)

        out = out.view(batch_rows, tokens, inner)
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial:
            out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class SelfAttnProcessor(AttnProcessor2_0):
    """Self-attention: stock, except in the up blocks while shared attention (ConsiStory) is on. It accepts
    every mechanism keyword, so no warning is logged."""

    def __init__(self, up_block: bool = False) -> None:
        super().__init__()
        self.up_block = up_block

    def __call__(  # type: ignore[override]
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        layout: RegionalContext | None = None,
        global_reference: GlobalReferenceContext | None = None,
        shared_attention: SharedAttentionContext | None = None,
    ) -> torch.Tensor:
        if shared_attention is not None and self.up_block and encoder_hidden_states is None:
            return shared_attention.self_attention(attn, hidden_states, temb)
        out = super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        injects = shared_attention is not None and getattr(shared_attention, "injection", None) is not None
        if injects and encoder_hidden_states is None:
            return shared_attention.inject(attn, out)  # DIFT feature injection reaches the down blocks too
        return out


def install_parallel_attention(unet: UNet2DConditionModel) -> None:
    """Put a ParallelCrossAttnProcessor on every attn2 and a SelfAttnProcessor elsewhere (idempotent)."""
    processors = {}
    for name, processor in unet.attn_processors.items():
        if isinstance(processor, ParallelCrossAttnProcessor | SelfAttnProcessor):
            processors[name] = processor
            continue
        module = unet.get_submodule(name.removesuffix(".processor"))
        if name.endswith("attn2.processor"):
            processors[name] = ParallelCrossAttnProcessor.wrapping(
                processor, module.to_q.out_features, module.to_k.in_features
            )
        else:
            processors[name] = SelfAttnProcessor(up_block=name.startswith("up_blocks"))
    unet.set_attn_processor(processors)
    device, dtype = unet.device, unet.dtype
    for processor in unet.attn_processors.values():
        if isinstance(processor, torch.nn.Module):
            processor.to(device=device, dtype=dtype)


def unet_grids(unet: UNet2DConditionModel, height: int, width: int, vae_factor: int) -> list[Grid]:
    from drawer.layout_masks import attention_grids

    levels = len(unet.config.block_out_channels)
    padding = int(getattr(unet.config, "downsample_padding", 1))
    return attention_grids(height, width, vae_factor, levels, padding)
