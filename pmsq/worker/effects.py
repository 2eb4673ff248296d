"""Effects: what the worker's I/O-free loops ask a driver to do.

The lifecycle (``pmsq.worker.lifecycle``) and the loops around it
(``pmsq.worker.loops``) are generators that never block and never touch a
thread or an event loop themselves. They yield one of these values and the
driver performs it, sending the result back (or throwing its exception in):

* ``Call(fn)``: blocking store I/O (claim, settle, release, extend); the
  thread ``Worker`` calls it, the ``AsyncWorker`` sends it to a thread;
* ``Invoke(invocation)``: run a handler where it belongs (a thread, the
  event loop, or a child process);
* ``Settle(delivery, outcome)``: commit a finished handler's outcome; the
  drivers park it (:meth:`Lifecycle.park`) so that the dispatcher commits
  every parked settlement in one transaction;
* ``Start(job)``: run a claimed message's lifecycle beside the dispatcher
  (a pool thread, a task);
* ``Wait(queues, since, timeout, wake)``: idle until a local put to one of
  ``queues``, ``wake()``, or ``timeout`` (``WakeUps.wait_any`` (``broker.runtime.wakeups``));
* ``Sleep(until)``: the heartbeat rests until ``until`` (monotonic seconds,
  ``None``: until poked).

:func:`drive` performs a generator's effects synchronously; the
``AsyncWorker`` has its awaiting twin. Both are a dozen lines, so every
decision stays in the generators, written once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from pmsq.handlers import HandlerSpec
from pmsq.policy import Outcome
from pmsq.worker.invoke import Invocation

if TYPE_CHECKING:
    from pmsq.delivery import Delivery

__all__ = [
    "PARKED",
    "Call",
    "Effect",
    "Invoke",
    "Job",
    "Park",
    "Settle",
    "Sleep",
    "Start",
    "Wait",
    "drive",
]


@attrs.define(eq=False)
class Job:
    """One claimed message on its way through the lifecycle (hashable by identity)."""

    delivery: Delivery
    spec: HandlerSpec
    invocation: Invocation
    # The handler slot was given back (the handler ended; its settlement may still be committing).
    freed: bool = False
    #: Why the message stopped being this worker's while its handler ran
    #: (``"cancelled"``, ``"lease lost"``...): its outcome is discarded, not settled.
    gone: str | None = None

    @property
    def lease(self) -> float:
        """The lease length the message was claimed with: what each heartbeat extends it by."""
        return self.delivery.config.lease


@attrs.frozen
class Call:
    """Effect: call ``fn()`` (blocking store I/O) and send back its result."""

    fn: Callable[[], Any]


@attrs.frozen
class Invoke:
    """Effect: run ``invocation`` (sync or async handler, bounded by its timeout)."""

    invocation: Invocation


@attrs.frozen
class Settle:
    """Effect: commit ``outcome`` for ``delivery``; alone (:meth:`run`) or batched."""

    delivery: Delivery
    outcome: Outcome
    duration_ms: float | None

    def run(self) -> None:
        """Settle this one delivery now (blocking)."""
        self.delivery.settle(self.outcome, duration_ms=self.duration_ms)


@attrs.frozen
class Start:
    """Effect: run ``job``'s lifecycle concurrently with the caller; send back nothing."""

    job: Job


@attrs.frozen
class Wait:
    """Effect: ``broker.runtime.wakeups.wait_any(queues, since, timeout, wake)`` (blocking)."""

    queues: Sequence[str]
    since: object
    timeout: float
    wake: Callable[[], bool]


@attrs.frozen
class Sleep:
    """Effect: rest until ``until`` (monotonic seconds; ``None``: until poked)."""

    until: float | None


Effect = Call | Invoke | Settle | Start | Wait | Sleep

#: ``park(gen, effect)``: take ``effect`` from ``gen`` and keep ``gen`` open (True).
Park = Callable[[Generator[Effect, Any, Any], Effect], bool]

#: What :func:`drive` returns when ``park`` took an effect: the generator waits, open.
PARKED: Any = object()


def drive(
    gen: Generator[Effect, Any, Any],
    perform: Callable[[Effect], Any],
    *,
    park: Park | None = None,
    value: Any = None,
    error: Exception | None = None,
) -> Any:
    """Run a generator to its end, performing each effect synchronously.

    ``park(gen, effect)`` may take an effect instead (returning True): then
    ``drive`` returns :data:`PARKED` and leaves the generator open, to be
    resumed later by ``drive(gen, perform, value=...)`` or ``error=...``
    with that effect's result.

    Returns:
        The generator's return value, or :data:`PARKED`.
    """
    parked = False
    try:
        while True:
            try:
                effect = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            if park is not None and park(gen, effect):
                parked = True
                return PARKED
            try:
                value = perform(effect)
            except Exception as exc:
                error = exc
    finally:
        if not parked:
            gen.close()
