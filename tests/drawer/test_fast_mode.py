"""Fast mode (docs/fast_mode.md): the few-step LoRA is loaded through diffusers' LoRA loading from a real file
in the PEFT layout and really applied (the UNet output changes), only during fast draws; the step count,
guidance and scheduler follow fast mode; the Parallel-UNet processors survive LoRA loading and fusing; a full
few-step UNet is swapped in with the same processors; presets without weights refuse fast mode clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import EulerDiscreteScheduler, LCMScheduler
from safetensors.torch import save_file

from drawer import Drawer, load_drawer
from drawer.fast_mode import ADAPTER, FastMode, fast_scheduler, load_fast_unet
from drawer.loading import ModelLoadError
from drawer.parallel_attention import ParallelCrossAttnProcessor, SelfAttnProcessor
from drawer.tiny import build_tiny_sd15
from drawer.tiny_fast import random_lora_state_dict
from studio.draw import FAST_GUIDANCE, FAST_STEPS, DrawJob, DrawSettings
from studio.failures import DrawError
from studio.fast_mode import fast_mode_problem
from studio.settings import FastModeWeights, ModelPreset, default_presets
from tests.drawer.conftest import png, two_subject_plan


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LCM-LoRA saved as a .safetensors file in the PEFT/diffusers layout for the tiny SD1.5 UNet."""
    pipe = build_tiny_sd15()
    folder = tmp_path_factory.mktemp("lcm-lora")
    path = folder / "pytorch_lora_weights.safetensors"
    save_file(random_lora_state_dict(pipe.unet, scale=0.3), str(path))
    return path


def _preset(**fast: object) -> ModelPreset:
    return ModelPreset(kind="tiny", dtype="float32", device="cpu", max_side=1024, fast=FastModeWeights(**fast))


@pytest.fixture(scope="module")
def file_drawer(lora_file: Path) -> Drawer:
    return load_drawer(_preset(lora=str(lora_file)))


def _unet_output(drawer: Drawer) -> torch.Tensor:
    unet = drawer.pipe.unet
    generator = torch.Generator().manual_seed(3)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
    image = [torch.randn(1, 1, 32, generator=generator)]
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), text, added_cond_kwargs={"image_embeds": image}).sample


def _processors(drawer: Drawer) -> dict[str, object]:
    return dict(drawer.pipe.unet.attn_processors)


def test_lora_from_a_file_is_applied_only_inside_fast_mode(file_drawer: Drawer) -> None:
    processors = _processors(file_drawer)
    plain = _unet_output(file_drawer)
    with file_drawer.fast_mode.active(file_drawer.pipe):
        assert file_drawer.pipe.get_list_adapters() == {"unet": [ADAPTER]}
        fast = _unet_output(file_drawer)
        assert isinstance(file_drawer.pipe.scheduler, LCMScheduler)
    assert not torch.allclose(plain, fast, atol=1e-4), "the LoRA does not reach the UNet"
    assert torch.equal(_unet_output(file_drawer), plain), "outside fast mode the UNet must be exactly the base"
    assert not isinstance(file_drawer.pipe.scheduler, LCMScheduler)
    # loading the LoRA kept our processor objects (Parallel-UNet stack), layer for layer
    after = _processors(file_drawer)
    assert after.keys() == processors.keys() and all(after[k] is processors[k] for k in processors)
    assert all(isinstance(p, ParallelCrossAttnProcessor | SelfAttnProcessor) for p in after.values())


def test_lora_output_equals_the_weights_added_by_hand(file_drawer: Drawer, lora_file: Path) -> None:
    """The adapter computes W + B·A (scale 1) on every adapted layer: the same UNet with the LoRA merged into
    its weights by hand gives the same output."""
    from safetensors.torch import load_file

    with file_drawer.fast_mode.active(file_drawer.pipe):
        fast = _unet_output(file_drawer)
    reference = load_drawer(default_presets()["tiny"])
    state = load_file(str(lora_file))
    with torch.no_grad():
        for key, a in state.items():
            if not key.endswith("lora_A.weight"):
                continue
            name = key.removeprefix("unet.").removesuffix(".lora_A.weight")
            b = state[key.replace("lora_A", "lora_B")]
            module = reference.pipe.unet.get_submodule(name)
            delta = (b.flatten(1) @ a.flatten(1)).reshape(module.weight.shape)
            module.weight += delta
    assert torch.allclose(_unet_output(reference), fast, atol=1e-5)


