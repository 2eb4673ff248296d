"""The worker's own log lines, written by a middleware like any other.

One line per failure, retry, dead letter and lost lease on the
``pmsq.worker`` logger, readable as text and structured for log shippers:
every record carries ``record.pmsq``, a dict with ``event``, ``queue``,
``message_id``, ``key``, ``tenant``, ``attempt``, ``correlation_id`` and,
where there is one, ``error``.
"""

from __future__ import annotations

import logging
from typing import Any

from pmsq.clock import Clock
from pmsq.errors import LeaseLost, PmsqError
from pmsq.message import Message
from pmsq.policy import Ack, DeadLetterOutcome, Outcome, RetryAt
from pmsq.worker.middleware import Middleware

__all__ = ["OutcomeLog"]

log = logging.getLogger("pmsq.worker")


def _last_line(text: str | None) -> str | None:
    """The ``Type: message`` line that ends a formatted traceback."""
    if not text:
        return None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def _fields(message: Message, event: str, error: str | None) -> dict[str, Any]:
    return {
        "event": event,
        "queue": message.queue,
        "message_id": message.id,
        "key": message.key,
        "tenant": message.tenant,
        "attempt": message.attempt,
        "correlation_id": message.correlation_id,
        "error": error,
    }


def _emit(level: int, text: str, fields: dict[str, Any]) -> None:
    log.log(
        level,
        "%s queue=%s id=%s key=%s tenant=%s attempt=%d correlation=%s%s",
        text,
        fields["queue"],
        fields["message_id"],
        fields["key"],
        fields["tenant"],
        fields["attempt"],
        fields["correlation_id"],
        f" error={fields['error']}" if fields["error"] else "",
        extra={"pmsq": fields},
    )


class OutcomeLog(Middleware):
    """Logs what happened to each message that did not simply succeed.

    Args:
        clock: The broker's clock, to say when a retry is due.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def on_settle(self, message: Message, outcome: Outcome, error: PmsqError | None) -> None:
        """Log retries, dead letters and settle failures (acks are silent)."""
        if isinstance(error, LeaseLost):
            _emit(
                logging.WARNING,
                "lease lost before settling: the message was delivered again elsewhere",
                _fields(message, "lease_lost", None),
            )
            return
        if error is not None:
            _emit(
                logging.ERROR,
                "could not settle; the message comes back when its lease expires",
                _fields(message, "settle_failed", f"{type(error).__name__}: {error}"),
            )
            return
        if isinstance(outcome, Ack):
            return
        if isinstance(outcome, RetryAt):
            delay = max(0.0, outcome.at - self._clock.time())
            if outcome.snooze:
                text, event, level = "snoozed", "snooze", logging.INFO
            elif outcome.error_type is None:
                text, event, level = "retry requested", "retry", logging.INFO
            else:
                text, event, level = "handler failed, will retry", "failure", logging.WARNING
            _emit(
                level, f"{text} in {delay:.1f}s", _fields(message, event, _last_line(outcome.error))
            )
            return
        assert isinstance(outcome, DeadLetterOutcome)
        _emit(
            logging.ERROR,
            f"dead-lettered ({outcome.reason})",
            _fields(message, "dead_letter", _last_line(outcome.traceback) or outcome.error_type),
        )
