"""Which job a draw is: ids derived from the turn that asks for it, so the same turn's same job, sent again after
a restart, is the same job (its stored outcome is read back, not drawn again). No Redis here: the benchmark
runner and the runtime set scopes without the pool's client libraries."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from studio.draw import DrawJob

_job_scope: ContextVar[str | None] = ContextVar("studio_job_scope", default=None)


@contextmanager
def job_scope(scope: str) -> Iterator[None]:
    """Jobs drawn inside get ids derived from `scope` (a turn id): the same turn's same job, sent again after a
    restart, is the same job, whose stored outcome is read back instead of drawn again."""
    token = _job_scope.set(scope)
    try:
        yield
    finally:
        _job_scope.reset(token)


def job_id_for(job: DrawJob) -> str:
    """`<scope>:<hash of the job>` inside a job scope; a fresh id outside one."""
    scope = _job_scope.get()
    if scope is None:
        return uuid.uuid4().hex
    digest = hashlib.sha256(job.model_dump_json().encode()).hexdigest()[:16]
    return f"{scope}:{digest}"
