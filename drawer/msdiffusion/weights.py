"""MS-Diffusion's adapter file: reading it (torch pickle with `weights_only=True`, or a converted
.safetensors), checking it against the pipeline, and installing it.

The published `ms_adapter.bin` holds three entries:
- `image_proj`: the grounding resampler (drawer.msdiffusion.resampler, same parameter names);
- `ms_adapter`: `{k}.to_k_ip.weight` / `{k}.to_v_ip.weight` [layer width, cross-attention width], where k
  is the processor's index in `unet.attn_processors` order counting every processor (so the cross-attention
  layers are the odd k: 1, 3, 5, …);
- `dummy_image_tokens`: [1, 4, cross-attention width].
"""

from __future__ import annotations

import pickle
import sys
import zipfile
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel
from torch import nn

from drawer.loading import ModelLoadError
from drawer.msdiffusion.attention import MSCrossAttnProcessor, MSSelfAttnProcessor
from drawer.msdiffusion.resampler import GroundingResampler, ResamplerConfig

ENTRIES = ("image_proj", "ms_adapter", "dummy_image_tokens")


class AdapterFileError(ModelLoadError):
    """An adapter file that is not MS-Diffusion's, or that does not fit the pipeline (a message, no trace)."""


def read_adapter_file(path: str | Path) -> dict[str, object]:
    """The adapter's three entries from `ms_adapter.bin` (a torch pickle, read with weights_only=True) or a
    .safetensors made by `convert_to_safetensors`. A file of another kind is an AdapterFileError naming it."""
    path = Path(path)
    if not path.is_file():
        raise AdapterFileError(f"MS-Diffusion adapter file {path} does not exist")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, AttributeError) as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise AdapterFileError(
                f"{path} is not an MS-Diffusion adapter (ms_adapter.bin: a torch checkpoint read with "
                f"weights_only=True): {reason}"
            ) from None
    if not isinstance(state, dict):
        raise AdapterFileError(f"{path} holds a {type(state).__name__}, not MS-Diffusion's adapter dictionary")
    missing = [key for key in ENTRIES if key not in state]
    if missing:
        found = sorted(str(k) for k in state)[:8]
        raise AdapterFileError(
            f"{path} is not an MS-Diffusion adapter: it lacks {missing} (found {found}); "
            "an IP-Adapter file has image_proj/ip_adapter instead"
        )
    return state


def _read_safetensors(path: Path) -> dict[str, object]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        flat = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise AdapterFileError(f"{path} is not a readable .safetensors file: {exc}") from None
    state: dict[str, object] = {"image_proj": {}, "ms_adapter": {}}
    for key, tensor in flat.items():
        head, _, rest = key.partition(".")
        if head in ("image_proj", "ms_adapter") and rest:
            state[head][rest] = tensor  # type: ignore[index]
        elif key == "dummy_image_tokens":
            state[key] = tensor
    if not state["image_proj"] and not state["ms_adapter"]:
        del state["image_proj"], state["ms_adapter"]
    return state


def convert_to_safetensors(source: str | Path, target: str | Path) -> Path:
    """Write the adapter once as .safetensors (flat keys `image_proj.*`, `ms_adapter.*`, `dummy_image_tokens`),
    so later loads need no pickle at all."""
    from safetensors.torch import save_file

    state = read_adapter_file(source)
    flat: dict[str, torch.Tensor] = {"dummy_image_tokens": torch.as_tensor(state["dummy_image_tokens"]).contiguous()}
    for entry in ("image_proj", "ms_adapter"):
        for key, tensor in state[entry].items():  # type: ignore[attr-defined]
            flat[f"{entry}.{key}"] = tensor.contiguous()
    target = Path(target)
    save_file(flat, str(target))
    return target


class MSAdapter(nn.Module):
    """The resampler and the dummy tokens (the per-layer projections live in the attention processors)."""

    def __init__(self, config: ResamplerConfig, num_dummy: int) -> None:
        super().__init__()
        self.config = config
        self.resampler = GroundingResampler(config)
        self.dummy_image_tokens = nn.Parameter(torch.zeros(1, num_dummy, config.output_dim))

    @property
    def num_dummy(self) -> int:
        return int(self.dummy_image_tokens.shape[1])


def build_adapter(state: dict[str, object], name: str = "the adapter") -> MSAdapter:
    image_proj = state["image_proj"]
    dummy = torch.as_tensor(state["dummy_image_tokens"])
    if not isinstance(image_proj, dict):
        raise AdapterFileError(f"{name}: `image_proj` is not a state dictionary")
    try:
        config = ResamplerConfig.from_state_dict(image_proj)
    except (KeyError, IndexError) as exc:
        raise AdapterFileError(
            f"{name}: `image_proj` is not MS-Diffusion's grounding resampler (no {exc}); "
            "a resampler without grounding (IP-Adapter-Plus) does not fit"
        ) from None
    if dummy.ndim != 3 or dummy.shape[0] != 1 or dummy.shape[2] != config.output_dim:
        raise AdapterFileError(f"{name}: dummy_image_tokens {tuple(dummy.shape)} ≠ [1, n, {config.output_dim}]")
    adapter = MSAdapter(config, int(dummy.shape[1]))
    result = adapter.resampler.load_state_dict(image_proj, strict=False)
    wrong = _shape_mismatches(adapter.resampler, image_proj)
    if result.missing_keys or result.unexpected_keys or wrong:
        raise AdapterFileError(
            f"{name}: `image_proj` does not match the grounding resampler "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}, shapes {wrong[:5]})"
        )
    with torch.no_grad():
        adapter.dummy_image_tokens.copy_(dummy)
    return adapter