def test_processors_survive_fusing_the_lora(lora_file: Path) -> None:
    drawer = load_drawer(_preset(lora=str(lora_file)))
    before = _processors(drawer)
    with drawer.fast_mode.active(drawer.pipe):
        unfused = _unet_output(drawer)
        drawer.pipe.fuse_lora(adapter_names=[ADAPTER])
        fused = _unet_output(drawer)
    after = _processors(drawer)
    assert all(after[k] is before[k] for k in before)
    assert torch.allclose(fused, unfused, atol=1e-5)


def test_fast_draw_uses_few_steps_guidance_and_the_fast_scheduler(file_drawer: Drawer) -> None:
    seen: dict[str, object] = {}
    pipe = file_drawer.pipe
    original = type(pipe).__call__

    def spy(self: object, *args: object, **kwargs: object) -> object:
        seen.update(
            steps=kwargs["num_inference_steps"],
            guidance=kwargs["guidance_scale"],
            scheduler=type(pipe.scheduler),
            lora=pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.disable_adapters,
        )
        return original(self, *args, **kwargs)

    job = DrawJob(plan=two_subject_plan(), settings=DrawSettings(mode="fast", seed=2, mechanisms=["regional"]))
    steps: list[tuple[int, int]] = []
    try:
        type(pipe).__call__ = spy  # type: ignore[method-assign]
        file_drawer.draw(job, on_step=lambda s, t: steps.append((s, t)))
    finally:
        type(pipe).__call__ = original  # type: ignore[method-assign]
    assert seen == {"steps": FAST_STEPS, "guidance": FAST_GUIDANCE, "scheduler": LCMScheduler, "lora": False}
    assert steps[-1] == (FAST_STEPS, FAST_STEPS)
    assert not isinstance(pipe.scheduler, LCMScheduler)


def test_fast_and_normal_draws_differ_and_normal_is_unchanged_by_a_fast_draw(file_drawer: Drawer) -> None:
    plan = two_subject_plan()
    normal = DrawJob(plan=plan, references={"1": png("red")}, settings=DrawSettings(seed=5, steps=4))
    first = file_drawer.draw(normal).image
    fast = file_drawer.draw(normal.model_copy(update={"settings": DrawSettings(mode="fast", seed=5)})).image
    assert file_drawer.draw(normal).image == first
    assert fast != first


def test_fast_draw_with_every_mechanism_on_sdxl(tiny_sdxl_drawer: Drawer) -> None:
    """The tiny SDXL preset's fast mode is Lightning-style (Euler, trailing timesteps)."""
    schedulers: list[type] = []
    pipe = tiny_sdxl_drawer.pipe
    job = DrawJob(
        plan=two_subject_plan(),
        references={"1": png("red")},
        settings=DrawSettings(
            mode="fast", seed=1, mechanisms=["regional", "subject_reference", "subject_init", "shared_attention"]
        ),
    )
    result = tiny_sdxl_drawer.draw(job, on_step=lambda s, t: schedulers.append(type(pipe.scheduler)))
    assert result.image.startswith(b"\x89PNG")
    assert set(schedulers) == {EulerDiscreteScheduler}
    assert pipe.scheduler.config.timestep_spacing != "trailing"


def test_fast_scheduler_kinds() -> None:
    config = dict(build_tiny_sd15(with_ip_adapter=False).scheduler.config)
    assert isinstance(fast_scheduler("lcm", config), LCMScheduler)
    lightning = fast_scheduler("lightning", config)
    assert isinstance(lightning, EulerDiscreteScheduler) and lightning.config.timestep_spacing == "trailing"
    with pytest.raises(ModelLoadError):
        fast_scheduler("turbo", config)


def test_full_fast_unet_is_swapped_in_with_the_same_processors(tmp_path: Path) -> None:
    drawer = load_drawer(default_presets()["tiny"])
    torch.manual_seed(11)
    other = build_tiny_sd15(with_ip_adapter=False, seed=99).unet
    other.save_pretrained(tmp_path / "unet")
    weights = FastModeWeights(unet=str(tmp_path), unet_subfolder="unet")
    fast_unet = load_fast_unet(drawer.pipe, weights)
    assert all(fast_unet.attn_processors[k] is v for k, v in drawer.pipe.unet.attn_processors.items())
    assert fast_unet.encoder_hid_proj is drawer.pipe.unet.encoder_hid_proj
    mode = FastMode(_preset(unet=str(tmp_path), unet_subfolder="unet"), dict(drawer.pipe.scheduler.config))
    base = drawer.pipe.unet
    plain = _unet_output(drawer)
    with mode.active(drawer.pipe):
        assert drawer.pipe.unet is not base
        assert not torch.allclose(_unet_output(drawer), plain)
    assert drawer.pipe.unet is base


