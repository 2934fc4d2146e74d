"""The one rule for step counts in DrawSettings: unset counts follow `steps`, explicit ones win, and no
combination silently switches subject init off."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from studio.draw import DrawSettings


def counts(settings: DrawSettings) -> tuple[int, int, int | None]:
    return settings.subject_init_steps, settings.prerender_steps, settings.refine_step


def test_unset_step_counts_follow_steps_in_the_default_proportion() -> None:
    assert counts(DrawSettings()) == (10, 15, 20)
    assert counts(DrawSettings(steps=30)) == (10, 15, 20)
    assert counts(DrawSettings(steps=10)) == (3, 5, 7)
    assert counts(DrawSettings(steps=60)) == (20, 30, 40)


def test_two_steps_keep_subject_init_on() -> None:
    settings = DrawSettings(steps=2)
    assert settings.subject_init and counts(settings) == (1, 1, 1)
    assert counts(DrawSettings(steps=1)) == (1, 1, 1)


def test_explicit_step_counts_win() -> None:
    settings = DrawSettings(steps=10, prerender_steps=40, subject_init_steps=2, refine_step=None)
    assert counts(settings) == (2, 40, None)
    assert DrawSettings(steps=4, prerender_steps=3).subject_init_steps == 1  # the others still follow steps


def test_the_rule_applies_to_api_json_too() -> None:
    settings = DrawSettings.model_validate_json('{"steps": 6}')
    assert counts(settings) == (2, 3, 4)
    assert DrawSettings.model_validate_json(settings.model_dump_json()) == settings


def test_a_combination_that_cannot_run_subject_init_is_refused_with_the_option_named() -> None:
    with pytest.raises(ValidationError, match="subject_init_steps=0"):
        DrawSettings(steps=10, subject_init_steps=0)
    assert DrawSettings(steps=10, subject_init=False, subject_init_steps=0).subject_init_steps == 0
    with pytest.raises(ValidationError, match=r"subject_init_steps \(5\) cannot exceed steps \(2\)"):
        DrawSettings(steps=2, subject_init_steps=5)
