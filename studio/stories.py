"""Long-story mode (Story-Adapter / Story-Iter, docs/stories.md): the story request, its stored state, and the
pure rules of the iteration: the scale ramp, the style templates, and the draw job of one frame in one round.

Round 0 draws every frame from its text alone; round r ≥ 1 redraws every frame with the global reference
cross-attention over all frames of round r − 1 (synchronous update), at the ramp's scale for round r, with one
seed shared by every frame and round."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, FiniteFloat, model_validator

from studio.draw import FAST_GUIDANCE, FAST_STEPS, DrawJob, DrawSettings, Mechanism
from studio.plan import CANVAS_SIDE_BOUND, MIN_CANVAS_SIDE, PlanItem, TurnPlan
from studio.text import Text

MAX_FRAMES = 200
MAX_ROUNDS = 30
DEFAULT_ROUNDS = 10
RAMP_START = 0.3
RAMP_END = 0.5


class StyleTemplate(BaseModel):
    """A prompt template applied to every frame: `prefix` + prompt + `suffix`, and its negative prompt."""

    prefix: str
    suffix: str
    negative: str


DEFAULT_NEGATIVE = "monochrome, lowres, bad anatomy, worst quality, low quality"
STYLE_TEMPLATES: dict[str, StyleTemplate] = {
    "storybook": StyleTemplate(
        prefix="a children's storybook illustration of ",
        suffix=", soft colours, gentle lighting",
        negative=DEFAULT_NEGATIVE,
    ),
    "comic": StyleTemplate(
        prefix="a comic book panel of ",
        suffix=", bold ink lines, flat colours, dynamic composition",
        negative=DEFAULT_NEGATIVE,
    ),
    "watercolor": StyleTemplate(
        prefix="a watercolor painting of ", suffix=", loose brush strokes, paper texture", negative=DEFAULT_NEGATIVE
    ),
    "film": StyleTemplate(
        prefix="a cinematic film still of ", suffix=", shallow depth of field, film grain", negative=DEFAULT_NEGATIVE
    ),
}
StyleName = Literal["storybook", "comic", "watercolor", "film"]


def styled_prompt(prompt: str, style: str | None) -> tuple[str, str | None]:
    """The frame's prompt and negative prompt under the style template (unchanged, None without a style)."""
    if style is None:
        return prompt, None
    template = STYLE_TEMPLATES[style]
    return f"{template.prefix}{prompt}{template.suffix}", template.negative


def ramp_scale(round_index: int, rounds: int, start: float = RAMP_START, end: float = RAMP_END) -> float:
    """The global reference scale of round `round_index` (1..rounds): linear from `start` at round 1 to `end`
    at round `rounds` (Story-Adapter's linspace(0.3, 0.5, K)). Round 0 has no image branch at all."""
    if not 1 <= round_index <= rounds:
        raise ValueError(f"round {round_index} has no reference scale (rounds 1..{rounds})")
    if rounds == 1:
        return start
    return start + (end - start) * (round_index - 1) / (rounds - 1)


