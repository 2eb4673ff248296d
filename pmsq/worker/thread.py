"""``Worker``: the thread driver of the worker's loops.

The loops and every decision are shared with the ``AsyncWorker``
(``pmsq.worker.loops``, ``pmsq.worker.lifecycle``); this module only says
how each effect is performed, with threads, all daemons so a hung handler
never keeps the interpreter alive:

* the dispatcher thread drives ``loops.dispatch``: it claims, commits the
  settlements finished handlers parked (one transaction per round, and the
  store's connection kept to one thread instead of a crowd contending for
  it), and waits in ``WakeUps.wait_any`` (``broker.runtime.wakeups``) when idle;
* handler threads, an elastic pool: each started message runs
  ``Lifecycle.process`` in a thread of its own, so at most ``concurrency``
  are busy; a thread whose handler ended runs the next held message
  (``Lifecycle.next_job``) itself, without a hand-off. A sync handler is
  waited for until it returns, past its ``timeout`` too (a thread cannot
  be killed; its lease and key are kept); a handler with
  ``isolation="process"`` is waited for here while it runs in a child
  process, which is killed at the timeout;
* the heartbeat thread drives ``loops.heartbeat``;
* an event loop thread (anyio portal), only when some handler is ``async``.

Wake-ups: a put in this process wakes the dispatcher at once; puts by other
processes are seen within ``broker.poll_interval`` (default 0.05 s), when
it polls with the store's cheap lock-free probe. A handler that finishes
while every slot is taken and nothing is held, leaves the held messages at
half the prefetch bound, or parks the first settlement since a commit,
wakes it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import CancelledError
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import anyio.from_thread

from pmsq.schedules.timer import ScheduleTimer, start_timer_thread
from pmsq.worker.effects import Call, Effect, Settle, Sleep, Start, Wait, drive
from pmsq.worker.invoke import HandlerAbandoned, Invocation
from pmsq.worker.lifecycle import Job
from pmsq.worker.loops import dispatch, heartbeat
from pmsq.worker.middleware import Middleware
from pmsq.worker.options import Driver

if TYPE_CHECKING:
    from pmsq.broker import Broker

__all__ = ["Worker"]

log = logging.getLogger("pmsq.worker")


class _Threads:
    """Daemon threads that run submitted calls; a new thread whenever none is idle."""

    def __init__(self, name: str, on_start: Callable[[], None]) -> None:
        self._name = name
        self._on_start = on_start
        self._tasks: queue.SimpleQueue[Callable[[], Callable[[], None] | None] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._idle = 0
        self._count = 0
        self._closed = False

    def submit(self, fn: Callable[[], Callable[[], None] | None]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker's threads are shut down")
            self._tasks.put(fn)
            if self._idle:
                self._idle -= 1  # that idle thread will take it
                return
            self._count += 1
            n = self._count
        threading.Thread(target=self._loop, name=f"{self._name}-{n}", daemon=True).start()

    def _loop(self) -> None:
        self._on_start()
        while True:
            fn = self._tasks.get()
            if fn is None:
                return
            after = None
            try:
                after = fn()
            except BaseException:
                log.exception("a worker thread's task failed")
            with self._lock:
                if self._closed:
                    return
                self._idle += 1
            # A task may hand back a call to make once this thread counts as
            # idle: the dispatcher it wakes then finds it free instead of
            # starting a new thread for its next submit.
            if after is not None:
                after()

    def close(self) -> None:
        """Idle threads exit now, busy ones when their call returns."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._tasks.put(None)


