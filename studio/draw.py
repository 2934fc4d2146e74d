"""What goes into the drawer and what comes out of it. Images travel as PNG bytes (base64 in JSON)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, model_validator

from studio.geometry import Box
from studio.msdiffusion_settings import MSDiffusionSettings
from studio.plan import TurnPlan
from studio.reference_controls import MAX_SUBJECT_REFERENCES, ReferenceControls, StyleReferenceSettings
from studio.regions import RegionSamplerSettings, SamplerName, sampler_problem
from studio.text import Text

_BYTES_AS_BASE64 = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

SchedulerName = Literal["ddim", "dpm++", "euler", "euler_a", "pndm", "default"]
MAX_STEPS = 200
FuseWeight = Annotated[FiniteFloat, Field(ge=0.0, le=5.0)]
"""One `fuse_scale` entry: a weight in attention, where a huge value saturates the picture (all black)."""


Mechanism = Literal["regional", "subject_reference", "subject_init", "shared_attention", "global_reference"]
"""A consistency mechanism a turn may use (docs/mechanisms.md): Parallel-UNet's regional text rows
(`regional`) and subject image rows (`subject_reference`), subject-initialized generation (`subject_init`),
ConsiStory's shared subject attention (`shared_attention`), Story-Adapter's global reference
cross-attention (`global_reference`)."""
AUTOSTUDIO_MECHANISMS: tuple[Mechanism, ...] = ("regional", "subject_reference", "subject_init")
"""The default set: AutoStudio as published."""


def parse_mechanisms(text: str) -> list[Mechanism]:
    """The CLI form `a,b,c` (empty: no mechanism, plain attention); names are checked by DrawSettings."""
    return [name.strip() for name in text.split(",") if name.strip()]  # type: ignore[misc]


MECHANISMS_HELP = (
    "comma-separated consistency mechanisms (docs/mechanisms.md); default regional,subject_reference,subject_init"
)


DEFAULT_ANCHOR_CACHE_MIB = 32.0
MAX_ANCHOR_CACHE_MIB = 256.0
"""Bounds of one subject's ConsiStory anchor cache (docs/mechanisms.md, "Anchor cache storage")."""
MAX_ANCHOR_CACHE_BLOB = int(MAX_ANCHOR_CACHE_MIB * 2**20) + 2**20
"""The largest anchor-cache blob a job or result may carry: the bound plus room for the safetensors header."""


def _bounded_blobs(blobs: dict[str, bytes] | None, what: str) -> None:
    for subject_id, data in (blobs or {}).items():
        if len(data) > MAX_ANCHOR_CACHE_BLOB:
            raise ValueError(f"{what}[{subject_id!r}] is {len(data)} bytes, over {MAX_ANCHOR_CACHE_BLOB}")


class SharedAttentionSettings(BaseModel):
    """ConsiStory's subject-driven shared self-attention (seed-mechanisms.md, ConsiStory)."""

    mask_dropout: FiniteFloat = Field(default=0.5, ge=0.0, le=1.0, description="fraction of anchor patches dropped")
    vanilla_query_steps: FiniteFloat = Field(
        default=0.1, ge=0.0, le=1.0, description="fraction of the first steps that blend in the vanilla queries"
    )
    feature_injection: bool = Field(
        default=False,
        description="DIFT-style feature injection among a batch's anchors (a pre-pass to ~74% of the steps)",
    )
    anchor_cache_mib: FiniteFloat = Field(
        default=DEFAULT_ANCHOR_CACHE_MIB,
        ge=0.0,
        le=MAX_ANCHOR_CACHE_MIB,
        description="size bound of one subject's anchor cache: a larger one keeps evenly spaced steps, one whose "
        "single step exceeds it is not kept; 0 keeps none",
    )


class GlobalReferenceSettings(BaseModel):
    """Story-Adapter's global reference cross-attention: the IP-Adapter over every frame of the previous round."""

    scale: FiniteFloat = Field(default=0.3, ge=0.0, le=2.0, description="IP-Adapter scale of the global references")


FAST_STEPS = 4
"""Fast mode's default step count (LCM-LoRA / SDXL-Lightning 4-step)."""
FAST_GUIDANCE = 1.0
"""Fast mode's default guidance: 1.0, no classifier-free guidance (LCM-LoRA and Lightning are distilled with it)."""
DrawMode = Literal["normal", "fast"]
PreviewFormat = Literal["jpeg", "webp"]


