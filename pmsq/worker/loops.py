"""The worker's two loops, written once: the dispatcher and the heartbeat.

Both are generators of effects (``pmsq.worker.effects``) over a
:class:`~pmsq.worker.lifecycle.Lifecycle`, free of threads and event loops.
The thread ``Worker`` drives them in a dispatcher thread and a heartbeat
thread with :func:`~pmsq.worker.effects.drive`; the ``AsyncWorker`` drives
them in two tasks with its awaiting twin. What a driver adds is how to
perform an effect: inline or in a thread, a pool thread or a task, a
condition variable or an event.

The dispatcher, round after round:

1. commits the settlements finished handlers parked since the last round
   (one transaction for all of them), unless the driver has a committer of
   its own (the ``AsyncWorker``'s settle task);
2. claims what the free slots and the prefetch bound allow (once the held
   messages have run down to half the bound) and starts held messages, oldest
   first, in the free slots; handlers that end start the next held message
   themselves (``Lifecycle.next_job``);
3. with nothing claimed and nothing settled, waits for a local put, news
   (a freed slot, a parked settlement, a stop) or the poll interval.

Once a stop is asked for it claims no more, hands back the held messages
(no attempt spent), keeps committing what finishing handlers park, and
returns when nothing is held or the grace period ran out; then the
lifecycle is abandoned (nothing more is settled).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Generator
from typing import Any

from pmsq.errors import LeaseLost, PmsqError
from pmsq.worker.effects import Call, Effect, Sleep, Start, Wait
from pmsq.worker.lifecycle import Job, Lifecycle

__all__ = ["beat", "dispatch", "heartbeat"]

log = logging.getLogger("pmsq.worker")

# A wait with nothing better to wake it (a stop's grace period, a failed
# dispatcher round) still looks again this often.
_SAFETY_WAIT = 1.0


def dispatch(core: Lifecycle, *, commit: bool = True) -> Generator[Effect, Any, bool]:
    """Claim, start, commit settlements and wait, until stopped and drained.

    Args:
        core: The run's lifecycle.
        commit: Commit parked settlements here (``False``: the driver has a
            committer of its own, woken when a settlement is parked).

    Returns:
        Whether every held message was settled (``False``: the grace period
        ran out with handlers still running; they are left to their leases).
    """
    broker = core.broker
    draining_logged = False

    def news() -> bool:
        return core.has_news() or (commit and core.parked > 0)

    def settling_news() -> bool:
        return core.drained_or_late() or (commit and core.parked > 0)

    while True:
        core.clear_news()
        since = broker.runtime.wakeups.changes(core.queues)
        settled = False
        if commit and core.parked:
            settled = yield Call(core.commit_parked)
        if core.stopping:
            # Claim no more and hand back what was claimed ahead (no attempt
            # spent), but keep committing what finishing handlers park.
            if core.held:
                yield Call(core.hand_back_held)
            if core.drained_or_late():
                break
            if not draining_logged:
                draining_logged = True
                _log_draining(core)
            if not settled:
                left = max(0.0, min(_SAFETY_WAIT, core.deadline - time.monotonic()))
                yield Wait((), 0, left, settling_news)
            continue
        try:
            jobs: list[Job] = yield from core.claim_round()
        except Exception:
            log.exception("the worker's dispatcher failed; retrying in 1s")
            yield Wait((), 0, _SAFETY_WAIT, news)
            continue
        for job in jobs:
            yield Start(job)
        if jobs or settled:
            continue
        queues, timeout = core.wait_args()
        yield Wait(queues, since if queues else 0, timeout, news)
    drained = core.idle()
    if not drained:
        log.warning(
            "stopped with %d handler(s) still running: they are not settled (async ones "
            "are cancelled, handler processes killed); their messages come back when their "
            "leases expire",
            core.running,
            extra={"pmsq": {"event": "abandoned", "in_flight": core.running}},
        )
    core.abandon()
    return drained


def _log_draining(core: Lifecycle) -> None:
    if core.running:
        log.info(
            "stopping: waiting up to %.0fs for %d in-flight handler(s)",
            max(0.0, core.deadline - time.monotonic()),
            core.running,
            extra={"pmsq": {"event": "draining", "in_flight": core.running}},
        )


def heartbeat(core: Lifecycle) -> Generator[Effect, Any, None]:
    """Extend the lease of every running handler every third of its lease, until abandoned.

    It also writes the worker's presence row every few seconds (the first
    one at once). The driver's ``Sleep`` ends early when
    ``core.heartbeats.on_earlier`` is called: a job added with an earlier
    beat, or the end of the run.
    """
    while not core.abandoned:
        if core.presence.due(time.monotonic()):
            yield Call(core.presence.beat)
        for job in core.heartbeats.due(time.monotonic()):
            yield Call(functools.partial(beat, core, job))
        times = [t for t in (core.heartbeats.next_at(), core.presence.next_at()) if t is not None]
        yield Sleep(min(times, default=None))


def beat(core: Lifecycle, job: Job) -> None:
    """Extend ``job``'s lease by its queue's lease (blocking; one heartbeat).

    A handler still running past its ``timeout`` keeps its lease (and its
    key) until it returns; the first beat after the timeout says so.
    """
    if job.invocation.overdue(time.perf_counter()):
        message = job.delivery.message
        log.warning(
            "handler of message %s in queue %r runs past its timeout of %ss; it is "
            "waited for (lease and key kept) and settled as a timeout failure when "
            'it returns; use isolation="process" for handlers that may hang',
            message.id,
            message.queue,
            job.spec.timeout,
            extra={"pmsq": {"event": "handler_overdue", "message_id": message.id}},
        )
    try:
        job.delivery.extend(job.lease)
    except LeaseLost:
        core.heartbeats.remove(job)
        if job.delivery.settled in (None, "lost"):
            core.message_gone(job)
    except PmsqError as exc:
        # Transient (a busy store): the next beat tries again well before expiry.
        log.warning("could not extend the lease of message %s: %s", job.delivery.message.id, exc)
