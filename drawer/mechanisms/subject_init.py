"""Subject-initialized generation (`subject_init`): pre-render each subject group, paste the mothers into a
collage and blend it into the first `subject_init_steps` of the main render (drawer.subject_init). It installs
no attention context: it is a pre-render plus a latent hook in the main render's callback chain."""

from __future__ import annotations

from drawer.subject_init import SubjectGroup
from studio.draw import DrawSettings


def wants_prerender(settings: DrawSettings, groups: list[SubjectGroup]) -> bool:
    """Whether a turn pre-renders: the mechanism is on, it has steps, and there is a subject group to draw."""
    return "subject_init" in settings.mechanisms and settings.subject_init_steps > 0 and bool(groups)