class DrawSettings(BaseModel):
    """Generation settings of one turn. Defaults follow AutoStudio's SD1.5 run (notes §1.6)."""

    preset: Text = Field(default="tiny", min_length=1, max_length=100, description="model preset name")
    steps: int = Field(default=30, ge=1, le=MAX_STEPS)
    guidance_scale: FiniteFloat = Field(default=7.5, ge=0.0, le=50.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    img_scale: FiniteFloat = Field(default=0.7, ge=0.0, le=5.0, description="IP-Adapter strength inside boxes")
    fuse_scale: tuple[FuseWeight, FuseWeight] = Field(
        default=(1.2, 0.0), description="text weight of a subject inside its box; IP weight of the background"
    )
    global_weight: FiniteFloat = Field(default=0.3, ge=0.0, le=2.0, description="global prompt weight inside boxes")
    refine_step: int | None = Field(
        default=20, ge=0, le=MAX_STEPS, description="from this step on, plain global-prompt attention; None: never"
    )
    subject_init: bool = Field(
        default=True,
        description="deprecated alias: False removes `subject_init` from `mechanisms`; the list is the one rule",
    )
    subject_init_steps: int = Field(default=10, ge=0, le=MAX_STEPS)
    subject_init_strength: FiniteFloat = Field(default=0.8, ge=0.0, le=1.0)
    prerender_steps: int = Field(default=15, ge=1, le=MAX_STEPS)
    scheduler: SchedulerName = "ddim"
    mechanisms: list[Mechanism] = Field(
        default_factory=lambda: list(AUTOSTUDIO_MECHANISMS),
        max_length=len(Mechanism.__args__),  # type: ignore[attr-defined]
        description="the consistency mechanisms this turn uses (any subset, each once)",
    )
    shared_attention: SharedAttentionSettings = Field(default_factory=SharedAttentionSettings)
    global_reference: GlobalReferenceSettings = Field(default_factory=GlobalReferenceSettings)
    style_reference: StyleReferenceSettings = Field(default_factory=StyleReferenceSettings)
    msdiffusion: MSDiffusionSettings = Field(default_factory=MSDiffusionSettings)
    sampler: SamplerName = Field(
        default="default", description="`regions`: StreamMultiDiffusion's region sampler (docs/regions.md)"
    )
    regions: RegionSamplerSettings = Field(default_factory=RegionSamplerSettings)
    mode: DrawMode = Field(
        default="normal",
        description="fast: the preset's few-step weights (LCM-LoRA / Lightning), 4 steps and guidance 1 unless set, "
        "the preset's few-step scheduler (docs/fast_mode.md)",
    )
    previews: bool | None = Field(
        default=None, description="stream preview images while drawing; None: on in fast mode, off in normal mode"
    )
    preview_every: int = Field(default=1, ge=1, le=MAX_STEPS, description="a preview every this many steps")
    preview_max_side: int = Field(default=256, ge=32, le=1024, description="longest side of a preview, pixels")
    preview_format: PreviewFormat = "jpeg"
    live_canvas: bool = Field(
        default=False,
        description="keep this drawer's text encodings and reference tokens in an LRU cache, so an edit that "
        "changes one prompt or box re-encodes only what changed",
    )

    @property
    def wants_previews(self) -> bool:
        """Previews as asked for, or by default: on in fast mode, off in normal mode."""
        return self.previews if self.previews is not None else self.mode == "fast"

    @model_validator(mode="before")
    @classmethod
    def _fast_defaults(cls, data: object) -> object:
        """Fast mode's own defaults for the fields not given: 4 steps, guidance 1, the preset's few-step scheduler
        (`default`); explicit values win. Runs before the step rule, so the step fields follow 4 steps."""
        if isinstance(data, dict) and data.get("mode") == "fast":
            data = {"steps": FAST_STEPS, "guidance_scale": FAST_GUIDANCE, "scheduler": "default", **data}
        return data

    @model_validator(mode="after")
    def _steps_consistent(self) -> DrawSettings:
        """The one rule for step counts (API, SDK, CLI, demo, benchmark runner): the defaults describe a
        30-step run; a step count left unset follows `steps` in the same proportion (subject init over the
        first third, pre-render with half the steps, refinement from two thirds on), at least 1 so that
        no step count switches its mechanism off. Explicit values win; explicit values that contradict
        `steps` or `subject_init` are errors, never silently changed.

        `mechanisms` holds each member once. `subject_init` (bool) is a deprecated alias of the
        `subject_init` mechanism: False removes the mechanism from the list, and the bool always ends up
        equal to "`subject_init` in mechanisms", so the two never disagree."""
        if len(set(self.mechanisms)) != len(self.mechanisms):
            raise ValueError(f"mechanisms lists a member twice: {self.mechanisms}")
        explicit = self.model_fields_set
        if {"subject_init", "mechanisms"} <= explicit and self.subject_init and "subject_init" not in self.mechanisms:
            raise ValueError("subject_init=True contradicts mechanisms without `subject_init`: the list is the rule")
        if not self.subject_init:
            self.mechanisms = [m for m in self.mechanisms if m != "subject_init"]
        self.subject_init = "subject_init" in self.mechanisms
        if self.msdiffusion.mask_threshold is not None and self.msdiffusion.start_step >= self.steps:
            raise ValueError(
                f"msdiffusion.start_step ({self.msdiffusion.start_step}) must be below steps ({self.steps}) "
                "for the auto layout (mask_threshold) to take effect"
            )
        for name in ("subject_init_steps", "prerender_steps", "refine_step"):
            if name not in self.model_fields_set:
                setattr(self, name, steps_following(name, self.steps))
        if self.subject_init_steps > self.steps:
            raise ValueError(f"subject_init_steps ({self.subject_init_steps}) cannot exceed steps ({self.steps})")
        if self.refine_step is not None and self.refine_step > self.steps:
            raise ValueError(f"refine_step ({self.refine_step}) cannot exceed steps ({self.steps})")
        if self.subject_init and self.subject_init_steps == 0:
            raise ValueError("subject_init_steps=0 cannot run subject init: give it at least 1 or set subject_init off")
        if self.mode == "fast" and self.scheduler != "default":
            raise ValueError("scheduler: fast mode uses the preset's few-step scheduler; leave it unset (or 'default')")
        return self

    @model_validator(mode="after")
    def _sampler_consistent(self) -> DrawSettings:
        problem = sampler_problem(self.sampler, list(self.mechanisms), self.steps, self.regions)
        if problem:
            raise ValueError(problem)
        return self


_STEP_DEFAULTS_OF_30 = {"subject_init_steps": 10, "prerender_steps": 15, "refine_step": 20}
"""The default step counts of a 30-step run (AutoStudio's), which other step counts scale."""


def steps_following(name: str, steps: int) -> int:
    """The default of step field `name` for a run of `steps` denoising steps: the 30-step default scaled
    in proportion, between 1 and `steps`."""
    return min(steps, max(1, round(_STEP_DEFAULTS_OF_30[name] * steps / 30)))


class DrawJob(BaseModel):
    """A turn plan, the reference image of each subject that has one, and the settings."""

    model_config = _BYTES_AS_BASE64

    plan: TurnPlan
    references: dict[str, bytes] = Field(default_factory=dict, description="subject id → PNG/JPEG bytes")
    settings: DrawSettings = Field(default_factory=DrawSettings)
    previous_image: bytes | None = Field(default=None, description="the image an editing turn keeps outside its boxes")
    global_references: list[bytes] = Field(
        default_factory=list,
        max_length=200,
        description="Story-Adapter: every frame of the previous round, attended to under one softmax",
    )
    anchor_caches: dict[str, bytes] | None = Field(
        default=None,
        description="ConsiStory: the subject memory's anchor cache of each planned subject that has one (subject id "
        "→ safetensors blob); given (even empty), the drawer uses only these and returns the better ones it "
        "records; None: the drawer keeps its own in memory (docs/mechanisms.md)",
    )
    more_references: dict[str, Annotated[list[bytes], Field(max_length=MAX_SUBJECT_REFERENCES - 1)]] = Field(
        default_factory=dict, description="subject id → further reference images, used with `references`"
    )
    reference_controls: dict[str, ReferenceControls] = Field(
        default_factory=dict, description="subject id → its memory's reference controls (plan items override)"
    )
    style_reference: bytes | None = Field(
        default=None, description="the global style reference image (whole canvas, at settings.style_reference.scale)"
    )

    @model_validator(mode="after")
    def _refs_belong_to_plan(self) -> DrawJob:
        unknown = sorted(set(self.references) - set(self.plan.subject_ids))
        if unknown:
            raise ValueError(f"references given for subjects not in the plan: {unknown}")
        if self.plan.edit is not None and self.previous_image is None:
            raise ValueError("an editing plan needs the previous image")
        if self.global_references and "global_reference" not in self.settings.mechanisms:
            raise ValueError("global_references given without the `global_reference` mechanism in settings")
        stray = sorted(set(self.anchor_caches or {}) - set(self.plan.subject_ids))
        if stray:
            raise ValueError(f"anchor_caches given for subjects not in the plan: {stray}")
        _bounded_blobs(self.anchor_caches, "anchor_caches")
        orphans = sorted(set(self.more_references) - set(self.references))
        if orphans:
            raise ValueError(f"more_references given for subjects without a main reference: {orphans}")
        return self


class SubjectCrop(BaseModel):
    """Where one planned subject was found in an image, and its square-padded, masked crop."""

    model_config = _BYTES_AS_BASE64

    subject_id: str
    found: bool
    reason: str | None = Field(default=None, description="why the subject is missing, when it is")
    box: Box | None = None
    score: float = 0.0
    iou_with_plan: float = 0.0
    mask: bytes | None = Field(default=None, description="PNG, mode L, canvas size, 255 = subject")
    crop: bytes | None = Field(default=None, description="PNG, square-padded masked crop (the reference)")


class DrawResult(BaseModel):
    model_config = _BYTES_AS_BASE64

    image: bytes = Field(description="PNG of the turn's picture")
    width: int
    height: int
    seed: int
    crops: dict[str, SubjectCrop] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per stage")
    debug_image: bytes | None = Field(default=None, description="PNG with planned and detected boxes drawn")
    anchor_caches: dict[str, bytes] = Field(
        default_factory=dict,
        description="ConsiStory: the anchor caches this render recorded that replace the job's (subject id → "
        "safetensors blob; only for a job that carried `anchor_caches`)",
    )

    @model_validator(mode="after")
    def _caches_bounded(self) -> DrawResult:
        _bounded_blobs(self.anchor_caches, "anchor_caches")
        return self
