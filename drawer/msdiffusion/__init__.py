"""MS-Diffusion (layout-guided multi-subject personalisation on SDXL) as a drawer backend: preset kind
`msdiffusion`. See docs/msdiffusion.md.

- weights: the adapter file (read, check, convert, install processors with remapped per-layer weights);
- resampler: the grounding resampler (image tokens from a reference, its phrase and its box);
- attention: the multi-subject cross-attention processors;
- context: per-render state (masks, scales, auto layout);
- inputs / install: a turn's tokens and the attention-stack installer;
- loading: the preset loader.
"""

from drawer.msdiffusion.attention import KWARG, MSCrossAttnProcessor, MSSelfAttnProcessor
from drawer.msdiffusion.context import MSDiffusionContext
from drawer.msdiffusion.weights import AdapterFileError, MSAdapter, adapter_of, convert_to_safetensors

__all__ = [
    "KWARG",
    "AdapterFileError",
    "MSAdapter",
    "MSCrossAttnProcessor",
    "MSDiffusionContext",
    "MSSelfAttnProcessor",
    "adapter_of",
    "convert_to_safetensors",
]
