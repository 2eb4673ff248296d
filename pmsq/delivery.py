"""``Delivery``: a leased message and the verbs that settle it."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from pmsq.backends.base import Claimed, Settlement
from pmsq.backends.control_family import Control
from pmsq.backends.families import refusal
from pmsq.config import QueueConfig
from pmsq.context import current_message
from pmsq.errors import ConfigurationError, LeaseLost, PmsqError, Snooze
from pmsq.message import Message
from pmsq.policy import Ack, DeadLetterOutcome, Outcome, RetryAt, decide

if TYPE_CHECKING:
    from pmsq.runtime import Runtime

__all__ = ["Delivery", "release_many", "settle_many"]


class Delivery:
    """A message leased to this consumer until it is settled or the lease runs out.

    Settle it exactly once with :meth:`ack`, :meth:`retry`, :meth:`snooze`
    or :meth:`dead_letter`; :meth:`extend` keeps the lease. Used as a context
    manager, a normal exit acks and an exception settles by the queue's policy
    (``Retry``, ``Reject`` and ``Snooze`` are honoured) and propagates; any
    other exception counts as a handler failure for the queue's circuit
    breaker.

    A settle verb whose lease was lost (it expired and another consumer holds
    the message now) raises ``LeaseLost`` and changes nothing.
    """

    def __init__(
        self, runtime: Runtime, claimed: Claimed, message: Message, config: QueueConfig
    ) -> None:
        self._runtime = runtime
        self._claimed = claimed
        self.message = message
        self._config = config
        self._lock = threading.Lock()
        self._settled: str | None = None
        self._started = time.monotonic()
        self._lease_expires = claimed.lease_expires
        self._context_token: contextvars.Token[Message | None] | None = None

    def __repr__(self) -> str:
        return (
            f"<Delivery {self.message.id} queue={self.message.queue!r} "
            f"attempt={self.message.attempt} settled={self._settled}>"
        )

    @property
    def lease_expires(self) -> float:
        """Epoch seconds at which the lease runs out unless extended."""
        return self._lease_expires

    @property
    def config(self) -> QueueConfig:
        """The queue's configuration this delivery was claimed under (lease, attempts)."""
        return self._config

    @property
    def settled(self) -> str | None:
        """``"acked"``, ``"retried"``, ``"snoozed"``, ``"dead"``, ``"released"``, or ``None``."""
        return self._settled

    @property
    def receipt(self) -> object:
        """The backend's lease receipt (for drivers)."""
        return self._claimed.receipt

    def _elapsed_ms(self) -> float:
        return (time.monotonic() - self._started) * 1000.0

    def _check_held(self) -> None:
        if self._settled is not None:
            raise LeaseLost(
                f"message {self.message.id} was already {self._settled} by this delivery"
            )

    def ack(self) -> None:
        """Acknowledge: the message is processed and will never be delivered again.

        Raises:
            LeaseLost: the lease expired and another consumer claimed the message.
        """
        self.settle(Ack())

    def retry(self, delay: float | None = None) -> None:
        """Deliver again later: ``delay=None`` uses the queue's backoff, ``0`` at once.

        On the last attempt (``max_attempts``) the message is dead-lettered instead.

        Raises:
            LeaseLost: the lease was lost.
            ConfigurationError: ``delay`` is negative or not finite.
        """
        if delay is not None and not (isinstance(delay, (int, float)) and 0 <= delay < 1e12):
            raise ConfigurationError(f"retry delay must be seconds >= 0, got {delay!r}")
        self.settle(
            decide(
                attempt=self.message.attempt,
                config=self._config,
                now=self._runtime.clock.time(),
                retry_requested=True,
                retry_delay=delay,
                rng=self._runtime.rng,
            )
        )

    def snooze(self, delay: float) -> None:
        """Deliver again after ``delay`` seconds without spending an attempt (``pmsq.Snooze``).

        Raises:
            LeaseLost: the lease was lost.
            ConfigurationError: ``delay`` is invalid, or the backend has no
                ``control`` capability (nothing is settled then).
        """
        signal = Snooze(delay)
        Control.of(self._runtime.backend, "snooze")
        self.settle(self.outcome_for(signal))

    def dead_letter(self, reason: str = "dead-lettered by the consumer") -> None:
        """Dead-letter the message now, whatever attempts remain.

        Raises:
            LeaseLost: the lease was lost.
        """
        self.settle(DeadLetterOutcome(reason=str(reason)))

    def extend(self, seconds: float) -> None:
        """Keep the lease for ``seconds`` from now.

        Raises:
            LeaseLost: the lease was lost.
            ConfigurationError: ``seconds`` is not a positive number.
        """
        if not (isinstance(seconds, (int, float)) and 0 < seconds < 1e9):
            raise ConfigurationError(f"extend takes seconds > 0, got {seconds!r}")
        with self._lock:
            self._check_held()
            expires = self._runtime.backend.extend(
                self._claimed.receipt, float(seconds), now=self._runtime.clock.time()
            )
            if expires is None:
                self._lost()
            else:
                self._lease_expires = expires

    def settle(self, outcome: Outcome, *, duration_ms: float | None = None) -> None:
        """Apply a policy outcome (drivers call this; users call the verbs).

        Raises:
            LeaseLost: the lease was lost or the delivery was already settled.
        """
        error = settle_many([(self, outcome, duration_ms)])[0]
        if error is not None:
            raise error

    def _settlement(self, outcome: Outcome, duration_ms: float | None) -> tuple[Settlement, str]:
        ms = self._elapsed_ms() if duration_ms is None else duration_ms
        receipt = self._claimed.receipt
        if isinstance(outcome, Ack):
            return Settlement(receipt, "ack", duration_ms=ms), "acked"
        if isinstance(outcome, RetryAt) and outcome.snooze:
            if isinstance(self._runtime.backend, Control):
                request = Settlement(receipt, "snooze", duration_ms=ms, available_at=outcome.at)
                return request, "snoozed"
            # Never a silent retry that spends attempts: the message fails,
            # with an error that says why.
            outcome = self.outcome_for(refusal(self._runtime.backend, "control", "Snooze"))
        if isinstance(outcome, RetryAt):
            request = Settlement(
                receipt,
                "retry",
                duration_ms=ms,
                available_at=outcome.at,
                error_type=outcome.error_type,
                error=outcome.error,
                failed=outcome.failed,
            )
            return request, "retried"
        assert isinstance(outcome, DeadLetterOutcome), outcome  # a failure is never an ack
        request = Settlement(
            receipt,
            "dead",
            duration_ms=ms,
            reason=outcome.reason,
            error_type=outcome.error_type,
            error=outcome.traceback,
            failed=outcome.failed,
        )
        return request, "dead"

    def release(self) -> None:
        """Hand the message back unstarted, without spending an attempt (graceful shutdown)."""
        release_many([self])

    def _lost(self) -> None:
        self._settled = "lost"
        raise LeaseLost(
            f"lease on message {self.message.id} in queue {self.message.queue!r} was lost: "
            "it expired and the message was claimed again; nothing was changed"
        )

    def outcome_for(self, error: BaseException | None) -> Outcome:
        """The policy's outcome for a handler that ended with ``error`` (None = returned).

        A ``Snooze`` on a backend without the ``control`` capability is a
        failure, with the error that says why (logs and middleware see it so).
        """
        if isinstance(error, Snooze) and not isinstance(self._runtime.backend, Control):
            error = refusal(self._runtime.backend, "control", "Snooze")
        return decide(
            attempt=self.message.attempt,
            config=self._config,
            now=self._runtime.clock.time(),
            error=error,
            rng=self._runtime.rng,
        )

    def __enter__(self) -> Delivery:
        self._context_token = current_message.set(self.message)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._context_token is not None:
            current_message.reset(self._context_token)
            self._context_token = None
        if self._settled is not None:
            return
        if exc is None:
            self.ack()
            return
        try:
            self.settle(self.outcome_for(exc))
        except LeaseLost:
            pass  # the original exception is what the caller needs to see