def _shape_mismatches(module: nn.Module, state: dict) -> list[str]:
    own = module.state_dict()
    return [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]


def check_image_encoder(adapter: MSAdapter, encoder: nn.Module | None, name: str = "the adapter") -> None:
    """The adapter reads the encoder's penultimate hidden states: their width must be the resampler's input."""
    if encoder is None:
        raise AdapterFileError("an MS-Diffusion preset needs `image_encoder` (the CLIP ViT-bigG vision tower)")
    hidden = int(encoder.config.hidden_size)
    if hidden != adapter.config.embedding_dim:
        raise AdapterFileError(
            f"image encoder hidden size {hidden} does not match {name}, which reads "
            f"{adapter.config.embedding_dim}-wide penultimate hidden states (MS-Diffusion: CLIP ViT-bigG-14, 1664); "
            "use the encoder the adapter was trained with"
        )


def install_adapter(pipe: DiffusionPipeline, state: dict[str, object], name: str = "the adapter") -> MSAdapter:
    """Check the adapter against the pipeline, put MS-Diffusion's processors on the UNet with the per-layer
    weights remapped by layer order, and attach the resampler as `pipe.msdiffusion`."""
    adapter = build_adapter(state, name)
    check_image_encoder(adapter, getattr(pipe, "image_encoder", None), name)
    unet: UNet2DConditionModel = pipe.unet
    if adapter.config.output_dim != unet.config.cross_attention_dim:
        raise AdapterFileError(
            f"{name} makes {adapter.config.output_dim}-wide image tokens but the UNet's cross-attention is "
            f"{unet.config.cross_attention_dim} wide (MS-Diffusion is trained on SDXL: 2048)"
        )
    text_encoder = getattr(pipe, "text_encoder", None)
    if text_encoder is not None and int(text_encoder.config.hidden_size) != adapter.config.phrase_dim:
        raise AdapterFileError(
            f"{name} grounds phrases with {adapter.config.phrase_dim}-wide pooled text embeddings but the first "
            f"text encoder is {text_encoder.config.hidden_size} wide (SDXL's CLIP-L: 768)"
        )
    layers = state["ms_adapter"]
    if not isinstance(layers, dict):
        raise AdapterFileError(f"{name}: `ms_adapter` is not a state dictionary")
    install_processors(unet, layers, name)
    adapter.to(device=unet.device, dtype=unet.dtype)
    pipe.msdiffusion = adapter
    return adapter


def install_processors(unet: UNet2DConditionModel, layers: dict, name: str = "the adapter") -> None:
    """MS-Diffusion's processors on every attention layer of `unet`, the k-th processor's image projections
    from `layers["{k}.to_k_ip.weight"]` / `["{k}.to_v_ip.weight"]` (k counts every processor in order)."""
    processors: dict[str, object] = {}
    used: set[str] = set()
    for k, (proc_name, _old) in enumerate(unet.attn_processors.items()):
        module = unet.get_submodule(proc_name.removesuffix(".processor"))
        if not proc_name.endswith("attn2.processor"):
            processors[proc_name] = MSSelfAttnProcessor(up_block=proc_name.startswith("up_blocks"))
            continue
        processor = MSCrossAttnProcessor(module.to_q.out_features, module.to_k.in_features)
        for ours, theirs in (("to_k_ms", "to_k_ip"), ("to_v_ms", "to_v_ip")):
            key = f"{k}.{theirs}.weight"
            if key not in layers:
                raise AdapterFileError(
                    f"{name} has no {key!r}: its {len(layers) // 2} cross-attention layers do not match this UNet's "
                    f"{sum(n.endswith('attn2.processor') for n in unet.attn_processors)}"
                )
            weight = torch.as_tensor(layers[key])
            target = getattr(processor, ours).weight
            if weight.shape != target.shape:
                raise AdapterFileError(
                    f"{name}: {key} is {tuple(weight.shape)} but layer {proc_name} needs {tuple(target.shape)}"
                )
            with torch.no_grad():
                target.copy_(weight)
            used.add(key)
        processors[proc_name] = processor
    extra = sorted(set(layers) - used)
    if extra:
        raise AdapterFileError(f"{name} has weights for layers this UNet lacks: {extra[:4]}")
    unet.set_attn_processor(processors)
    for processor in unet.attn_processors.values():
        if isinstance(processor, nn.Module):
            processor.to(device=unet.device, dtype=unet.dtype)


def adapter_of(pipe: DiffusionPipeline) -> MSAdapter | None:
    adapter = getattr(pipe, "msdiffusion", None)
    return adapter if isinstance(adapter, MSAdapter) else None


def main(argv: list[str] | None = None) -> int:
    """`python -m drawer.msdiffusion.weights SOURCE.bin TARGET.safetensors`: convert the adapter once."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m drawer.msdiffusion.weights ms_adapter.bin ms_adapter.safetensors", file=sys.stderr)
        return 2
    try:
        target = convert_to_safetensors(args[0], args[1])
    except AdapterFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
