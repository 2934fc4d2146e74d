"""Known, harmless warnings of the model libraries, kept off stderr by a narrow filter on the one logger that
emits each (the libraries' other messages, and these loggers' other messages, still get through).

- transformers: "`CLIPImageProcessor` requires torchvision (not installed); falling back to
  `CLIPImageProcessorPil` …": this project installs no torchvision on purpose; the PIL processor is the one
  it wants (same for every `…ImageProcessor`).
- diffusers: "There are modules in UNet2DConditionModel that should be kept in float32: []. …": printed on
  every `.to(dtype)` even when the list of such modules is empty, i.e. when there is nothing to keep.
- transformers: "Token indices sequence length is longer than the specified maximum sequence length for this
  model (150 > 77) …": raised by the untruncated tokenization diffusers' `encode_prompt` runs only to detect
  truncation; the ids that reach the text encoder are truncated to its 77 positions, so no indexing error can
  follow.
- diffusers (SD1.5 and SDXL pipelines): "The following part of your input was truncated because CLIP can only
  handle sequences up to 77 tokens: […]": every prompt row is cut to CLIP's 77 positions by design (AutoStudio's
  rows too); the notice repeats the cut text on every turn, and with the tiny presets' byte-level tokenizer
  (one token per character) on almost every global prompt.
- diffusers (LoRA loading): "No LoRA keys associated to CLIPTextModel found with the prefix='text_encoder'. This
  is safe to ignore if …": fast mode's LCM-LoRA / Lightning LoRA adapt the UNet only (docs/fast_mode.md); a LoRA
  with no UNet keys is refused by the drawer itself. Only the text encoders' notice is dropped.

Installed by the code that loads the models (the drawer's and the vision models' loaders, the benchmark's
CLIP); importing this module imports neither library."""

from __future__ import annotations

import logging
import re

_TRUNCATED = re.compile(r"^The following part of your input was truncated because CLIP can only handle sequences up to")
_KNOWN_HARMLESS = {
    "transformers.utils.import_utils": re.compile(r"^`\w+ImageProcessor` requires torchvision \(not installed\)"),
    "diffusers.models.modeling_utils": re.compile(r"^There are modules in \w+ that should be kept in float32: \[\]\."),
    "transformers.tokenization_utils_base": re.compile(
        r"^Token indices sequence length is longer than the specified maximum sequence length for this model"
    ),
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion": _TRUNCATED,
    "diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl": _TRUNCATED,
    "diffusers.loaders.lora_base": re.compile(
        r"^No LoRA keys associated to CLIPTextModel(WithProjection)? found with the prefix='text_encoder(_2)?'"
    ),
}


class _KnownHarmless(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_known_library_warnings() -> None:
    """Install the filters (once; calling again changes nothing)."""
    for name, pattern in _KNOWN_HARMLESS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _KnownHarmless) for f in logger.filters):
            logger.addFilter(_KnownHarmless(pattern))
