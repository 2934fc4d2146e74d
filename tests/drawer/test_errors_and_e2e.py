from __future__ import annotations

import io

import pytest
from PIL import Image

from drawer import Drawer
from drawer.core import Drawer as DrawerClass
from studio.draw import DrawJob
from studio.failures import DrawError
from studio.geometry import Box
from studio.plan import EditSpec, PlanItem, TurnPlan
from tests.drawer.conftest import fast_settings, png, two_subject_plan


def test_undecodable_reference_is_a_draw_error(tiny_drawer: Drawer) -> None:
    job = DrawJob(plan=two_subject_plan(), references={"2": b"not an image"}, settings=fast_settings())
    with pytest.raises(DrawError, match="reference image of subject 2"):
        tiny_drawer.draw(job)


def test_undecodable_previous_image_is_a_draw_error(tiny_drawer: Drawer) -> None:
    plan = two_subject_plan().model_copy(update={"edit": EditSpec(regenerate_subject_ids=["1"])})
    with pytest.raises(DrawError, match="previous image"):
        tiny_drawer.draw(DrawJob(plan=plan, settings=fast_settings(), previous_image=b"\x89PNG broken"))


def test_too_many_subjects_is_a_draw_error(tiny_drawer: Drawer) -> None:
    small = DrawerClass(tiny_drawer.pipe, tiny_drawer.preset, max_subjects=1)
    with pytest.raises(DrawError, match="at most 1"):
        small.draw(DrawJob(plan=two_subject_plan(), settings=fast_settings()))


def test_canvas_over_the_model_maximum_is_a_draw_error(tiny_drawer: Drawer) -> None:
    plan = TurnPlan(height=64, width=tiny_drawer.preset.max_side + 8, background="sky")
    with pytest.raises(DrawError, match="maximum"):
        tiny_drawer.draw(DrawJob(plan=plan, settings=fast_settings()))


def test_canvas_off_the_model_grid_is_a_draw_error(tiny_drawer: Drawer) -> None:
    plan = TurnPlan.model_construct(
        height=64, width=100, caption="", background="sky", negative=None, items=[], edit=None
    )
    job = DrawJob.model_construct(plan=plan, references={}, settings=fast_settings(), previous_image=None)
    with pytest.raises(DrawError, match="multiple of 8"):
        tiny_drawer.draw(job)


@pytest.mark.parametrize("which", ["tiny_drawer", "tiny_sdxl_drawer"])
def test_multi_turn_end_to_end(which: str, request: pytest.FixtureRequest) -> None:
    """Turn 1 with a reference and subject init on a 64x96 canvas, then an editing turn that reuses a crop."""
    drawer: Drawer = request.getfixturevalue(which)
    plan = TurnPlan(
        height=64,
        width=96,
        background="a beach",
        items=[
            PlanItem(subject_id="1", phrase="a girl, red scarf", box=Box(x=4, y=8, w=36, h=52)),
            PlanItem(subject_id="1-1", phrase="a red scarf", box=Box(x=10, y=20, w=20, h=8)),
            PlanItem(subject_id="2", phrase="a dog", box=Box(x=52, y=24, w=40, h=36)),
        ],
    )
    first = drawer.draw(DrawJob(plan=plan, references={"1": png("red")}, settings=fast_settings()))
    assert "prerender" in first.timings
    assert Image.open(io.BytesIO(first.image)).size == (96, 64)
    assert set(first.crops) == {"1", "1-1", "2"}
    second_plan = plan.model_copy(update={"edit": EditSpec(regenerate_subject_ids=["2"])})
    references = {"1": png("red"), "2": first.crops["2"].crop}
    second = drawer.draw(
        DrawJob(plan=second_plan, references=references, settings=fast_settings(seed=8), previous_image=first.image)
    )
    assert second.image != first.image and second.seed == 8


def test_sdxl_pooled_embeddings_follow_their_prompts(tiny_sdxl_drawer: Drawer) -> None:
    """§6.10: the conditional pooled embedding is the global prompt's, the negative one the negative's."""
    import torch

    from drawer.batches import main_batch

    pipe = tiny_sdxl_drawer.pipe
    plan = two_subject_plan()
    latents = torch.zeros(1, 4, plan.height // pipe.vae_scale_factor, plan.width // pipe.vae_scale_factor)
    batch = main_batch(pipe, plan, fast_settings(), None, {}, latents, [])
    _, _, pooled, _ = pipe.encode_prompt(prompt=plan.global_prompt(), do_classifier_free_guidance=False)
    _, _, neg_pooled, _ = pipe.encode_prompt(prompt=plan.negative_prompt or "x", do_classifier_free_guidance=False)
    kwargs = batch.prompts.pipeline_kwargs()
    torch.testing.assert_close(kwargs["pooled_prompt_embeds"], pooled, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(kwargs["negative_pooled_prompt_embeds"], neg_pooled, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(kwargs["pooled_prompt_embeds"], kwargs["negative_pooled_prompt_embeds"], atol=1e-3)


def test_prerender_is_one_batch_and_no_guidance_works(
    tiny_sdxl_drawer: Drawer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import drawer.subject_init as subject_init

    sizes: list[int] = []
    real = subject_init.render

    def recording(pipe, batch, progress):
        sizes.append(len(batch.images))
        return real(pipe, batch, progress)

    monkeypatch.setattr(subject_init, "render", recording)
    job = DrawJob(plan=two_subject_plan(), references={"2": png("blue")}, settings=fast_settings(guidance_scale=1.0))
    result = tiny_sdxl_drawer.draw(job)
    assert sizes == [2], "both subjects pre-rendered in one batch"
    assert result.width == 96


def test_ip_adapter_plus_end_to_end(tiny_drawer: Drawer) -> None:
    """The Plus variant (Resampler, penultimate CLIP hidden states), as the sd15/sdxl presets load it."""
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    from drawer.tiny import build_tiny_sd15

    pipe = build_tiny_sd15(plus=True)
    assert isinstance(pipe.unet.encoder_hid_proj.image_projection_layers[0], IPAdapterPlusImageProjection)
    drawer = DrawerClass(pipe, tiny_drawer.preset)
    job = DrawJob(plan=two_subject_plan(), references={"1": png("red"), "2": png("blue")}, settings=fast_settings())
    with_refs = drawer.draw(job)
    without = drawer.draw(job.model_copy(update={"references": {}}))
    assert with_refs.image != without.image
