"""What happens to a delivery when its handler ends: the one definition.

``decide`` is pure: given the attempt, the queue's config, how the handler
ended and the time, it returns an outcome. ``Delivery.__exit__``, the thread
Worker and the AsyncWorker all settle through it.
"""

from __future__ import annotations

import random
import traceback as tb_module

import attrs

from pmsq.config import QueueConfig
from pmsq.errors import Reject, Retry, Snooze

__all__ = [
    "Ack",
    "DeadLetterOutcome",
    "Outcome",
    "RemoteError",
    "RetryAt",
    "decide",
    "describe_error",
]


@attrs.frozen
class Ack:
    """Delete the message: it was processed."""


@attrs.frozen
class RetryAt:
    """Deliver again at ``at`` (epoch seconds).

    ``snooze``: a ``pmsq.Snooze``: the attempt is not counted and it is no
    failure. ``failed``: the handler raised an exception (circuit breaker).
    """

    at: float
    error_type: str | None = None
    error: str | None = None
    snooze: bool = False
    failed: bool = False


@attrs.frozen
class DeadLetterOutcome:
    """Dead-letter the message (``failed``: a handler exception caused it)."""

    reason: str
    error_type: str | None = None
    traceback: str | None = None
    failed: bool = False


Outcome = Ack | RetryAt | DeadLetterOutcome


class RemoteError(Exception):
    """An exception raised by a handler in another process, known by its description.

    Settled like the original: dead letters and logs show the original type
    name and traceback, not this wrapper.

    Args:
        error_type: The original exception's qualified type name.
        summary: Its message (``str(exc)``).
        traceback: Its formatted traceback.
    """

    def __init__(self, error_type: str, summary: str, traceback: str) -> None:
        super().__init__(summary)
        self.error_type = error_type
        self.traceback = traceback


def describe_error(exc: BaseException) -> tuple[str, str]:
    """Return ``(qualified type name, formatted traceback)`` for ``exc``."""
    if isinstance(exc, RemoteError):
        return exc.error_type, exc.traceback
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    text = "".join(tb_module.format_exception(exc)).rstrip()
    return name, text


def decide(
    *,
    attempt: int,
    config: QueueConfig,
    now: float,
    error: BaseException | None = None,
    retry_delay: float | None = None,
    retry_requested: bool = False,
    reject_reason: str | None = None,
    rng: random.Random | None = None,
) -> Outcome:
    """Decide how a delivery settles.

    Args:
        attempt: The delivery's attempt number (1 = first delivery).
        config: The queue's configuration (``max_attempts``, ``backoff``).
        now: Current epoch seconds.
        error: The exception the handler raised, if any. ``Retry``,
            ``Reject`` and ``Snooze`` are recognised as signals; any other
            exception is a failure (``failed=True`` on the outcome).
        retry_delay: With ``retry_requested``: seconds, or ``None`` for backoff.
        retry_requested: The consumer asked for a retry (``Delivery.retry``).
        reject_reason: The consumer asked for a dead letter with this reason.
        rng: Random source for backoff jitter.

    Returns:
        ``Ack``, ``RetryAt`` or ``DeadLetterOutcome``.
    """
    if isinstance(error, Reject):
        return DeadLetterOutcome(reason=error.reason, error_type="pmsq.Reject")
    if reject_reason is not None:
        return DeadLetterOutcome(reason=reject_reason)
    if isinstance(error, Snooze):
        # Not counted: neither max_attempts nor the backoff sees a snooze.
        return RetryAt(at=now + error.delay, snooze=True)
    if isinstance(error, Retry):
        retry_requested, retry_delay, error = True, error.delay, None
    if error is None and not retry_requested:
        return Ack()
    error_type, text = describe_error(error) if error is not None else (None, None)
    if attempt >= config.max_attempts:
        if error is not None:
            summary = str(error) or type(error).__name__
            reason = f"failed {attempt} of {config.max_attempts} attempts: {error_type}: {summary}"
        else:
            reason = f"retried {attempt} of {config.max_attempts} attempts"
        return DeadLetterOutcome(
            reason=reason, error_type=error_type, traceback=text, failed=error is not None
        )
    delay = retry_delay if retry_delay is not None else config.backoff.delay(attempt, rng)
    return RetryAt(at=now + delay, error_type=error_type, error=text, failed=error is not None)
