"""ConsiStory's batch mode (docs/mechanisms.md, "Batch mode"): N pictures of one subject in N settings drawn
together in one batch, the first two the anchors whose subject patches every picture's up-block self-attention
also attends to. The request and the summary written next to the pictures; drawer/consistory.py draws it."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator

from studio.draw import DrawSettings
from studio.plan import canvas_side_problem
from studio.text import Text

MIN_IMAGES = 2
"""The two anchors."""
MAX_IMAGES = 32
"""One batch holds every picture (memory grows with it; ConsiStory's own batches are a handful)."""
ANCHORS = (0, 1)


class ConsistoryBatch(BaseModel):
    """One subject, one setting per picture, the shared settings. The prompt of picture i is
    `"{subject} {settings[i]}"`; the subject's words are the tokens whose attention maps give its masks."""

    subject: Text = Field(min_length=1, max_length=200, description="the subject, e.g. 'a girl with a red scarf'")
    settings: list[Text] = Field(
        min_length=MIN_IMAGES, max_length=MAX_IMAGES, description="one setting per picture; the first two are anchors"
    )
    height: int = Field(default=512, ge=1)
    width: int = Field(default=512, ge=1)
    negative: Text = Field(default="", max_length=500)
    draw: DrawSettings = Field(
        default_factory=lambda: DrawSettings(mechanisms=["shared_attention"]),
        description="steps, guidance, seed, scheduler, preset and the `shared_attention` block",
    )

    @field_validator("settings")
    @classmethod
    def _settings_named(cls, value: list[str]) -> list[str]:
        for i, setting in enumerate(value):
            if not setting.strip() or len(setting) > 300:
                raise ValueError(f"setting {i + 1} must hold 1 to 300 characters")
        return value

    @model_validator(mode="after")
    def _shared_attention_only(self) -> ConsistoryBatch:
        if list(self.draw.mechanisms) != ["shared_attention"]:
            raise ValueError("batch mode draws with shared_attention alone (no boxes, no references)")
        return self

    def check_canvas(self, max_side: int) -> None:
        """ValueError naming the side when the canvas does not suit a preset of `max_side`."""
        for name, side in (("height", self.height), ("width", self.width)):
            problem = canvas_side_problem(side, max_side)
            if problem:
                raise ValueError(f"{name} {side} {problem}")

    def prompts(self) -> list[str]:
        return [f"{self.subject.strip()} {setting.strip()}" for setting in self.settings]


class ConsistoryImage(BaseModel):
    index: int
    prompt: str
    file: str
    anchor: bool
    seed: int
    subject_tokens: list[int] = Field(description="positions of the subject's tokens in the prompt")


class ConsistorySummary(BaseModel):
    """What `studio consistory` writes as summary.json next to the pictures."""

    subject: str
    preset: str
    height: int
    width: int
    anchors: list[int]
    images: list[ConsistoryImage]
    settings: DrawSettings
    seconds: float