class StoryCreate(BaseModel):
    """A long story: one prompt per frame, drawn in round 0 from text, then refined in `rounds` rounds."""

    title: Text = Field(default="", max_length=200)
    prompts: list[Annotated[Text, Field(max_length=1800)]] = Field(
        min_length=1, max_length=MAX_FRAMES, description="one prompt per frame"
    )
    layouts: list[list[PlanItem]] | None = Field(
        default=None,
        max_length=MAX_FRAMES,
        description="optional boxes per frame (same length as prompts; [] for a frame without boxes): such a frame "
        "is drawn with Parallel-UNet's regional rows together with the global reference",
    )
    style: StyleName | None = Field(default=None, description="a prompt template applied to every frame")
    rounds: int = Field(default=DEFAULT_ROUNDS, ge=0, le=MAX_ROUNDS, description="refinement rounds after round 0")
    scale_start: FiniteFloat = Field(default=RAMP_START, ge=0.0, le=2.0, description="reference scale of round 1")
    scale_end: FiniteFloat = Field(default=RAMP_END, ge=0.0, le=2.0, description="reference scale of the last round")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1, description="one seed for every frame and round")
    height: int = Field(default=512, ge=MIN_CANVAS_SIDE, le=CANVAS_SIDE_BOUND)
    width: int = Field(default=512, ge=MIN_CANVAS_SIDE, le=CANVAS_SIDE_BOUND)
    preset: Text = Field(default="tiny", min_length=1, max_length=100)
    steps: int = Field(default=30, ge=1, le=200)
    guidance_scale: FiniteFloat = Field(default=7.5, ge=0.0, le=50.0)
    fast: bool = Field(
        default=False,
        description="the fast variant: the preset's few-step weights (LCM-LoRA / Lightning), 4 steps and guidance 1 "
        "unless `steps` / `guidance_scale` are given; refused for a preset without them",
    )

    @model_validator(mode="before")
    @classmethod
    def _fast_defaults(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("fast"):
            data = {"steps": FAST_STEPS, "guidance_scale": FAST_GUIDANCE, **data}
        return data

    @model_validator(mode="after")
    def _layouts_match(self) -> StoryCreate:
        if self.layouts is not None and len(self.layouts) != len(self.prompts):
            raise ValueError(f"layouts has {len(self.layouts)} entries for {len(self.prompts)} prompts")
        for index, prompt in enumerate(self.prompts):
            if not prompt.strip():
                raise ValueError(f"prompts[{index}] is empty")
            try:
                frame_plan(self, index)
            except ValueError as exc:  # a box outside the canvas, a caption too long once styled, …
                raise ValueError(f"frame {index}: {exc}") from exc
        return self


class StoryStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (StoryStatus.DONE, StoryStatus.FAILED)


class StoryFrame(BaseModel):
    """One drawn frame of one round."""

    round: int
    index: int
    image_id: str
    seconds: float = 0.0
    image_url: str | None = None


class Story(BaseModel):
    id: str
    tenant: str
    title: str
    status: StoryStatus
    request: StoryCreate
    seed: int = Field(description="the seed every frame and round uses")
    frame_count: int
    round_count: int = Field(description="rounds in all, round 0 included")
    current_round: int = Field(description="the round being drawn (the last one when finished)")
    frames_done: int = Field(description="frames drawn so far over every round")
    frames_total: int
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    rounds: list[list[StoryFrame]] = Field(
        default_factory=list, description="per round, its drawn frames in frame order (filled by GET)"
    )

    @property
    def progress(self) -> float:
        return self.frames_done / self.frames_total


def frame_plan(request: StoryCreate, frame_index: int) -> TurnPlan:
    """The frame's plan: its styled prompt as caption, the style's negative, and its boxes if any."""
    caption, negative = styled_prompt(request.prompts[frame_index], request.style)
    items = request.layouts[frame_index] if request.layouts else []
    return TurnPlan(height=request.height, width=request.width, caption=caption, negative=negative, items=items)


def frame_mechanisms(round_index: int, has_boxes: bool) -> list[Mechanism]:
    """Round 0 draws from text alone; later rounds add the global reference; a frame with boxes adds
    Parallel-UNet's rows (regional text, and subject image rows where a subject has a reference)."""
    mechanisms: list[Mechanism] = ["regional", "subject_reference"] if has_boxes else []
    if round_index >= 1:
        mechanisms.append("global_reference")
    return mechanisms


def frame_job(story: Story, round_index: int, frame_index: int, previous_round: list[bytes]) -> DrawJob:
    """The draw job of frame `frame_index` in round `round_index`: round 0 without any image branch, round
    r ≥ 1 with `previous_round` (all frames of round r − 1, in frame order) as global references."""
    request = story.request
    if round_index >= 1 and len(previous_round) != story.frame_count:
        raise ValueError(f"round {round_index} needs all {story.frame_count} frames of the previous round")
    plan = frame_plan(request, frame_index)
    scale = ramp_scale(round_index, request.rounds, request.scale_start, request.scale_end) if round_index else 0.0
    settings = DrawSettings(
        preset=request.preset,
        mode="fast" if request.fast else "normal",
        steps=request.steps,
        guidance_scale=request.guidance_scale,
        seed=story.seed,
        subject_init=False,
        mechanisms=frame_mechanisms(round_index, bool(plan.items)),
        global_reference={"scale": scale},
    )
    return DrawJob(plan=plan, settings=settings, global_references=previous_round if round_index else [])


StoryEventType = Literal["frame", "round", "done", "failed"]


class StoryEvent(BaseModel):
    """One event of a story's stream. Events are derived from the stored frames, so every process serves the
    same numbered stream and a client resumes it with Last-Event-ID: frame i of round r has number
    r·(N+1) + i + 1, the end of round r number r·(N+1) + N + 1, the story's end the number after the last round."""

    seq: int
    type: StoryEventType
    story_id: str
    data: dict[str, Any] = Field(default_factory=dict)


def story_events(story: Story, frames: list[StoryFrame]) -> list[StoryEvent]:
    """Every event of the story so far, in number order (`frames` ordered by round, then frame)."""
    n = story.frame_count
    events: list[StoryEvent] = []
    per_round: dict[int, int] = {}
    for frame in frames:
        per_round[frame.round] = per_round.get(frame.round, 0) + 1
        events.append(
            StoryEvent(
                seq=frame.round * (n + 1) + frame.index + 1,
                type="frame",
                story_id=story.id,
                data={"round": frame.round, "index": frame.index, "image_id": frame.image_id, "seconds": frame.seconds},
            )
        )
    for round_index, count in per_round.items():
        if count == n:
            events.append(
                StoryEvent(
                    seq=round_index * (n + 1) + n + 1,
                    type="round",
                    story_id=story.id,
                    data={"round": round_index, "frames": n},
                )
            )
    if story.status.finished:
        data: dict[str, Any] = {"status": story.status.value, "frames_done": len(frames)}
        if story.error:
            data["reason"] = story.error
        final: StoryEventType = "done" if story.status == StoryStatus.DONE else "failed"
        events.append(StoryEvent(seq=story.round_count * (n + 1) + 1, type=final, story_id=story.id, data=data))
    return sorted(events, key=lambda event: event.seq)
