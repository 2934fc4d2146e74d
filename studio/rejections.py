"""Why the service refuses a request; api/ maps each to its HTTP status (422, 429, 404, 503)."""

from __future__ import annotations


class RequestRejected(ValueError):
    """A request that is well-formed but not acceptable (limits, conflicting reuse): HTTP 422 with the message."""


class IdempotencyKeyReused(RequestRejected):
    """The Idempotency-Key was already used in this session for a different request body."""


class QueueFull(RequestRejected):
    """The session already holds as many unfinished turns as allowed: HTTP 429, retry after `retry_after` s."""

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SessionGone(LookupError):
    """The session was deleted while the request was being handled: HTTP 404."""


class BranchConflict(Exception):
    """The turn cannot be a branch point (not finished, or finished without a stored memory): HTTP 409."""


class BackendUnavailable(RuntimeError):
    """A backend the turn needs (the drawer pool's broker) cannot be reached: HTTP 503; nothing was stored."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after
