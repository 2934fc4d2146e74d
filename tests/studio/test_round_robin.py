"""The round-robin helper the turn service (sessions) and the story runner (stories) share."""

from __future__ import annotations

import threading
from collections.abc import Callable

from studio.round_robin import RoundRobin


class Pool:
    """A pool whose tasks run only when the test says so, in submission order."""

    def __init__(self) -> None:
        self.tasks: list[Callable[[], None]] = []
        self.open = True

    def submit(self, task: Callable[[], None]) -> bool:
        if self.open:
            self.tasks.append(task)
        return self.open

    def drain(self) -> None:
        while self.tasks:
            self.tasks.pop(0)()


def test_keys_take_turns_one_unit_each_and_each_key_stays_in_order() -> None:
    pool, work, order, idle = Pool(), {"a": 3, "b": 1, "c": 2}, [], []

    def serve(key: str) -> bool:
        order.append(f"{key}{work[key]}")
        work[key] -= 1
        return work[key] > 0

    rounds = RoundRobin(threading.Lock(), lambda: False, pool.submit, serve, idle=idle.append)
    for key in ("a", "b", "c", "a"):  # the second "a" is already queued: nothing more
        rounds.schedule(key)
    pool.drain()
    assert order == ["a3", "b1", "c2", "a2", "c1", "a1"]
    assert rounds.active == set() and sorted(idle) == ["a", "b", "c"]


def test_again_is_asked_under_the_lock_and_failures_or_a_closed_pool_stop_the_key() -> None:
    pool, arrived, calls = Pool(), {"a"}, []
    lock = threading.Lock()

    def serve(key: str) -> bool | None:
        calls.append(key)
        if key == "boom":
            raise RuntimeError("a bug")
        return None if key == "failed" else False

    def again(key: str, served: bool) -> bool:
        assert lock.locked()
        return key in arrived and not arrived.discard(key)  # work that arrived meanwhile: once more

    rounds = RoundRobin(lock, lambda: False, pool.submit, serve, again=again)
    for key in ("a", "boom", "failed"):
        rounds.schedule(key)
    pool.drain()
    assert calls == ["a", "boom", "failed", "a"] and rounds.active == set()
    rounds.schedule("boom")  # a key that failed can be scheduled again
    pool.open = False
    rounds.schedule("late")  # the pool is shut down: not left marked as active
    pool.drain()
    assert calls[-1] == "boom" and rounds.active == set()

    closed = RoundRobin(lock, lambda: True, pool.submit, serve)
    closed.schedule("x")
    assert pool.tasks == [] and closed.active == set()
