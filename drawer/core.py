"""The Drawer: one turn's DrawJob in, its picture and subject crops out."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from drawer.batches import main_batch, prerender_inputs, scene_prompt
from drawer.conditioning import ReferenceEmbeds, encode_references, has_ip_adapter
from drawer.editing import composite, edit_blends
from drawer.fast_mode import FastMode
from drawer.images import decode_image
from drawer.latent_blend import LatentBlend
from drawer.live_canvas import EncodingCache
from drawer.loading import ModelLoadError, load_pipeline, make_scheduler
from drawer.mechanisms.anchor_cache import AnchorCache, caches_to_return, decode_caches
from drawer.mechanisms.shared_attention import AnchorStore, SharedSetup, prompt_token_positions, reference_hash
from drawer.mechanisms.subject_init import wants_prerender
from drawer.msdiffusion.inputs import msdiffusion_inputs
from drawer.msdiffusion.weights import adapter_of
from drawer.parallel_attention import install_parallel_attention
from drawer.previews import PreviewDecoder, PreviewObserver
from drawer.reference_controls import job_references, job_style
from drawer.region_sampler import render_regions
from drawer.render import render
from drawer.standin import PlannedBoxLocator
from drawer.stepping import Progress
from drawer.subject_init import group_subjects, prerender_and_collage, prerender_canvas
from drawer.validation import check_job
from studio.draw import DrawJob, DrawResult, DrawSettings, SubjectCrop
from studio.failures import DrawError
from studio.fast_mode import fast_mode_problem, preview_sink
from studio.images import encode_png
from studio.plan import TurnPlan
from studio.protocols import LocateTarget, StepCallback, SubjectLocator
from studio.settings import DEFAULT_MAX_SUBJECTS, ModelPreset
from studio.subjects import parent_of


class Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def locate_targets(plan: TurnPlan) -> list[LocateTarget]:
    return [
        LocateTarget(
            subject_id=item.subject_id,
            name=item.detection_name,
            planned_box=item.box,
            parent_id=parent_of(item.subject_id),
        )
        for item in plan.items
    ]


class Drawer:
    """Draws turns with one loaded pipeline. Thread-safe: draws are serialized on the pipeline."""

    def __init__(
        self,
        pipe: DiffusionPipeline,
        preset: ModelPreset,
        locator: SubjectLocator | None = None,
        max_subjects: int = DEFAULT_MAX_SUBJECTS,
    ) -> None:
        self.pipe = pipe
        self.preset = preset
        self.locator: SubjectLocator = locator if locator is not None else PlannedBoxLocator()
        self.max_subjects = max_subjects
        self._lock = threading.Lock()
        install_parallel_attention(pipe.unet)
        self._scheduler_config = dict(pipe.scheduler.config)
        self._schedulers: dict[str, object] = {"default": pipe.scheduler}
        self.anchors = AnchorStore()
        """Per-subject ConsiStory anchor caches across turns for jobs without `anchor_caches` (in memory; a job that
        carries the subject memory's caches uses those instead, docs/mechanisms.md)."""
        self.fast_mode = FastMode(preset, self._scheduler_config)
        """The preset's few-step weights, loaded at the first fast draw (docs/fast_mode.md)."""
        self.preview_decoder = PreviewDecoder(preset)
        self.encodings = EncodingCache()
        """The live-canvas LRU cache of text encodings and reference tokens (used when settings.live_canvas)."""

    @contextmanager
    def exclusive(self, scheduler: str = "default") -> Iterator[DiffusionPipeline]:
        """The pipeline with `scheduler` set, held (no `draw` runs meanwhile) for a render outside `draw`
        (drawer/consistory.py's batch mode)."""
        with self._lock:
            self._use_scheduler(scheduler)
            yield self.pipe

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    def draw(
        self,
        job: DrawJob,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> DrawResult:
        with self._lock:
            return self._draw(job, on_step, cancel)

    def _draw(self, job: DrawJob, on_step: StepCallback | None, cancel: threading.Event | None) -> DrawResult:
        problem = fast_mode_problem(job.settings, self.preset)
        if problem is not None:
            raise DrawError(problem)
        with ExitStack() as modes:
            if job.settings.live_canvas:
                modes.enter_context(self.encodings.use())
            try:
                return self._draw_job(job, on_step, cancel, modes)
            except ModelLoadError as exc:  # fast-mode or preview weights missing or wrong
                raise DrawError(str(exc)) from exc

    def _draw_job(
        self, job: DrawJob, on_step: StepCallback | None, cancel: threading.Event | None, modes: ExitStack
    ) -> DrawResult:
        timer = Timer()
        plan, settings = job.plan, job.settings
        check_job(job, max_side=self.preset.max_side, size_factor=self.vae_scale_factor, max_subjects=self.max_subjects)
        seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**63)
        with timer.stage("decode_inputs"):
            references = {
                sid: decode_image(data, f"the reference image of subject {sid}") for sid, data in job.references.items()
            }
            previous = None
            if plan.edit is not None and job.previous_image is not None:
                previous = decode_image(job.previous_image, "the previous image")
                if previous.size != (plan.width, plan.height):
                    previous = previous.resize((plan.width, plan.height), Image.Resampling.LANCZOS)
        only = set(plan.edit.regenerate_subject_ids) if plan.edit is not None else None
        prerender = wants_prerender(settings, group_subjects(plan, only))
        progress = Progress(settings.steps + (settings.prerender_steps if prerender else 0), on_step, cancel)
        progress.check_cancel()

        pipe = self.pipe
        self._use_scheduler(settings.scheduler)
        if settings.mode == "fast":
            modes.enter_context(self.fast_mode.active(pipe))
        noise = self._noise(plan, seed)
        blend_noise = self._noise(plan, seed + 1 if seed < 2**63 - 1 else 0)
        with timer.stage("decode_inputs"):
            subject_refs = job_references(job, references)
        with timer.stage("encode"):
            if self.uses_references:
                embeds, ref_index, ref_plan = subject_refs.encode(pipe, encode_references)
            else:
                embeds, ref_index, ref_plan = None, _index(list(references)), None
        hooks: list[LatentBlend] = []
        if prerender:
            with timer.stage("prerender"):
                max_side = self.preset.prerender_max_side
                canvas = prerender_canvas(plan.height, plan.width, max_side, self.vae_scale_factor)
                inputs = prerender_inputs(pipe, plan, settings, embeds, ref_index, noise, only, seed, canvas)
                assert inputs is not None
                inputs.batch.reference_plan = ref_plan
                init = prerender_and_collage(pipe, inputs, plan, settings, self.locator, blend_noise, progress)
            if init.blend is not None:
                hooks.append(init.blend)
            new_refs = self._references_from_prerender(init.crops, references)
            if new_refs:
                with timer.stage("encode"):
                    for sid, image in new_refs.items():
                        subject_refs.add(sid, [image])
                    embeds, ref_index, ref_plan = subject_refs.encode(pipe, encode_references)
        regenerate = None
        if plan.edit is not None and previous is not None:
            with timer.stage("encode"):
                edit_hooks, regenerate = edit_blends(pipe, plan, settings, previous, blend_noise)
            hooks.extend(edit_hooks)
        with timer.stage("denoise"):
            latents = self._start_latents(noise, hooks, settings.steps)
            batch = main_batch(pipe, plan, settings, embeds, ref_index, latents, list(hooks), seed)
            batch.global_frames = self._global_frames(job, settings, timer)
            batch.reference_plan = ref_plan
            batch.style_reference, batch.style_scale = self._style(job, timer), settings.style_reference.scale
            shared = "shared_attention" in settings.mechanisms
            given = decode_caches(job.anchor_caches or {}) if shared else {}
            batch.shared = self._shared_setup(job, given) if shared else None
            batch.msdiffusion = msdiffusion_inputs(pipe, job, references)  # None unless an MS-Diffusion preset
            batch.observers = self._preview_observers(settings, on_step, progress)
            if settings.sampler == "regions":
                image = render_regions(pipe, batch, plan, settings, progress, scene_prompt(plan, plan.items))
            else:
                image = render(pipe, batch, progress)[0]
            anchor_caches = self._keep_anchor_caches(job, batch.shared, given)
        if regenerate is not None and previous is not None:
            image = composite(image, previous, regenerate, self.vae_scale_factor)
        with timer.stage("locate"):
            crops = self.locator.locate(image, locate_targets(plan)) if plan.items else {}
        return DrawResult(
            image=encode_png(image),
            width=image.width,
            height=image.height,
            seed=seed,
            crops=crops,
            timings=timer.timings,
            anchor_caches=anchor_caches,
        )

    def _global_frames(self, job: DrawJob, settings: DrawSettings, timer: Timer) -> ReferenceEmbeds | None:
        """Story-Adapter's frames of the previous round, encoded in one batch (None: round 0, or GRCA off)."""
        if "global_reference" not in settings.mechanisms or not job.global_references:
            return None
        if not self.uses_references:
            raise DrawError("global_reference needs a preset with an IP-Adapter")
        with timer.stage("encode"):
            frames = [decode_image(data, f"global reference frame {i}") for i, data in enumerate(job.global_references)]
            return encode_references(self.pipe, frames)

    def _style(self, job: DrawJob, timer: Timer) -> ReferenceEmbeds | None:
        """The global style reference's embeddings (docs/reference_controls.md), or None without one."""
        if job.style_reference is None:
            return None
        if not self.uses_references:
            if adapter_of(self.pipe) is not None:  # docs/msdiffusion.md: its image branch is per subject only
                raise DrawError(
                    "style_reference: an MS-Diffusion preset has no plain IP-Adapter to attend to a whole-canvas "
                    "style reference; drop the style reference (settings.style_reference.image_id) or pick a preset "
                    "with an IP-Adapter"
                )
            raise DrawError("a style reference needs a preset with an IP-Adapter")
        with timer.stage("encode"):
            return job_style(self.pipe, job)

    def _shared_setup(self, job: DrawJob, given: dict[str, AnchorCache]) -> SharedSetup:
        """Shared attention in a turn: one image; each planned subject with a usable anchor cache (the job's, whose
        validity the subject memory owns, or this drawer's own) is attended to inside its box, and every subject's
        patches are recorded for later turns (none when the cache bound is 0)."""
        plan, shared = job.plan, job.settings.shared_attention
        prompt = scene_prompt(plan, plan.items)
        cached = []
        for item in plan.items:
            if job.anchor_caches is not None:
                cache = given.get(item.subject_id)
            else:
                cache = self.anchors.usable(item.subject_id, job.references.get(item.subject_id))
            if cache is not None:
                cached.append((cache, 0, item.box))
        return SharedSetup(
            subject_tokens=[
                {item.subject_id: prompt_token_positions(self.pipe, prompt, item.detection_name) for item in plan.items}
            ],
            anchors=[],
            mask_dropout=shared.mask_dropout,
            vanilla_query_steps=shared.vanilla_query_steps,
            feature_injection=shared.feature_injection,
            cached=cached,
            record={
                item.subject_id: (0, item.box, reference_hash(job.references.get(item.subject_id)))
                for item in plan.items
            }
            if shared.anchor_cache_mib > 0
            else {},
        )

    def _keep_anchor_caches(
        self, job: DrawJob, shared: SharedSetup | None, given: dict[str, AnchorCache]
    ) -> dict[str, bytes]:
        """The anchor caches the render recorded, within the job's size bound: back to the caller's subject memory
        when the job carried its caches (those that beat them), else into this drawer's own store."""
        if shared is None:
            return {}
        max_bytes = int(job.settings.shared_attention.anchor_cache_mib * 2**20)
        if job.anchor_caches is None:
            self.anchors.offer(shared.recorded, max_bytes)
            return {}
        return caches_to_return(shared.recorded, given, max_bytes)

    def _preview_observers(
        self, settings: DrawSettings, on_step: StepCallback | None, progress: Progress
    ) -> list[PreviewObserver]:
        """Live previews of the main render, when wanted, listened to, and the preset can decode them."""
        sink = preview_sink(on_step)
        if not settings.wants_previews or sink is None or not self.preview_decoder.available:
            return []
        return [PreviewObserver(self.preview_decoder, settings, sink, progress.done, progress.total, settings.steps)]

    def _use_scheduler(self, name: str) -> None:
        if name not in self._schedulers:
            self._schedulers[name] = make_scheduler(name, self._scheduler_config)
        self.pipe.scheduler = self._schedulers[name]

    @property
    def uses_references(self) -> bool:
        return has_ip_adapter(self.pipe)

    def _references_from_prerender(
        self, crops: dict[str, SubjectCrop], references: dict[str, Image.Image]
    ) -> dict[str, Image.Image]:
        """A subject drawn for the first time is conditioned on the crop just cut from its pre-render."""
        if not self.uses_references:
            return {}
        out = {}
        for sid, crop in crops.items():
            if sid not in references and crop.found and crop.crop is not None:
                out[sid] = decode_image(crop.crop, f"the pre-render crop of subject {sid}")
        return out

    def _start_latents(self, noise: torch.Tensor, hooks: list[LatentBlend], steps: int) -> torch.Tensor:
        """Step-0 blend of the initial noise (the pipeline scales `latents` by init_noise_sigma itself)."""
        if not hooks:
            return noise
        scheduler = self.pipe.scheduler
        scheduler.set_timesteps(steps, device=self.pipe._execution_device)
        sigma = float(scheduler.init_noise_sigma)
        latents = noise * sigma
        for hook in hooks:
            latents = hook.blend_initial(latents, scheduler.timesteps[0])
        return latents / sigma

    def _noise(self, plan: TurnPlan, seed: int) -> torch.Tensor:
        """Unscaled Gaussian noise from a CPU generator, so a seed gives the same picture on any device."""
        factor = self.vae_scale_factor
        shape = (1, self.pipe.unet.config.in_channels, plan.height // factor, plan.width // factor)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        return noise.to(device=self.pipe._execution_device, dtype=self.pipe.unet.dtype)


def _index(ids: list[str]) -> dict[str, int]:
    return {sid: i for i, sid in enumerate(ids)}


def load_drawer(
    preset: ModelPreset, locator: SubjectLocator | None = None, max_subjects: int = DEFAULT_MAX_SUBJECTS
) -> Drawer:
    """Load the preset's models and return a ready Drawer (implements `studio.protocols.Drawer`)."""
    return Drawer(load_pipeline(preset), preset, locator=locator, max_subjects=max_subjects)
