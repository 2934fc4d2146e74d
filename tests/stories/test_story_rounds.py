"""The Story-Adapter iteration, observed through the jobs the runner sends to the drawer."""

from __future__ import annotations

import pytest

from studio.geometry import Box
from studio.plan import PlanItem
from studio.service import TurnService
from studio.stories import StoryCreate, StoryStatus, frame_job, ramp_scale, styled_prompt
from tests.stories.conftest import RecordingDrawer, wait_story


def run_story(service: TurnService, **fields: object):
    assert service.stories is not None
    story = service.stories.submit("t", StoryCreate(**fields))
    return wait_story(service, story.id)


def test_round_zero_has_no_image_branch(stories: TurnService, recorder: RecordingDrawer) -> None:
    story = run_story(stories, prompts=["a fox", "a fox swims", "a fox sleeps"], rounds=1, height=64, width=64)
    assert story.status == StoryStatus.DONE
    round_zero = [job for job, _ in recorder.calls[:3]]
    assert [job.plan.caption for job in round_zero] == ["a fox", "a fox swims", "a fox sleeps"]
    for job in round_zero:
        assert "global_reference" not in job.settings.mechanisms
        assert job.global_references == []
        assert job.settings.mechanisms == []  # no boxes: text only


def test_each_round_references_exactly_the_previous_round_in_frame_order(
    stories: TurnService, recorder: RecordingDrawer
) -> None:
    frames, rounds = 3, 3
    story = run_story(stories, prompts=[f"frame {i}" for i in range(frames)], rounds=rounds, height=64, width=64)
    assert story.status == StoryStatus.DONE
    assert len(recorder.calls) == frames * (rounds + 1)
    for round_index in range(1, rounds + 1):
        previous = [picture for _, picture in recorder.calls[(round_index - 1) * frames : round_index * frames]]
        for frame_index in range(frames):
            job, _ = recorder.calls[round_index * frames + frame_index]
            assert job.plan.caption == f"frame {frame_index}"
            assert "global_reference" in job.settings.mechanisms
            # synchronous update: round r reads all of round r-1 (not the frames of round r drawn before it)
            assert job.global_references == previous
    # every round's frames are kept, each pointing at the picture drawn for it
    assert [len(frames_of_round) for frames_of_round in story.rounds] == [frames] * (rounds + 1)
    stored = [stories.images.get(frame.image_id) for frames_of_round in story.rounds for frame in frames_of_round]
    assert stored == [picture for _, picture in recorder.calls]


def test_the_scale_ramp_is_applied_per_round_with_one_shared_seed(
    stories: TurnService, recorder: RecordingDrawer
) -> None:
    run_story(stories, prompts=["a", "b"], rounds=3, seed=1234, height=64, width=64)
    scales = [job.settings.global_reference.scale for job, _ in recorder.calls]
    assert scales[2:] == pytest.approx([0.3, 0.3, 0.4, 0.4, 0.5, 0.5])
    assert {job.settings.seed for job, _ in recorder.calls} == {1234}


def test_ramp_scale_is_linear_from_start_to_end() -> None:
    assert [ramp_scale(r, 10) for r in (1, 10)] == pytest.approx([0.3, 0.5])
    assert ramp_scale(4, 10) == pytest.approx(0.3 + 0.2 * 3 / 9)
    assert ramp_scale(1, 1) == 0.3
    with pytest.raises(ValueError):
        ramp_scale(0, 10)


def test_a_frame_with_boxes_uses_parallel_unet_and_the_global_reference(
    stories: TurnService, recorder: RecordingDrawer
) -> None:
    item = PlanItem(subject_id="1", phrase="a red fox", box=Box(x=8, y=8, w=32, h=32))
    run_story(stories, prompts=["a fox in a field", "a river"], layouts=[[item], []], rounds=1, height=64, width=64)
    (boxed_0, _), (plain_0, _), (boxed_1, _), (plain_1, _) = recorder.calls
    assert [i.subject_id for i in boxed_0.plan.items] == ["1"] and not plain_0.plan.items
    assert boxed_0.settings.mechanisms == ["regional", "subject_reference"]
    assert boxed_1.settings.mechanisms == ["regional", "subject_reference", "global_reference"]
    assert plain_1.settings.mechanisms == ["global_reference"]


def test_zero_rounds_draws_round_zero_only(stories: TurnService, recorder: RecordingDrawer) -> None:
    story = run_story(stories, prompts=["a", "b"], rounds=0, height=64, width=64)
    assert story.status == StoryStatus.DONE and story.frames_done == story.frames_total == 2
    assert len(recorder.calls) == 2


def test_style_templates_wrap_every_prompt_and_set_the_negative(
    stories: TurnService, recorder: RecordingDrawer
) -> None:
    run_story(stories, prompts=["a fox"], rounds=0, style="comic", height=64, width=64)
    (job, _) = recorder.calls[0]
    assert (job.plan.caption, job.plan.negative) == styled_prompt("a fox", "comic")
    assert job.plan.caption != "a fox" and "a fox" in job.plan.caption


def test_frame_job_refuses_a_partial_previous_round() -> None:
    from datetime import UTC, datetime

    from studio.stories import Story

    request = StoryCreate(prompts=["a", "b"], rounds=2, height=64, width=64)
    story = Story(
        id="s",
        tenant="t",
        title="",
        status=StoryStatus.RUNNING,
        request=request,
        seed=1,
        frame_count=2,
        round_count=3,
        current_round=1,
        frames_done=2,
        frames_total=6,
        created_at=datetime.now(UTC),
    )
    with pytest.raises(ValueError, match="all 2 frames"):
        frame_job(story, 1, 0, [b"only one"])
