"""``Invocation``: one call of a handler, started at most once and finished at most once.

Both drivers run handlers through it, so the rules live here once:

* the start is gated: a worker that is stopping refuses to start a claimed
  message (it is handed back instead), and a message given up before its
  thread even started is never started late;
* ``pmsq.context.current_message`` is set around the handler, in a context
  of its own, so messages the handler puts carry the right correlation and
  causation ids;
* whatever escapes a handler is that message's failure, ``BaseException``\\ s
  included (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, an
  ``asyncio.CancelledError`` the handler raised or awaited): only the
  worker's own cancellation (a forced stop) is let through. A message is
  acked only when its handler returned;
* a sync handler in a thread is waited for until it really returns, past its
  ``timeout`` too (a thread cannot be killed, and a message whose handler
  still runs must keep its lease and its key): a late return is settled as
  a timeout failure;
* a handler given up on (``abandon``: the worker stopped without waiting for
  it) may still return later: that late result is dropped, so a message is
  never settled twice;
* a handler whose message is gone (``stop_work``: cancelled, or its lease
  lost) is stopped where it can be: an async handler is cancelled, a child
  process killed; a sync handler in a thread cannot be, so it runs on and
  its outcome is discarded by the lifecycle.
"""

from __future__ import annotations

import contextvars
import inspect
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.lowlevel

from pmsq.context import current_message
from pmsq.handlers import HandlerSpec
from pmsq.message import Message

if TYPE_CHECKING:
    from pmsq.worker.isolation import ProcessPool

__all__ = ["HandlerAbandoned", "Invocation", "MessageGone"]

_PENDING, _RUNNING, _DONE, _REFUSED, _ABANDONED = range(5)


class HandlerAbandoned(Exception):
    """The worker stopped without waiting for the handler to end (a forced stop)."""


class MessageGone(Exception):
    """The handler was stopped because its message is no longer this worker's.

    It was cancelled (``Queue.cancel``) or its lease was lost while the
    handler ran; nothing is settled for it.
    """