def release_many(deliveries: Sequence[Delivery]) -> None:
    """Hand several unstarted deliveries of one broker back in one store call (one commit).

    None spends an attempt; one already settled is skipped.

    Raises:
        PmsqError: the store failed (nothing of this call was released).
    """
    if not deliveries:
        return
    runtime = deliveries[0]._runtime
    with contextlib.ExitStack() as held:
        todo = []
        for d in deliveries:
            held.enter_context(d._lock)
            if d._settled is None:
                todo.append(d)
        if not todo:
            return
        runtime.backend.release([d._claimed.receipt for d in todo], now=runtime.clock.time())
        for d in todo:
            d._settled = "released"
    for queue in {d.message.queue for d in todo}:
        runtime.wakeups.notify(queue)


def settle_many(
    items: Sequence[tuple[Delivery, Outcome, float | None]],
) -> list[PmsqError | None]:
    """Settle several deliveries of one broker together: one store call, one commit.

    ``items`` are ``(delivery, outcome, duration_ms)``. Returns, per item,
    ``None`` when it is settled or the error its own :meth:`Delivery.settle`
    would have raised (``LeaseLost``, ``StorageError``). When the batch as a
    whole fails, each item is settled on its own, so one bad settlement (a
    fallback queue that refuses its copy) cannot fail the others.
    """
    if not items:
        return []
    results: list[PmsqError | None] = [None] * len(items)
    runtime = items[0][0]._runtime
    pending: list[tuple[int, Delivery, str]] = []
    oks: list[bool] | None
    with contextlib.ExitStack() as held:
        requests: list[Settlement] = []
        for i, (d, outcome, ms) in enumerate(items):
            held.enter_context(d._lock)
            try:
                d._check_held()
            except LeaseLost as exc:
                results[i] = exc
                continue
            request, state = d._settlement(outcome, ms)
            requests.append(request)
            pending.append((i, d, state))
        try:
            oks = runtime.backend.settle(requests, now=runtime.clock.time()) if requests else []
        except PmsqError as exc:
            if len(pending) == 1:
                results[pending[0][0]] = exc
                return results
            oks = None  # settled one by one below, once the locks are let go
        if oks is not None:
            for (i, d, state), ok in zip(pending, oks, strict=True):
                try:
                    if not ok:
                        d._lost()
                    d._settled = state
                except LeaseLost as exc:
                    results[i] = exc
    if oks is None:
        for i, _, _ in pending:
            results[i] = settle_many([items[i]])[0]
        return results
    for i, d, state in pending:
        if state != "acked" and results[i] is None:
            runtime.wakeups.notify(d.message.queue)
    return results