@pytest.mark.parametrize(
    ("fast", "message"),
    [
        ({"lora": "/nonexistent/lcm.safetensors"}, r"fast\.lora: no such file"),
        ({"lora": "/tmp", "lora_weight": "missing.safetensors"}, r"fast\.lora_weight"),
    ],
)
def test_missing_weights_are_a_clear_draw_error(fast: dict, message: str) -> None:
    drawer = load_drawer(_preset(**fast))
    job = DrawJob(plan=two_subject_plan(), settings=DrawSettings(mode="fast", seed=1, mechanisms=[]))
    with pytest.raises(DrawError, match=message):
        drawer.draw(job)
    assert drawer.draw(job.model_copy(update={"settings": DrawSettings(seed=1, steps=2, mechanisms=[])})).image


def test_a_file_that_is_not_a_lora_of_this_model_is_refused(tmp_path: Path) -> None:
    job = DrawJob(plan=two_subject_plan(), settings=DrawSettings(mode="fast", seed=1, mechanisms=[]))
    elsewhere = tmp_path / "elsewhere.safetensors"
    save_file(
        {"unet.nowhere.lora_A.weight": torch.zeros(2, 3), "unet.nowhere.lora_B.weight": torch.zeros(3, 2)},
        str(elsewhere),
    )
    with pytest.raises(DrawError, match=r"fast\.lora: could not load"):
        load_drawer(_preset(lora=str(elsewhere))).draw(job)
    # a LoRA of the text encoder only: it loads, but nothing of the UNet is adapted
    drawer = load_drawer(_preset(lora=str(tmp_path / "text.safetensors")))
    text_only = {}
    for name, module in drawer.pipe.text_encoder.named_modules():
        if name.endswith("q_proj"):
            text_only[f"text_encoder.{name}.lora_A.weight"] = torch.zeros(2, module.in_features)
            text_only[f"text_encoder.{name}.lora_B.weight"] = torch.zeros(module.out_features, 2)
    save_file(text_only, str(tmp_path / "text.safetensors"))
    with pytest.raises(DrawError, match="holds no LoRA weights for this model's UNet"):
        drawer.draw(job)


def test_preset_without_fast_weights_refuses_fast_mode() -> None:
    plain = ModelPreset(kind="tiny", dtype="float32", device="cpu")
    problem = fast_mode_problem(DrawSettings(mode="fast"), plain, "plain")
    assert problem is not None and problem.startswith("mode:") and "`fast`" in problem
    assert fast_mode_problem(DrawSettings(previews=True), plain) is not None
    assert fast_mode_problem(DrawSettings(), plain) is None
    assert fast_mode_problem(DrawSettings(mode="fast"), default_presets()["tiny"]) is None
    drawer = Drawer(build_tiny_sd15(), plain)
    with pytest.raises(DrawError, match="mode: fast mode needs few-step weights"):
        drawer.draw(DrawJob(plan=two_subject_plan(), settings=DrawSettings(mode="fast", seed=1)))


def test_settings_rules() -> None:
    fast = DrawSettings(mode="fast")
    assert (fast.steps, fast.guidance_scale, fast.scheduler, fast.wants_previews) == (4, 1.0, "default", True)
    assert (fast.refine_step, fast.subject_init_steps, fast.prerender_steps) == (3, 1, 2)
    assert DrawSettings.model_validate_json(fast.model_dump_json()) == fast
    assert DrawSettings(mode="fast", steps=6, guidance_scale=2.0).steps == 6
    assert not DrawSettings().wants_previews and DrawSettings(previews=True).wants_previews
    assert not DrawSettings(mode="fast", previews=False).wants_previews
    with pytest.raises(ValueError, match="scheduler"):
        DrawSettings(mode="fast", scheduler="euler")
    with pytest.raises(ValueError):
        DrawSettings(mode="turbo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        FastModeWeights()
    with pytest.raises(ValueError, match="only for the tiny kinds"):
        ModelPreset(kind="sd15", base="x", fast=FastModeWeights(lora="tiny"))


def test_default_presets_name_real_fast_weights() -> None:
    presets = default_presets()
    assert presets["sd15"].fast == FastModeWeights(
        lora="latent-consistency/lcm-lora-sdv1-5", lora_weight="pytorch_lora_weights.safetensors"
    )
    assert presets["sdxl"].fast is not None and presets["sdxl"].fast.scheduler == "lightning"
    assert presets["sd15"].tiny_vae == "madebyollin/taesd" and presets["sdxl"].tiny_vae == "madebyollin/taesdxl"