def _cancelled_from_outside() -> bool:
    """Whether the calling task sits in a cancelled scope: the worker itself is stopping.

    A handler that raises ``asyncio.CancelledError`` itself, or awaits a task
    somebody cancelled, is not cancelled: its scopes are not, so the
    effective deadline is still ahead.
    """
    return anyio.current_effective_deadline() <= anyio.current_time()


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
        self._overdue_logged = False
        self.error: BaseException | None = None
        self.duration_ms = 0.0
        # Why the work was stopped (stop_work), and how to stop it where it runs.
        self.gone: str | None = None
        self._stopper: Callable[[], None] | None = None

    @property
    def started(self) -> bool:
        """Whether the handler was started (it may have been given up on since)."""
        return self._state in (_RUNNING, _DONE, _ABANDONED)

    @property
    def returned(self) -> bool:
        """Whether the handler ended by returning normally (the only way to an ack)."""
        return self._state == _DONE and self.error is None

    @property
    def timeout_error(self) -> TimeoutError:
        """The error a timed-out handler is settled with."""
        return TimeoutError(
            f"handler of queue {self.spec.queue!r} ran past its timeout of {self.spec.timeout}s"
        )

    def overdue(self, now: float) -> bool:
        """The handler still runs past its timeout (``now``: ``time.perf_counter()``).

        True once per invocation, for the warning the heartbeat logs; never
        for a handler in a child process (killed at its timeout instead).
        """
        timeout = self.spec.timeout
        if timeout is None or self._overdue_logged or self._state != _RUNNING:
            return False
        if self.spec.isolation == "process":
            return False
        if now - self._t0 <= timeout:
            return False
        self._overdue_logged = True
        return True

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

    def _end(self, error: BaseException | None, *, bounded: bool = True) -> None:
        """Record how the handler ended; ``bounded=False``: it ran unbounded in a thread."""
        with self._lock:
            if self._state != _RUNNING:
                return  # given up on already: this late result is dropped
            self._state = _DONE
            self.duration_ms = (time.perf_counter() - self._t0) * 1000.0
            timeout = self.spec.timeout
            if not bounded and timeout is not None and self.duration_ms > timeout * 1000.0:
                # Its result came too late to count, whatever it was: the
                # timeout is a limit on success, and a retry must not start
                # before the attempt that timed out has really ended.
                how = "returned" if error is None else f"raised {type(error).__name__}"
                late = TimeoutError(
                    f"{self.timeout_error}: it {how} after {self.duration_ms / 1000.0:.1f}s "
                    "(its thread was waited for, so its lease and its key were kept)"
                )
                late.__cause__ = error
                error = late
            self.error = error

    def abandon(self, error: BaseException) -> None:
        """Stop waiting for the handler; a later result is dropped.

        An invocation not yet started never starts; one that started ends
        with ``error`` (never an ack).
        """
        with self._lock:
            if self._state == _PENDING:
                self._state = _REFUSED
            elif self._state == _RUNNING:
                self._state = _ABANDONED
                self.error = error
                self.duration_ms = (time.perf_counter() - self._t0) * 1000.0

    def stop_work(self, why: str) -> str:
        """The message is gone (``why``): stop the handler where that is possible.

        Safe from any thread. An async handler is cancelled (it ends with
        :class:`MessageGone`), a handler process killed; a sync handler in a
        thread cannot be stopped and runs on. An invocation not yet started
        never starts.

        Returns:
            What happened: ``"cancelled"``, ``"killed"``, ``"runs on"``,
            ``"not started"`` or ``"already ended"``.
        """
        with self._lock:
            if self._state == _PENDING:
                self._state = _REFUSED
                return "not started"
            if self._state != _RUNNING:
                return "already ended"
            self.gone = why
            stopper = self._stopper
        if self.spec.isolation == "process":
            how = "killed"
        elif self.spec.is_async:
            how = "cancelled"
        else:
            return "runs on"
        if stopper is not None:
            stopper()
        return how

    def _set_stopper(
        self, stopper: Callable[[], None], now: Callable[[], None] | None = None
    ) -> None:
        """Register how to stop the running handler (from any thread).

        If the stop was already asked for, ``now`` (default ``stopper``) is
        called at once, here: the caller's own way, since a thread-safe
        stopper may not be callable from the handler's own thread.
        """
        with self._lock:
            self._stopper = stopper
            asked = self.gone is not None
        if asked:
            (now or stopper)()

    # -- sync handlers: called in a worker thread --------------------------------
    def run_sync(self) -> None:
        """Run a sync handler here (in a thread of the worker) until it returns.

        Never raises: what the handler raises, ``BaseException`` included, is
        its outcome.
        """
        if not self._begin():
            return
        try:
            contextvars.copy_context().run(self._call_sync)
        except BaseException as exc:  # a handler's SystemExit is its failure
            self._end(exc, bounded=False)
        else:
            self._end(None, bounded=False)

    def _call_sync(self) -> None:
        self._call_hooks()
        result = self.spec.fn(self.message)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited on purpose; closing avoids a warning
            raise TypeError(
                f"the handler of queue {self.spec.queue!r} returned an awaitable; "
                "declare it with 'async def' so the worker awaits it"
            )

    # -- handlers in a process of their own: called in a worker thread ------------
    def run_in_process(self, pool: ProcessPool) -> None:
        """Run the handler in a child process of ``pool``, killed at its timeout.

        Blocks until the child returned, failed, died or was killed (and is
        gone); never raises.
        """
        if not self._begin():
            return
        try:
            # The hooks run here, in a context of their own: what they set
            # cannot reach the child, and must not leak into this thread.
            contextvars.copy_context().run(self._call_hooks)
            error = pool.call(self.spec, self.message, on_start=self._set_stopper)
        except BaseException as exc:  # as for run_sync
            error = exc
        self._end(error)

    def _call_hooks(self) -> None:
        current_message.set(self.message)
        self._before(self.message)

    # -- async handlers: awaited on an event loop ---------------------------------
    async def run_async(self) -> None:
        """Await an async handler, bounded by its ``timeout`` (it is cancelled then).

        Never raises, except the worker's own cancellation (a forced stop),
        which propagates.
        """
        if not self._begin():
            return
        token = current_message.set(self.message)
        error: BaseException | None = None
        try:
            self._before(self.message)
            timeout = self.spec.timeout
            with anyio.CancelScope() as scope:
                if timeout is not None:
                    scope.deadline = anyio.current_time() + timeout
                self._set_stopper(_canceller(scope), now=scope.cancel)
                await self.spec.fn(self.message)
            if scope.cancelled_caught:
                gone = self.gone
                error = self.timeout_error if gone is None else MessageGone(gone)
        except anyio.get_cancelled_exc_class() as exc:
            if _cancelled_from_outside():
                self.abandon(HandlerAbandoned("the worker was cancelled while the handler ran"))
                raise
            error = exc  # raised by the handler itself (or a task it awaited)
        except BaseException as exc:  # SystemExit must not kill the loop
            error = exc
        finally:
            current_message.reset(token)
        self._end(error)


def _canceller(scope: anyio.CancelScope) -> Callable[[], None]:
    """A way to cancel ``scope`` from another thread (made on the loop that runs it).

    Never call it on that loop's own thread: it waits for the loop.
    """
    token = anyio.lowlevel.current_token()

    def cancel() -> None:
        try:
            anyio.from_thread.run_sync(scope.cancel, token=token)
        except RuntimeError:
            pass  # the loop is gone, and the handler with it

    return cancel
