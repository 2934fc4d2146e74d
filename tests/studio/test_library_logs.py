"""The known, harmless model-library warnings stay off stderr; nothing else is silenced."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio.library_logs import quiet_known_library_warnings

ROOT = Path(__file__).resolve().parents[2]
TORCHVISION_NOTE = (
    "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil` for "
    "backward compatibility. Install torchvision to use the default backend, or import `CLIPImageProcessorPil` "
    "directly to silence this warning."
)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def collected() -> Collect:
    handler = Collect()
    loggers = [logging.getLogger(n) for n in ("transformers.utils.import_utils", "transformers.models.auto")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def test_only_the_known_messages_of_their_own_logger_are_dropped(collected: Collect) -> None:
    quiet_known_library_warnings()
    quiet_known_library_warnings()  # idempotent
    source = logging.getLogger("transformers.utils.import_utils")
    source.warning(TORCHVISION_NOTE)
    source.warning("`Foo` requires accelerate")  # another message of the same logger
    logging.getLogger("transformers.models.auto").warning(TORCHVISION_NOTE)  # the same text from elsewhere
    assert collected.messages == ["`Foo` requires accelerate", TORCHVISION_NOTE]
    assert sum(1 for f in source.filters if type(f).__name__ == "_KnownHarmless") == 1


def test_loading_the_tiny_models_prints_no_known_warning() -> None:
    pytest.importorskip("drawer")
    pytest.importorskip("vision")
    script = (
        "from studio.settings import Settings\n"
        "from entrypoints.runtime import load_preset_drawer\n"
        "drawer = load_preset_drawer(Settings(), 'tiny')\n"
        "from drawer.conditioning import encode_texts\n"
        "encode_texts(drawer.pipe, ['a girl in a long red coat ' * 5], ['blurry'])\n"  # over 77 byte tokens
    )
    completed = subprocess.run(  # a fresh process: transformers warns once per process
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "requires torchvision" not in completed.stderr
    assert "should be kept in float32" not in completed.stderr
    assert "sequence length is longer" not in completed.stderr
    assert "was truncated because CLIP" not in completed.stderr


TRUNCATION_NOTES = {
    "transformers.tokenization_utils_base": "Token indices sequence length is longer than the specified maximum "
    "sequence length for this model (150 > 77). Running this sequence through the model will result in indexing "
    "errors",
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion": "The following part of your input was "
    "truncated because CLIP can only handle sequences up to 77 tokens: ['a long tail']",
    "diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl": "The following part of your input was "
    "truncated because CLIP can only handle sequences up to 77 tokens: ['a long tail']",
}


@pytest.mark.parametrize("name", sorted(TRUNCATION_NOTES))
def test_prompt_truncation_notes_are_dropped_and_nothing_else(name: str) -> None:
    handler = Collect()
    source = logging.getLogger(name)
    source.addHandler(handler)
    try:
        quiet_known_library_warnings()
        source.warning(TRUNCATION_NOTES[name])
        source.warning("`height` and `width` have to be divisible by 8")  # another message of that logger
        logging.getLogger("diffusers.other").warning(TRUNCATION_NOTES[name])  # same text, another logger
    finally:
        source.removeHandler(handler)
    assert handler.messages == ["`height` and `width` have to be divisible by 8"]


def test_the_text_encoders_no_lora_keys_notice_is_dropped_and_the_unets_is_not() -> None:
    handler = Collect()
    source = logging.getLogger("diffusers.loaders.lora_base")
    source.addHandler(handler)
    try:
        quiet_known_library_warnings()
        source.warning("No LoRA keys associated to CLIPTextModel found with the prefix='text_encoder'. This is safe")
        source.warning("No LoRA keys associated to CLIPTextModelWithProjection found with the prefix='text_encoder_2'.")
        source.warning("No LoRA keys associated to UNet2DConditionModel found with the prefix='unet'.")
    finally:
        source.removeHandler(handler)
    assert handler.messages == ["No LoRA keys associated to UNet2DConditionModel found with the prefix='unet'."]
