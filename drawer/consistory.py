"""ConsiStory's batch mode through the Drawer (studio/consistory.py has the request): the N prompts in one
batch, shared attention alone, the first two pictures the anchors (`SharedSetup.anchors`), the subject's masks
from its tokens in each prompt. No boxes and no references: the layout context stays inactive (plain text
attention), the IP-Adapter branch, where the preset has one, is fed a placeholder it never reads."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline

from drawer.conditioning import encode_references, encode_texts, has_ip_adapter
from drawer.core import Drawer
from drawer.mechanisms.shared_attention import SharedSetup, prompt_token_positions
from drawer.parallel_attention import RegionImage
from drawer.render import RenderBatch, render
from drawer.stepping import Progress
from studio.consistory import ANCHORS, ConsistoryBatch
from studio.failures import DrawError
from studio.images import encode_png
from studio.protocols import StepCallback

SUBJECT_ID = "1"


@dataclass
class ConsistoryRender:
    images: list[bytes]
    """PNG of each picture, in prompt order."""
    seeds: list[int]
    subject_tokens: list[list[int]]
    seconds: float


def draw_consistory(
    drawer: Drawer,
    batch: ConsistoryBatch,
    on_step: StepCallback | None = None,
    cancel: threading.Event | None = None,
) -> ConsistoryRender:
    """Draw the batch in one render of `drawer`'s pipeline. DrawError for a canvas the preset refuses or a subject
    that names no word to attend to."""
    try:
        batch.check_canvas(drawer.preset.max_side)
    except ValueError as exc:
        raise DrawError(str(exc)) from exc
    settings = batch.draw
    seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**63)
    seeds = [(seed + i) % 2**63 for i in range(len(batch.settings))]
    started = time.perf_counter()
    with drawer.exclusive(settings.scheduler) as pipe:
        prompts = batch.prompts()
        tokens = [subject_positions(pipe, prompt, batch.subject) for prompt in prompts]
        if not all(tokens):
            raise DrawError(f"subject {batch.subject!r} names no word the prompts' tokens hold (e.g. only 'a', 'the')")
        text = encode_texts(pipe, prompts, [batch.negative] * len(prompts))
        render_batch = RenderBatch(
            images=[RegionImage(boxes=[], background_row=0, subject_rows=[], reference_index=[]) for _ in prompts],
            prompts=text,
            region_text=text.embeds[:1],
            references=encode_references(pipe, []) if has_ip_adapter(pipe) else None,
            height=batch.height,
            width=batch.width,
            steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            latents=torch.cat([_noise(pipe, batch.height, batch.width, s) for s in seeds]),
            fuse_scale=settings.fuse_scale,
            global_weight=settings.global_weight,
            img_scale=settings.img_scale,
            refine_step=None,
            seed=seed,
            mechanisms=("shared_attention",),
        )
        render_batch.shared = SharedSetup(
            subject_tokens=[{SUBJECT_ID: positions} for positions in tokens],
            anchors=list(ANCHORS),
            mask_dropout=settings.shared_attention.mask_dropout,
            vanilla_query_steps=settings.shared_attention.vanilla_query_steps,
        )
        pictures = render(pipe, render_batch, Progress(settings.steps, on_step, cancel))
    return ConsistoryRender(
        images=[encode_png(picture) for picture in pictures],
        seeds=seeds,
        subject_tokens=tokens,
        seconds=time.perf_counter() - started,
    )


def subject_positions(pipe: DiffusionPipeline, prompt: str, subject: str) -> list[int]:
    """The subject's content tokens in `prompt`, which starts with it: only within the subject's own span, so a
    setting word sharing a token with the subject stays out of its mask."""
    span = len(pipe.tokenizer(subject.strip(), add_special_tokens=False).input_ids)
    return [position for position in prompt_token_positions(pipe, prompt, subject) if position <= span]


def _noise(pipe: DiffusionPipeline, height: int, width: int, seed: int) -> torch.Tensor:
    """One picture's unscaled Gaussian noise from a CPU generator (the same picture on any device), as the
    Drawer makes it for a turn."""
    factor = int(pipe.vae_scale_factor)
    shape = (1, pipe.unet.config.in_channels, height // factor, width // factor)
    noise = torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(seed), dtype=torch.float32)
    return noise.to(device=pipe._execution_device, dtype=pipe.unet.dtype)
