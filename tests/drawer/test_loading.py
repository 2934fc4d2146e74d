from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from safetensors.torch import save_file

from drawer.loading import (
    ModelLoadError,
    is_single_file,
    load_pipeline,
    make_scheduler,
    pipeline_class,
    resolve_device,
    resolve_dtype,
)
from drawer.tiny import build_tiny_sd15, random_ip_adapter_state_dict
from studio.settings import ModelPreset, default_presets


def test_kind_resolves_to_pipeline_class() -> None:
    assert pipeline_class("sd15") is StableDiffusionPipeline
    assert pipeline_class("sdxl") is StableDiffusionXLPipeline
    assert pipeline_class("tiny-sdxl") is StableDiffusionXLPipeline
    with pytest.raises(ModelLoadError):
        pipeline_class("flux")


def test_dtype_choice() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu) is torch.float32
    assert resolve_dtype("auto", cuda) is torch.float16
    assert resolve_dtype("bfloat16", cpu) is torch.bfloat16
    assert resolve_dtype("float16", cuda) is torch.float16


def test_device_choice() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA"):
            resolve_device("cuda:1")


@pytest.mark.parametrize(
    ("base", "single"),
    [
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", False),
        ("/models/dreamlike-anime-1.0.safetensors", True),
        ("https://huggingface.co/x/y/blob/main/model.ckpt", True),
        ("./some/diffusers-folder", False),
    ],
)
def test_single_file_detection(base: str, single: bool) -> None:
    assert is_single_file(base) is single


def test_ddim_is_configured_like_autostudio() -> None:
    config = dict(build_tiny_sd15(with_ip_adapter=False).scheduler.config)
    config.update(clip_sample=True, steps_offset=0, beta_start=0.001)
    ddim = make_scheduler("ddim", config)
    assert isinstance(ddim, DDIMScheduler)
    betas = (ddim.config.beta_start, ddim.config.beta_end, ddim.config.beta_schedule)
    assert betas == (0.00085, 0.012, "scaled_linear")
    assert ddim.config.clip_sample is False and ddim.config.steps_offset == 1
    assert isinstance(make_scheduler("euler_a", config), EulerAncestralDiscreteScheduler)
    assert make_scheduler("default", config) is None


def test_offload_without_cuda_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ModelLoadError):
        load_pipeline(ModelPreset(kind="sd15", base="x", device="cpu", offload=True))


def test_local_diffusers_folder_with_separate_vae_and_ip_adapter(tmp_path: Path) -> None:
    """The real loading path, offline: a saved pipeline folder, a separate VAE folder, an IP-Adapter file and
    a CLIP image encoder folder, exactly as a user with downloaded weights would point a preset at them."""
    source = build_tiny_sd15(with_ip_adapter=False)
    source.save_pretrained(tmp_path / "base", safe_serialization=True)
    source.vae.save_pretrained(tmp_path / "vae")
    source.image_encoder.save_pretrained(tmp_path / "adapter" / "models" / "image_encoder")
    state = random_ip_adapter_state_dict(source.unet)
    flat = {f"{group}.{key}": value.contiguous() for group, values in state.items() for key, value in values.items()}
    save_file(flat, str(tmp_path / "adapter" / "models" / "ip-adapter_tiny.safetensors"))
    preset = ModelPreset(
        kind="sd15",
        base=str(tmp_path / "base"),
        vae=str(tmp_path / "vae"),
        ip_adapter=str(tmp_path / "adapter"),
        ip_adapter_subfolder="models",
        ip_adapter_weight="ip-adapter_tiny.safetensors",
        image_encoder=str(tmp_path / "adapter"),
        image_encoder_subfolder="models/image_encoder",
        dtype="auto",
        device="cpu",
    )
    pipe = load_pipeline(preset)
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.unet.dtype is torch.float32 and pipe.image_encoder is not None
    assert pipe.unet.encoder_hid_proj is not None
    assert type(pipe.unet.attn_processors[next(iter(pipe.unet.attn_processors))]).__name__ == "AttnProcessor2_0"
    assert any(type(p).__name__ == "IPAdapterAttnProcessor2_0" for p in pipe.unet.attn_processors.values())


def test_tiny_presets_load() -> None:
    assert isinstance(load_pipeline(default_presets()["tiny-sdxl"]), StableDiffusionXLPipeline)
