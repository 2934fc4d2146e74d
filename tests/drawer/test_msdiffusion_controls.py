"""Reference controls on the MS-Diffusion backend (drawer.msdiffusion.controls): per-subject reference_scale and
step window, several references per subject (`average`, `tokens`), and the style reference refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from drawer.core import Drawer
from drawer.msdiffusion import adapter_of
from drawer.msdiffusion.inputs import msdiffusion_inputs, subject_tokens
from drawer.msdiffusion.install import build_context
from drawer.msdiffusion.tiny import build_tiny_msdiffusion
from studio.draw import DrawJob
from studio.failures import DrawError
from studio.plan import Box, PlanItem, TurnPlan
from studio.reference_controls import ReferenceControls
from studio.settings import ModelPreset
from tests.drawer.conftest import fast_settings, png
from tests.drawer.test_msdiffusion import image, layer_inputs, run_layer


@pytest.fixture(scope="module")
def ms_pipe():
    return build_tiny_msdiffusion()


PLAN = TurnPlan(  # 128×128: the attention grids of tests.drawer.test_msdiffusion.layer_inputs (8×8)
    height=128,
    width=128,
    background="a park",
    items=[
        PlanItem(subject_id="1", phrase="a girl", box=Box(x=0, y=0, w=64, h=64)),
        PlanItem(subject_id="2", phrase="a dog", box=Box(x=64, y=64, w=64, h=64)),
    ],
)
REFS = {"1": png("red"), "2": png("blue")}


def job(**kwargs) -> DrawJob:
    settings = kwargs.pop("settings", fast_settings(mechanisms=["subject_reference"]))
    return DrawJob(plan=PLAN, references=dict(REFS), settings=settings, **kwargs)


def decoded(refs: dict[str, bytes]):
    from drawer.images import decode_image

    return {sid: decode_image(data, sid) for sid, data in refs.items()}


def context_of(pipe, draw_job: DrawJob):
    inputs = msdiffusion_inputs(pipe, draw_job, decoded(draw_job.references))
    assert inputs is not None
    batch = SimpleNamespace(height=PLAN.height, width=PLAN.width, images=[0], steps=draw_job.settings.steps)
    return inputs, build_context(pipe, inputs, batch)


def masks_of(context, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    masks = context.box_masks(length).bool()
    return masks[0], masks[1]


def test_defaults_build_the_context_as_before(ms_pipe) -> None:
    inputs, context = context_of(ms_pipe, job())
    assert context.subject_active is None and inputs.token_counts is None
    assert context.subject_scales == [inputs.settings.scale] * 2
    assert context.token_counts == [adapter_of(ms_pipe).config.num_queries] * 2


def test_the_window_turns_a_subjects_image_branch_off_outside_its_steps(ms_pipe, monkeypatch) -> None:
    """Subject 1's window [0.5, 1) of 4 steps: its image output is zero at steps 0-1 and on at 2-3; subject 2
    (window from the plan item: [0, 0.5)) the other way round."""
    import drawer.msdiffusion.install as install

    seen: list[tuple[int, bool, bool]] = []

    def built(*args):
        context = build_context(*args)

        def observer(layer, masks, probs, out):
            first, second = masks.bool()
            seen.append((context.step, bool(out[0][first].abs().gt(0).any()), bool(out[0][second].abs().gt(0).any())))

        context.observer = observer
        return context

    monkeypatch.setattr(install, "build_context", built)
    items = [PLAN.items[0], PLAN.items[1].model_copy(update={"reference_window": (0.0, 0.5)})]
    plan = PLAN.model_copy(update={"items": items})
    controls = {"1": ReferenceControls(reference_window=(0.5, 1.0)), "2": ReferenceControls(reference_window=(0.5, 1))}
    Drawer(ms_pipe, ModelPreset(kind="tiny-sdxl")).draw(
        DrawJob(
            plan=plan,
            references=REFS,
            settings=fast_settings(mechanisms=["subject_reference"]),
            reference_controls=controls,
        )
    )
    by_step = {
        step: (any(a for s, a, _ in seen if s == step), any(b for s, _, b in seen if s == step)) for step, _, _ in seen
    }
    assert by_step == {0: (False, True), 1: (False, True), 2: (True, False), 3: (True, False)}


def test_reference_scale_scales_that_subjects_contribution_only(ms_pipe) -> None:
    attn, hidden, text = layer_inputs(ms_pipe)
    plain = run_layer(attn, hidden, text)[1]
    _, default = context_of(ms_pipe, job())
    _, scaled = context_of(ms_pipe, job(reference_controls={"1": ReferenceControls(reference_scale=2.5)}))
    assert scaled.subject_scales == [2.5 * default.scale, default.scale]
    base = run_layer(attn, hidden, text, default)[1] - plain
    more = run_layer(attn, hidden, text, scaled)[1] - plain
    first, second = masks_of(default, hidden.shape[1])
    assert base[first].abs().gt(0).any()
    assert torch.allclose(more[first], 2.5 * base[first], atol=1e-5)
    assert torch.equal(more[second], base[second])


def test_two_references_averaged_both_shape_the_subjects_tokens(ms_pipe) -> None:
    adapter = adapter_of(ms_pipe)
    nq, nd = adapter.config.num_queries, adapter.num_dummy
    one, _ = context_of(ms_pipe, job())
    two, _ = context_of(ms_pipe, job(more_references={"1": [png("green")]}))
    other, _ = context_of(ms_pipe, job(more_references={"1": [png("yellow")]}))
    assert two.tokens.shape == one.tokens.shape and two.token_counts is None
    box, phrase = two.boxes[0], PLAN.items[0].detection_name
    each = subject_tokens(ms_pipe, adapter, [image("red"), image("green")], [phrase, phrase], [box, box])
    subject = slice(nd, nd + nq)
    assert torch.allclose(two.tokens[subject], each.mean(dim=0), atol=1e-6)
    assert not torch.allclose(two.tokens[subject], one.tokens[subject])  # the second reference counts
    assert not torch.allclose(two.tokens[subject], other.tokens[subject])  # ... and which one it is
    assert torch.equal(two.tokens[nd + nq :], one.tokens[nd + nq :])  # subject 2 untouched


def test_two_references_as_tokens_give_the_subject_more_tokens_in_its_box(ms_pipe) -> None:
    adapter = adapter_of(ms_pipe)
    nq, nd = adapter.config.num_queries, adapter.num_dummy
    tokens = {"1": ReferenceControls(reference_combine="tokens")}
    inputs, context = context_of(ms_pipe, job(more_references={"1": [png("green")]}, reference_controls=tokens))
    assert inputs.token_counts == [2 * nq, nq] and context.tokens.shape[0] == nd + 3 * nq
    box, phrase = inputs.boxes[0], PLAN.items[0].detection_name
    each = subject_tokens(ms_pipe, adapter, [image("red"), image("green")], [phrase, phrase], [box, box])
    assert torch.allclose(context.tokens[nd : nd + 2 * nq], each.reshape(-1, each.shape[-1]), atol=1e-6)
    attn, hidden, text = layer_inputs(ms_pipe)
    length = hidden.shape[1]
    first, second = masks_of(context, length)
    bias = context.bias(context.box_masks(length))
    assert bool((bias[first][:, nd : nd + 2 * nq] == 0).all()) and bool((bias[second][:, nd : nd + 2 * nq] < 0).all())
    assert bool((bias[second][:, nd + 2 * nq :] == 0).all())
    _, changed = context_of(ms_pipe, job(more_references={"1": [png("yellow")]}, reference_controls=tokens))
    out, moved = run_layer(attn, hidden, text, context)[1], run_layer(attn, hidden, text, changed)[1]
    assert not torch.allclose(out[first], moved[first])  # the second reference's tokens are read in box 1
    assert torch.equal(out[second], moved[second])


def test_a_style_reference_on_an_msdiffusion_preset_is_refused_clearly(ms_pipe) -> None:
    with pytest.raises(DrawError, match=r"style_reference: an MS-Diffusion preset has no plain IP-Adapter"):
        Drawer(ms_pipe, ModelPreset(kind="tiny-sdxl")).draw(job(style_reference=png("green")))


def test_a_style_reference_for_an_msdiffusion_session_is_a_422_naming_the_field(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.api.conftest import make_service

    service, engine = make_service(tmp_path)
    headers = {"Authorization": f"Bearer {service.db.create_key('ms')}"}
    settings = {"preset": "msdiffusion", "style_reference": {"image_id": "some-image"}}
    try:
        with TestClient(create_app(service)) as client:
            body = {"height": 1024, "width": 1024, "settings": settings}
            answer = client.post("/v1/sessions", json=body, headers=headers)
            assert answer.status_code == 422, answer.text
            assert "settings.style_reference.image_id: an MS-Diffusion preset" in answer.text
            plain = client.post("/v1/sessions", json={**body, "settings": {"preset": "msdiffusion"}}, headers=headers)
            assert plain.status_code == 201, plain.text
    finally:
        engine.hold.set()
