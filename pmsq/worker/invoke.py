"""``Invocation``: one call of a handler, started at most once and finished at most once.

Both drivers run handlers through it, so the rules live here once:

* the start is gated: a worker that is stopping refuses to start a claimed
  message (it is handed back instead), and a message given up before its
  thread even started is never started late;
* ``pmsq.context.current_message`` is set around the handler, in a context
  of its own, so messages the handler puts carry the right correlation and
  causation ids;
* a handler given up on (``abandon``: timeout, forced stop) may still return
  later, in a thread nobody can kill: that late result is dropped, so a
  message is never settled twice.
"""

from __future__ import annotations

import contextvars
import inspect
import threading
import time
from collections.abc import Callable

import anyio

from pmsq.context import current_message
from pmsq.handlers import HandlerSpec
from pmsq.message import Message

__all__ = ["Invocation"]

_PENDING, _RUNNING, _DONE, _REFUSED, _ABANDONED = range(5)


class Invocation:
    """One handler call for one delivery.

    Args:
        spec: The handler.
        message: The message to hand it.
        gate: Asked right before the start; ``False`` leaves it unstarted.
        before: Called in the handler's context right before the handler
            (the ``before_process`` hooks).
    """

    def __init__(
        self,
        spec: HandlerSpec,
        message: Message,
        gate: Callable[[], bool],
        before: Callable[[Message], None],
    ) -> None:
        self.spec = spec
        self.message = message
        self._gate = gate
        self._before = before
        self._lock = threading.Lock()
        self._state = _PENDING
        self._t0 = 0.0
        self.error: BaseException | None = None
        self.duration_ms = 0.0

    @property
    def started(self) -> bool:
        """Whether the handler was started (it may have been given up on since)."""
        return self._state in (_RUNNING, _DONE, _ABANDONED)

    @property
    def timeout_error(self) -> TimeoutError:
        """The error a timed-out handler is settled with."""
        return TimeoutError(
            f"handler of queue {self.spec.queue!r} ran past its timeout of {self.spec.timeout}s"
        )

    def _begin(self) -> bool:
        with self._lock:
            if self._state != _PENDING:
                return False
            if not self._gate():
                self._state = _REFUSED
                return False
            self._state = _RUNNING
            self._t0 = time.perf_counter()
            return True

    def _end(self, error: BaseException | None) -> None:
        with self._lock:
            if self._state != _RUNNING:
                return  # given up on already: this late result is dropped
            self._state = _DONE
            self.error = error
            self.duration_ms = (time.perf_counter() - self._t0) * 1000.0

    def abandon(self, error: BaseException | None) -> None:
        """Stop waiting for the handler; settle with ``error`` if it had started.

        An invocation not yet started never starts.
        """
        with self._lock:
            if self._state == _PENDING:
                self._state = _REFUSED
            elif self._state == _RUNNING:
                self._state = _ABANDONED
                self.error = error
                self.duration_ms = (time.perf_counter() - self._t0) * 1000.0

    # -- sync handlers: called in a worker thread --------------------------------
    def run_sync(self) -> None:
        """Run a sync handler here (in a thread of the worker); never raises ``Exception``."""
        if not self._begin():
            return
        try:
            contextvars.copy_context().run(self._call_sync)
        except Exception as exc:
            self._end(exc)
        else:
            self._end(None)

    def _call_sync(self) -> None:
        current_message.set(self.message)
        self._before(self.message)
        result = self.spec.fn(self.message)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited on purpose; closing avoids a warning
            raise TypeError(
                f"the handler of queue {self.spec.queue!r} returned an awaitable; "
                "declare it with 'async def' so the worker awaits it"
            )

    # -- async handlers: awaited on an event loop ---------------------------------
    async def run_async(self) -> None:
        """Await an async handler, bounded by its ``timeout``; never raises ``Exception``.

        Cancellation (a forced stop) propagates.
        """
        if not self._begin():
            return
        token = current_message.set(self.message)
        try:
            self._before(self.message)
            timeout = self.spec.timeout
            with anyio.CancelScope() as scope:
                if timeout is not None:
                    scope.deadline = anyio.current_time() + timeout
                await self.spec.fn(self.message)
            error: BaseException | None = self.timeout_error if scope.cancelled_caught else None
        except Exception as exc:
            error = exc
        finally:
            current_message.reset(token)
        self._end(error)
