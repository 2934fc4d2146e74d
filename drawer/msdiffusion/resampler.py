"""MS-Diffusion's grounding resampler: a Perceiver resampler whose queries start from grounding tokens.

For each subject, the grounding token is (pooled phrase embedding ‖ Fourier embedding of its box); an MLP maps
it to `num_queries` query vectors (LayerNorm'd). The queries then cross-attend, layer by layer, to the
subject's image features (the CLIP image encoder's penultimate hidden states) concatenated with themselves.
With grounding dropped the queries are the learned `grounding_latents` instead.

Module and parameter names follow the published `image_proj` state dict (seed-mechanisms.md, MS-Diffusion), so
the weights load with `load_state_dict(strict=True)`; the sizes are read from the state dict
(`ResamplerConfig.from_state_dict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

FOURIER_FREQS = 8
"""Frequencies per box coordinate: 4 coordinates × 8 × (sin, cos) = 64 features."""
FOURIER_TEMPERATURE = 100.0
DIM_HEAD = 64
"""Head width of the resampler's attention (the published model: 20 heads × 64 = 1280)."""


@dataclass(frozen=True)
class ResamplerConfig:
    dim: int = 1280
    depth: int = 4
    heads: int = 20
    num_queries: int = 16
    embedding_dim: int = 1664
    output_dim: int = 2048
    ff_mult: int = 4
    phrase_dim: int = 768

    @property
    def grounding_dim(self) -> int:
        return self.phrase_dim + FOURIER_FREQS * 2 * 4

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> ResamplerConfig:
        """The sizes a published-layout `image_proj` state dict was trained with (KeyError if a key is missing)."""
        dim, embedding_dim = state["proj_in.weight"].shape
        depth = len({key.split(".")[1] for key in state if key.startswith("layers.")})
        return cls(
            dim=int(dim),
            depth=depth,
            heads=int(state["layers.0.0.to_q.weight"].shape[0]) // DIM_HEAD,
            num_queries=int(state["grounding_latents"].shape[1]),
            embedding_dim=int(embedding_dim),
            output_dim=int(state["proj_out.weight"].shape[0]),
            ff_mult=int(state["layers.0.1.1.weight"].shape[0]) // int(dim),
            phrase_dim=int(state["latent_proj.0.weight"].shape[1]) - FOURIER_FREQS * 2 * 4,
        )


def fourier_embed(boxes: torch.Tensor, freqs: int = FOURIER_FREQS) -> torch.Tensor:
    """[N, 4] normalised xyxy boxes → [N, 4·freqs·2] features, ordered (frequency, sin/cos, coordinate) as the
    published weights expect."""
    bands = FOURIER_TEMPERATURE ** (torch.arange(freqs, device=boxes.device, dtype=boxes.dtype) / freqs)
    angles = boxes[:, :, None] * bands  # [N, 4, F]
    waves = torch.stack((angles.sin(), angles.cos()), dim=-1)  # [N, 4, F, 2]
    return waves.permute(0, 2, 3, 1).reshape(boxes.shape[0], -1)


class PerceiverAttention(nn.Module):
    """Queries (latents) attend to the image features and themselves; q/k scaled by dim_head^-¼ each."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        inner = heads * DIM_HEAD
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        features, latents = self.norm1(features), self.norm2(latents)
        rows, queries, _ = latents.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(rows, t.shape[1], self.heads, -1).transpose(1, 2)

        q = split(self.to_q(latents))
        k, v = (split(t) for t in self.to_kv(torch.cat([features, latents], dim=1)).chunk(2, dim=-1))
        factor = 1.0 / math.sqrt(math.sqrt(DIM_HEAD))
        weights = torch.softmax(((q * factor) @ (k * factor).transpose(-2, -1)).float(), dim=-1).to(q.dtype)
        out = (weights @ v).transpose(1, 2).reshape(rows, queries, -1)
        return self.to_out(out)


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class GroundingResampler(nn.Module):
    def __init__(self, config: ResamplerConfig) -> None:
        super().__init__()
        self.config = config
        dim, n = config.dim, config.num_queries
        self.grounding_latents = nn.Parameter(torch.randn(1, n, dim) / dim**0.5)
        self.latent_proj = nn.Sequential(
            nn.Linear(config.grounding_dim, 2 * config.grounding_dim),
            nn.GELU(),
            nn.Linear(2 * config.grounding_dim, n * dim),
        )
        self.latent_norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(config.embedding_dim, dim)
        self.attention_norm = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, config.output_dim)
        self.norm_out = nn.LayerNorm(config.output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, config.heads), feed_forward(dim, config.ff_mult)])
            for _ in range(config.depth)
        )

    def initial_queries(
        self, phrase_embeds: torch.Tensor, boxes: torch.Tensor, drop_grounding: torch.Tensor
    ) -> torch.Tensor:
        """[N, num_queries, dim] queries: from (phrase, box) grounding, or the learned latents where
        `drop_grounding` [N] (bool) is set."""
        grounding = torch.cat([phrase_embeds, fourier_embed(boxes)], dim=-1)
        queries = self.latent_norm(self.latent_proj(grounding).view(-1, self.config.num_queries, self.config.dim))
        learned = self.grounding_latents.to(queries.dtype).expand_as(queries)
        return torch.where(drop_grounding.view(-1, 1, 1), learned, queries)

    def forward(
        self,
        image_features: torch.Tensor,
        phrase_embeds: torch.Tensor,
        boxes: torch.Tensor,
        drop_grounding: torch.Tensor,
    ) -> torch.Tensor:
        """image_features [N, tokens, embedding_dim] (one row per subject), phrase_embeds [N, phrase_dim],
        boxes [N, 4] normalised xyxy, drop_grounding [N] bool → [N, num_queries, output_dim] image tokens."""
        latents = self.initial_queries(phrase_embeds, boxes, drop_grounding)
        features = self.proj_in(image_features)
        for attention, ff in self.layers:  # type: ignore[misc]
            latents = attention(features, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(self.attention_norm(latents)))
