"""Messages gone under a running handler: why, and what the worker says about it.

A heartbeat's ``extend`` raises ``LeaseLost`` when the message is no longer
this worker's: it was cancelled (``Queue.cancel``), purged, or its lease ran
out and another consumer claimed it. The store's journal, when it keeps one
(the ``history`` family), tells these apart; without one the worker cannot,
and treats them alike. Either way the worker stops the handler where it can
(``Invocation.stop_work``) and discards its outcome: nothing is settled for
a message that is gone, so its cancellation is never a handler failure.

Meanwhile the worker keeps the key (:class:`HeldKeys`): a message of the
same key it claims is handed back (no attempt spent) until that handler has
ended, so one worker never runs two handlers of a key at once, even after a
cancel let the store move the key on.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from pmsq.backends.families import History
from pmsq.message import Message
from pmsq.worker.invoke import MessageGone

if TYPE_CHECKING:
    from pmsq.worker.effects import Job

__all__ = [
    "GONE_EVENTS",
    "HeldKeys",
    "discarded_at_settle",
    "log_discarded",
    "log_gone",
    "notice_gone",
    "why_gone",
]

log = logging.getLogger("pmsq.worker")

#: Journal events that end a message for good, and how the worker names them.
GONE_EVENTS = {"cancelled": "cancelled", "purged": "purged", "expired": "expired"}


KeyId = tuple[str, str | None, str]


def _key_of(message: Message) -> KeyId | None:
    return None if message.key is None else (message.queue, message.tenant, message.key)


class HeldKeys:
    """The keys of the messages a worker holds, until their handler ended (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # None: reserved by a claim whose job is not made yet.
        self._keys: dict[KeyId, Job | None] = {}

    def held(self, message: Message) -> tuple[bool, Job | None]:
        """Whether ``message``'s key is held here, and by which job (if made yet)."""
        key = _key_of(message)
        with self._lock:
            if key is None or key not in self._keys:
                return False, None
            return True, self._keys[key]

    def reserve(self, message: Message) -> None:
        """Hold ``message``'s key for the job about to be made for it."""
        key = _key_of(message)
        if key is not None:
            with self._lock:
                self._keys[key] = None

    def bind(self, job: Job) -> None:
        """The job for a reserved key is made."""
        key = _key_of(job.delivery.message)
        if key is not None:
            with self._lock:
                self._keys[key] = job

    def let_go(self, job: Job) -> None:
        """Stop holding ``job``'s key (no-op if another job holds it now)."""
        key = _key_of(job.delivery.message)
        if key is not None:
            with self._lock:
                if self._keys.get(key) is job:
                    del self._keys[key]


def notice_gone(backend: object, job: Job) -> None:
    """A heartbeat found ``job``'s lease gone: record why, stop the handler, log it.

    Blocking (reads the journal).
    """
    job.gone = why_gone(backend, job.delivery.message)
    log_gone(job, job.invocation.stop_work(job.gone))


def discarded_at_settle(backend: object, job: Job) -> bool:
    """``job``'s settlement found the lease gone: was the message cancelled meanwhile?

    Blocking (a journal read), and only on this rare path: a handler that
    ended before any heartbeat noticed the cancel. Then its outcome is logged
    as discarded rather than as a lease lost to another consumer.
    """
    why = why_gone(backend, job.delivery.message)
    if why not in GONE_EVENTS.values():
        return False
    job.gone = why
    log_discarded(job)
    return True


def why_gone(backend: object, message: Message) -> str:
    """Why ``message`` (this worker's delivery of it) is no longer leased to it.

    Blocking: reads the message's journal. Returns ``"cancelled"``,
    ``"purged"`` or ``"expired"`` when the journal records that since this
    delivery; ``"lease lost"`` when it records none (the lease ran out and
    the message is someone else's); a longer phrase when there is no
    journal to ask.
    """
    if not isinstance(backend, History):
        return "lease lost or cancelled (this store keeps no journal to tell)"
    try:
        events = backend.history(message_id=message.id, limit=20)
    except Exception:  # advisory only: a failed read must never stop the heartbeat or a settle
        log.debug("could not read the journal of message %s", message.id, exc_info=True)
        return "lease lost or cancelled (the journal could not be read)"
    for e in reversed(events):
        if e.event in GONE_EVENTS:
            return GONE_EVENTS[e.event]
        if e.event == "delivered" and e.attempt == message.attempt:
            break  # nothing ended the message since this delivery
    return "lease lost"


def log_gone(job: Job, how: str) -> None:
    """Log that ``job``'s message is gone and what became of its handler (``how``)."""
    message = job.delivery.message
    why = job.gone
    fields = {"message_id": message.id, "queue": message.queue, "why": why, "handler": how}
    if how == "runs on":
        what = "the sync handler runs on (a thread cannot be stopped); its outcome is discarded"
    elif how in ("cancelled", "killed"):
        what = f"its handler was {how}"
    else:
        what = f"its handler {how}"
    if why in GONE_EVENTS.values():
        log.info(
            "message %s in queue %r was %s while its handler ran: %s",
            message.id,
            message.queue,
            why,
            what,
            extra={"pmsq": {"event": "message_gone", **fields}},
        )
    else:
        log.warning(
            "%s while the handler runs: message %s in queue %r may be handled twice "
            "(is the process starved, or the clock jumping?); %s",
            why,
            message.id,
            message.queue,
            what,
            extra={"pmsq": {"event": "lease_lost", **fields}},
        )


def log_discarded(job: Job) -> None:
    """Log ``outcome_discarded``: ``job``'s handler ended, but its message is gone."""
    inv, message = job.invocation, job.delivery.message
    error = inv.error
    if not inv.started:
        how = "never started"
    elif isinstance(error, MessageGone):
        how = "was cancelled"
    elif inv.returned:
        how = "returned"
    elif error is not None:
        how = f"raised {type(error).__name__}"
    else:
        how = "did not return"
    log.info(
        "outcome of message %s in queue %r discarded (%s): its handler %s; nothing is settled",
        message.id,
        message.queue,
        job.gone,
        how,
        extra={
            "pmsq": {
                "event": "outcome_discarded",
                "message_id": message.id,
                "queue": message.queue,
                "why": job.gone,
                "handler": how,
            }
        },
    )
