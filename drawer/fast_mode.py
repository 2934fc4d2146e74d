"""Fast mode (docs/fast_mode.md): a preset's few-step weights and scheduler, switched on for one draw.

Independent of any sampler loop: `FastMode.active(pipe)` is a context manager that, for its duration, turns on
the LoRA adapter (or swaps in the few-step UNet) and the few-step scheduler, and restores the pipeline after,
so the stock pipeline call, a pre-render and a custom region loop all run fast mode the same way.

- **LoRA** (LCM-LoRA, SDXL-Lightning LoRA): loaded once, lazily at the first fast draw, with diffusers'
  `load_lora_weights(..., adapter_name="fast")` (PEFT). It is never fused: outside fast draws the adapter is
  disabled, and a disabled PEFT layer computes exactly its base layer, so normal-mode pictures stay bit-identical
  whether or not a fast draw came before. PEFT wraps the Linear/Conv modules only; the attention processors
  (Parallel-UNet's stack) are untouched (tested).
- **Full UNet** (SDXL-Lightning `_unet`, an LCM UNet): loaded once and swapped in as `pipe.unet` for fast draws;
  it gets the base UNet's IP-Adapter projection and the very same attention-processor objects, so Parallel-UNet
  and the IP-Adapter weights are shared, not copied.
- **Scheduler**: `lcm` → `LCMScheduler`, `lightning` → Euler with trailing timesteps (SDXL-Lightning's setup),
  both from the checkpoint's own scheduler config.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, EulerDiscreteScheduler, LCMScheduler, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from drawer.loading import ModelLoadError, is_single_file
from studio.settings import FastModeWeights, ModelPreset

logger = logging.getLogger(__name__)

ADAPTER = "fast"
"""The PEFT adapter name of the few-step LoRA."""


def fast_scheduler(kind: str, config: dict[str, Any]) -> SchedulerMixin:
    """The few-step scheduler built from the checkpoint's scheduler config."""
    if kind == "lcm":
        return LCMScheduler.from_config(config)
    if kind == "lightning":
        return EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing")
    raise ModelLoadError(f"unknown fast-mode scheduler {kind!r}")


def _lora_source(weights: FastModeWeights, pipe: DiffusionPipeline) -> tuple[Any, dict[str, Any]]:
    """What `load_lora_weights` gets: a state dict (tiny), a file, or a hub id / folder with its weight name."""
    assert weights.lora is not None
    if weights.lora == "tiny":
        from drawer.tiny_fast import random_lora_state_dict

        return random_lora_state_dict(pipe.unet), {}
    path = Path(weights.lora)
    if is_single_file(weights.lora):
        if not path.is_file() and "://" not in weights.lora:
            raise ModelLoadError(f"fast.lora: no such file {weights.lora!r}")
        return str(path.parent), {"weight_name": path.name}
    if path.is_dir() and weights.lora_weight and not (path / weights.lora_weight).is_file():
        raise ModelLoadError(f"fast.lora_weight: {weights.lora_weight!r} is not in the folder {weights.lora!r}")
    return weights.lora, ({"weight_name": weights.lora_weight} if weights.lora_weight else {})


def load_fast_lora(pipe: DiffusionPipeline, weights: FastModeWeights) -> None:
    """Load the few-step LoRA as the disabled adapter `fast` (diffusers' LoRA loading, PEFT backend)."""
    source, kwargs = _lora_source(weights, pipe)
    try:
        pipe.load_lora_weights(source, adapter_name=ADAPTER, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"fast.lora: could not load {weights.lora!r} as a LoRA of this model: {exc}") from exc
    loaded = pipe.get_list_adapters()
    if ADAPTER not in loaded.get("unet", []):
        raise ModelLoadError(f"fast.lora: {weights.lora!r} holds no LoRA weights for this model's UNet")
    if weights.lora_scale != 1.0:  # a loaded adapter is active at 1.0; diffusers' scale expansion needs an int
        pipe.set_adapters([ADAPTER], adapter_weights=[weights.lora_scale])  # layers_per_block (real UNets have one)
    pipe.disable_lora()


def load_fast_unet(pipe: DiffusionPipeline, weights: FastModeWeights) -> UNet2DConditionModel:
    """The few-step UNet, sharing the base UNet's IP-Adapter projection and attention processors."""
    assert weights.unet is not None
    base = pipe.unet
    try:
        if weights.unet_weight:
            unet = UNet2DConditionModel.from_config(base.config)
            unet.load_state_dict(_read_state_dict(weights.unet, weights.unet_weight), strict=True)
        else:
            unet = UNet2DConditionModel.from_pretrained(weights.unet, subfolder=weights.unet_subfolder)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"fast.unet: could not load {weights.unet!r} as this model's UNet: {exc}") from exc
    unet.to(device=base.device, dtype=base.dtype)
    if getattr(base, "encoder_hid_proj", None) is not None:
        unet.encoder_hid_proj = base.encoder_hid_proj
        unet.register_to_config(encoder_hid_dim_type=base.config.encoder_hid_dim_type)
    unet.set_attn_processor(dict(base.attn_processors))
    return unet


def _read_state_dict(source: str, weight_name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    folder = Path(source)
    if folder.is_dir():
        path = folder / weight_name
        if not path.is_file():
            raise ModelLoadError(f"fast.unet_weight: {weight_name!r} is not in the folder {source!r}")
        return load_file(str(path))
    from huggingface_hub import hf_hub_download

    return load_file(hf_hub_download(source, weight_name))


class FastMode:
    """A preset's fast mode on one pipeline: weights loaded at first use, switched on by `active`."""

    def __init__(self, preset: ModelPreset, scheduler_config: dict[str, Any]) -> None:
        self.weights = preset.fast
        self._scheduler_config = scheduler_config
        self._scheduler: SchedulerMixin | None = None
        self._unet: UNet2DConditionModel | None = None
        self._loaded = False
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.weights is not None

    def load(self, pipe: DiffusionPipeline) -> None:
        """Load the weights and build the scheduler (once; ModelLoadError names the preset field at fault)."""
        with self._lock:
            if self._loaded:
                return
            if self.weights is None:
                raise ModelLoadError("mode: this preset names no fast-mode weights (preset field `fast`)")
            if self.weights.lora is not None:
                load_fast_lora(pipe, self.weights)
            else:
                self._unet = load_fast_unet(pipe, self.weights)
            self._scheduler = fast_scheduler(self.weights.scheduler, self._scheduler_config)
            self._loaded = True

    @contextmanager
    def active(self, pipe: DiffusionPipeline) -> Iterator[None]:
        """Few-step weights and scheduler on `pipe` for the block; the pipeline is restored afterwards."""
        self.load(pipe)
        scheduler, unet = pipe.scheduler, pipe.unet
        pipe.scheduler = self._scheduler
        if self._unet is not None:
            pipe.unet = self._unet
        else:
            pipe.enable_lora()
        try:
            yield
        finally:
            if self._unet is not None:
                pipe.unet = unet
            else:
                pipe.disable_lora()
            pipe.scheduler = scheduler
