"""A story survives its process: a process that takes it over continues with the first missing frame of the
current round and never redraws a finished one; cancel and close behave like a turn's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from studio.service import TurnService
from studio.storage import schema
from studio.stories import Story, StoryCreate, StoryStatus
from tests.stories.conftest import RecordingDrawer, story_service, wait_story


def test_a_process_taking_over_after_a_crash_draws_only_the_missing_frames(tmp_path: Path) -> None:
    first_drawer = RecordingDrawer(block_at=5)  # round 0 (3 frames) and frame 0 of round 1 finish, then it hangs
    first = story_service(tmp_path, first_drawer)
    first.start()
    assert first.stories is not None
    story = first.stories.submit("t", StoryCreate(prompts=["a", "b", "c"], rounds=1, height=64, width=64))
    assert first_drawer.blocked.wait(20)
    second_drawer = RecordingDrawer()
    second = story_service(tmp_path, second_drawer, scaleout={"poll_seconds": 0.02})
    second.start()  # the story is leased to the first process: not taken at start
    # the first process is dead from here on: its lease runs out, and the second's ticker takes the story over
    with first.db.tx() as conn:
        conn.execute(update(schema.stories).values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    done = wait_story(second, story.id)

    assert done.status == StoryStatus.DONE
    assert [(job.plan.caption, "global_reference" in job.settings.mechanisms) for job, _ in second_drawer.calls] == [
        ("b", True),
        ("c", True),
    ]
    round_zero = [picture for _, picture in first_drawer.calls[:3]]
    assert all(job.global_references == round_zero for job, _ in second_drawer.calls)
    # the frames the first process finished are kept as they were
    kept = [second.images.get(frame.image_id) for frame in done.rounds[0] + done.rounds[1][:1]]
    assert kept == [picture for _, picture in first_drawer.calls[:4]]

    # the hung process wakes up: its frame is refused (it no longer holds the story), nothing is overwritten
    first_drawer.release.set()
    first.close(wait=True)
    after = second.stories.store.get(story.id, with_frames=True)  # type: ignore[union-attr]
    assert after is not None
    assert [second.images.get(frame.image_id) for frame in after.rounds[1][1:]] == [
        picture for _, picture in second_drawer.calls
    ]
    second.close()


def hung_at_second_frame(tmp_path: Path, rounds: int) -> tuple[TurnService, RecordingDrawer, Story]:
    """A started service whose story of frames "a", "b" drew its first frame and hangs in the second."""
    drawer = RecordingDrawer(block_at=2)
    service = story_service(tmp_path, drawer)
    service.start()
    assert service.stories is not None
    story = service.stories.submit("t", StoryCreate(prompts=["a", "b"], rounds=rounds, height=64, width=64))
    assert drawer.blocked.wait(20)
    return service, drawer, story


def test_a_closed_service_leaves_the_story_to_the_next_start(tmp_path: Path) -> None:
    first, drawer, story = hung_at_second_frame(tmp_path, rounds=1)
    first.close(wait=False)  # sets the running frame's cancel: it stops and gives the lease up
    drawer.release.set()
    first.close(wait=True)
    left = first.stories.store.get(story.id)  # type: ignore[union-attr]
    assert left is not None and left.status == StoryStatus.RUNNING and left.frames_done == 1

    resumed = RecordingDrawer()
    second = story_service(tmp_path, resumed)
    second.start()
    done = wait_story(second, story.id)
    assert done.status == StoryStatus.DONE and done.frames_done == 4
    assert [job.plan.caption for job, _ in resumed.calls] == ["b", "a", "b"]
    second.close()


def test_cancel_ends_the_story_failed_and_keeps_its_frames(tmp_path: Path) -> None:
    service, drawer, story = hung_at_second_frame(tmp_path, rounds=2)
    assert service.stories is not None
    current = service.stories.store.get(story.id)
    assert current is not None and service.stories.cancel(current)
    drawer.release.set()
    done = wait_story(service, story.id)
    assert (done.status, done.error, done.frames_done) == (StoryStatus.FAILED, "cancelled", 1)
    assert not service.stories.cancel(done)
    service.close()