class Worker(Driver):
    """A pool of threads running the handlers registered on ``broker``.

    Sync handlers run in the pool's threads; ``async def`` handlers on an
    event loop the Worker starts for them. ``run()`` blocks until a signal;
    ``start()`` / ``stop()`` (or ``with Worker(...) as w:``) embed it in an app.

    A put in this process wakes an idle worker at once; a put by another
    process is picked up within ``broker.poll_interval`` (set with
    ``pmsq.connect(poll_interval=)``, default 0.05 s), by one cheap poll of
    all the worker's queues.

    Args:
        broker: The broker whose handlers (``@broker.handler``) to run.
        concurrency: Handlers running at once, at most.
        queues: Queues to serve (each needs a handler); ``None``: every queue
            with a handler.
        middleware: Hooks for this worker, after those in ``broker.middleware``.
        prefetch: Messages claimed ahead of the free handler slots, at most
            (leased, their keys blocked, handed back unstarted at a stop).
            ``None`` (default): adaptive, about a tenth of a second of work
            at the measured handler rate, at least ``concurrency``, at most
            256, never more than a third of a lease covers; ``0``: claim
            only what can start at once.

    Raises:
        ConfigurationError: a bad option.
    """

    def __init__(
        self,
        broker: Broker,
        concurrency: int = 8,
        queues: Iterable[str] | None = None,
        *,
        middleware: Iterable[Middleware] | None = None,
        prefetch: int | None = None,
    ) -> None:
        super().__init__(broker, concurrency, queues, middleware, prefetch)
        self._state = "new"
        self._drained = True
        self._stop_lock = threading.Lock()
        self._mine = threading.local()
        self._pool: _Threads | None = None
        self._dispatcher: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._schedules: ScheduleTimer | None = None
        self._hb_cv = threading.Condition()
        self._hb_dirty = False
        self._loop_stack = contextlib.ExitStack()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._signals = 0
        self._shutdown_timeout = 30.0

    def __repr__(self) -> str:
        return (
            f"<Worker {self._state} concurrency={self.concurrency} "
            f"prefetch={self._prefetch_text} broker={self.broker!r}>"
        )

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for (the worker claims nothing more)."""
        return self._core is not None and self._core.stopping

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Start claiming and handling in background threads; returns at once.

        Raises:
            ConfigurationError: no handlers, or a queue without one.
            RuntimeError: the worker was started before (a Worker runs once).
        """
        with self._stop_lock:
            if self._state != "new":
                raise RuntimeError("a Worker runs once; create a new one to start again")
            core = self._new_core(self._poke_heartbeat)
            self._pool = _Threads("pmsq-worker", self._mark)
            if any(spec.is_async for spec in core.specs.values()):
                self._portal = self._loop_stack.enter_context(
                    anyio.from_thread.start_blocking_portal()
                )
                self._portal.call(self._mark)
            self._announce(core, "worker")
            # Listed by broker.workers() once start() returns (pmsq.backends.presence).
            core.presence.start(time.monotonic())
            self._dispatcher = threading.Thread(
                target=self._loop, args=(dispatch(core),), name="pmsq-worker-dispatch", daemon=True
            )
            self._heartbeat = threading.Thread(
                target=self._loop,
                args=(heartbeat(core),),
                name="pmsq-worker-heartbeat",
                daemon=True,
            )
            self._state = "running"
            self._heartbeat.start()
            self._dispatcher.start()
            # Fires due schedule slots (pmsq.schedules.timer); None without schedules.
            self._schedules = start_timer_thread(self.broker.runtime, self.broker.run_schedules)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop claiming, let in-flight handlers finish, and return.

        Messages claimed but not started are handed back at once without
        spending an attempt. Handlers still running after ``timeout`` seconds
        are not settled, their leases run out and their messages are
        delivered again; threads are left to end by themselves, handler
        processes (``isolation="process"``) are killed. After ``stop``
        returns the worker touches the store no more, so the broker may be
        closed.

        Called from one of this worker's own handlers or hooks, it only asks
        for the stop and returns ``False`` at once (it cannot wait for itself).

        Args:
            timeout: Grace period in seconds for in-flight handlers.

        Returns:
            Whether every in-flight handler finished in time.
        """
        core = self._core
        if core is None:
            return True
        core.request_stop(timeout)
        if getattr(self._mine, "yes", False):
            return False
        with self._stop_lock:
            if self._state == "stopped":
                return self._drained
            assert self._dispatcher is not None
            assert self._heartbeat is not None
            if self._schedules is not None:
                self._schedules.stop()
            # The dispatcher drains (pmsq.worker.loops.dispatch) and abandons
            # the lifecycle, which ends the heartbeat too.
            self._dispatcher.join()
            self._heartbeat.join()
            core.close()
            if self._portal is not None:
                with contextlib.suppress(RuntimeError):
                    self._portal.call(self._portal.stop, True)
            self._loop_stack.close()
            assert self._pool is not None
            self._pool.close()
            self._state = "stopped"
            drained = self._drained
        core.hooks("on_worker_stop", self)
        log.info("worker stopped", extra={"pmsq": {"event": "worker_stopped"}})
        return drained

    def run(self, *, shutdown_timeout: float = 30.0) -> None:
        """Start and block until stopped; return normally after a graceful stop.

        On the main thread, SIGINT and SIGTERM stop the worker gracefully
        (``stop(timeout=shutdown_timeout)``); a second signal stops it at
        once (running handlers are left to their leases). Elsewhere, call
        :meth:`stop` from another thread.

        Args:
            shutdown_timeout: Grace period for in-flight handlers on a signal.

        Raises:
            ConfigurationError: no handlers, or a queue without one.
        """
        self._shutdown_timeout = shutdown_timeout
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            self.start()
            core = self._core
            assert core is not None
            while not core.stopping:
                self.broker.runtime.wakeups.wait_any((), 0, 1.0, lambda: core.stopping)
            self.stop(shutdown_timeout)
        except BaseException:
            self.stop(0)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags and a reentrant-lock kick here: a signal handler must
        # never wait for a lock its own thread may hold.
        core = self._core
        if core is None:
            return
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info(
                "%s received: finishing %d in-flight handler(s) (up to %.0fs); "
                "send it again to stop at once",
                name,
                core.running,
                self._shutdown_timeout,
                extra={"pmsq": {"event": "signal", "signal": name}},
            )
            core.request_stop(self._shutdown_timeout)
        else:
            log.warning(
                "%s received again: stopping now", name, extra={"pmsq": {"event": "signal"}}
            )
            core.request_stop(0)

    # -- threads ---------------------------------------------------------------
    def _mark(self) -> None:
        self._mine.yes = True

    def _loop(self, gen: Generator[Effect, Any, Any]) -> None:
        """Drive one of the worker's loops (dispatcher, heartbeat) in this thread."""
        self._mark()
        core = self._core
        assert core is not None
        try:
            result = drive(gen, self._perform)
        except BaseException:
            # A bug: without its dispatcher or heartbeat a worker cannot keep
            # its promises, so it stops; its messages come back after their leases.
            name = threading.current_thread().name
            log.exception("the worker's thread %s failed; the worker stops", name)
            core.request_stop(0)
            core.abandon()
            result = False
        if isinstance(result, bool):
            self._drained = result

    def _run_job(self, job: Job) -> Callable[[], None] | None:
        core = self._core
        assert core is not None
        # Whether a settlement parked here is the first since the dispatcher's
        # last commit: only that one needs to wake it.
        tell = False

        def park(gen: Generator[Effect, Any, Any], effect: Effect) -> bool:
            nonlocal tell
            taken, first = core.park_noting(gen, effect)
            tell = tell or first
            return taken

        current: Job | None = job
        while current is not None:
            try:
                drive(core.process(current), self._perform, park=park)
            except Exception:
                core.internal_error(current)
            # The slot is free: a held message starts here at once, without
            # a thread hand-off or a dispatcher round.
            current = core.next_job()
            if tell and current is not None:
                tell = False
                core.post_news()
        # The dispatcher is told once this thread is back in the pool.
        return core.post_news if tell else None

    def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Call):
            return effect.fn()
        if isinstance(effect, Wait):
            self.broker.runtime.wakeups.wait_any(
                effect.queues, effect.since, effect.timeout, effect.wake
            )
        elif isinstance(effect, Start):
            assert self._pool is not None
            self._pool.submit(functools.partial(self._run_job, effect.job))
        elif isinstance(effect, Sleep):
            with self._hb_cv:
                if not self._hb_dirty:
                    until = effect.until
                    self._hb_cv.wait(None if until is None else max(0.0, until - time.monotonic()))
                self._hb_dirty = False
        elif isinstance(effect, Settle):
            effect.run()
        else:
            self._invoke(effect.invocation)
        return None

    def _invoke(self, inv: Invocation) -> None:
        if inv.spec.isolation == "process":
            assert self._core is not None
            self._core.run_in_process(inv)
        elif inv.spec.is_async:
            self._run_async(inv)
        else:
            # Waited for until it really returns, past its timeout too: its
            # lease and its key are kept meanwhile (pmsq.worker.invoke).
            inv.run_sync()

    def _run_async(self, inv: Invocation) -> None:
        portal = self._portal
        assert portal is not None
        try:
            portal.start_task_soon(inv.run_async).result()
        except (CancelledError, RuntimeError):
            # Only a forced stop cancels the loop's tasks (run_async keeps
            # whatever a handler raises, BaseExceptions included).
            inv.abandon(HandlerAbandoned("the worker's event loop stopped under the handler"))

    def _poke_heartbeat(self) -> None:
        with self._hb_cv:
            self._hb_dirty = True
            self._hb_cv.notify_all()
