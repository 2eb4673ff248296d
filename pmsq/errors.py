"""Errors and handler signals.

The error tree::

    PmsqError
    ├── ConfigurationError (also ValueError)   bad names, options, unknown URL scheme
    ├── SerializationError (also TypeError)    payload the codec cannot encode/decode
    ├── PayloadTooLarge                         encoded payload over max_payload_bytes
    ├── QueueFull                               max_depth or tenant_quota reached
    ├── Unroutable                              publish matched no binding
    ├── LeaseLost                               ack/retry/extend with a stale lease token
    ├── Empty                                   get() timed out
    ├── StorageError                            disk full, I/O error, corrupt file, lock timeout
    │   └── OutcomeUnknown                      a commit failed in a way that may have reached disk
    └── BackendUnavailable                      a plugin's server cannot be reached

    HandlerSignal                               not an error: how handlers steer settlement
    ├── Retry(delay=None)
    ├── Reject(reason)
    └── Snooze(delay)

Signals live outside ``PmsqError`` on purpose: ``except PmsqError`` in handler
code must never swallow a ``Retry`` or ``Reject`` raised deeper down.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "ConfigurationError",
    "Empty",
    "HandlerSignal",
    "LeaseLost",
    "OutcomeUnknown",
    "PayloadTooLarge",
    "PmsqError",
    "QueueFull",
    "Reject",
    "Retry",
    "SerializationError",
    "Snooze",
    "StorageError",
    "Unroutable",
]


class PmsqError(Exception):
    """Root of every error pmsq raises."""


class ConfigurationError(PmsqError, ValueError):
    """A name, option or URL is invalid, or a backend lacks a capability."""


class SerializationError(PmsqError, TypeError):
    """A payload or header cannot be encoded or decoded by the codec."""


class PayloadTooLarge(PmsqError):
    """The encoded payload is larger than the broker's ``max_payload_bytes``."""


class QueueFull(PmsqError):
    """A put would exceed the queue's ``max_depth`` or ``tenant_quota``."""


class Unroutable(PmsqError):
    """``publish`` matched no subscription; nothing was stored."""


class LeaseLost(PmsqError):
    """The delivery's lease is no longer held (expired, re-claimed, or already settled)."""


class Empty(PmsqError):
    """``get`` found no message within its timeout."""


class StorageError(PmsqError):
    """The store failed: disk full, I/O error, corrupt or foreign file, lock timeout."""


class OutcomeUnknown(StorageError):
    """A commit failed in a way that may still have reached the disk.

    The write may or may not be stored. Retrying a put with the same
    ``dedup_id`` is safe: it yields exactly one message.
    """


class BackendUnavailable(PmsqError):
    """A backend's server cannot be reached."""


class HandlerSignal(Exception):
    """Base of the signals a handler raises to choose how its message settles."""


class Retry(HandlerSignal):
    """Retry the message: ``delay=None`` uses the queue's backoff, ``0`` retries at once.

    Args:
        delay: Seconds to wait before the next delivery, or ``None`` for the
            queue's backoff schedule.
    """

    def __init__(self, delay: float | None = None) -> None:
        if delay is not None and not delay >= 0:
            raise ConfigurationError(f"Retry delay must be >= 0 seconds, got {delay!r}")
        super().__init__(delay)
        self.delay = delay


class Reject(HandlerSignal):
    """Dead-letter the message now, without further attempts.

    Args:
        reason: Why; kept on the dead letter.
    """

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason


class Snooze(HandlerSignal):
    """Come back later without spending an attempt (a payment waiting on a webhook).

    The message settles like a retry after ``delay`` seconds, but the
    delivery does not count toward ``max_attempts``: the next delivery's
    ``attempt`` is this one's again. It is not a failure (the circuit
    breaker ignores it), and its key stays blocked meanwhile. Needs a
    backend with the ``control`` capability; on one without, the message
    fails with a ``ConfigurationError`` saying so.

    Args:
        delay: Seconds until the next delivery (finite, >= 0).

    Raises:
        ConfigurationError: ``delay`` is not a finite number of seconds >= 0.
    """

    def __init__(self, delay: float) -> None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 1e10:
            raise ConfigurationError(
                f"Snooze delay must be a finite number of seconds >= 0, got {delay!r}"
            )
        super().__init__(delay)
        self.delay = float(delay)
