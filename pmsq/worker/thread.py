"""``Worker``: the thread driver of the lifecycle.

Threads, all daemons so a hung handler never keeps the interpreter alive:

* one dispatcher claims (``Lifecycle.claim_round``), settles, and waits
  when idle;
* handler threads, an elastic pool: each claimed message runs
  ``Lifecycle.process`` in a thread of its own, so at most ``concurrency``
  are busy, plus any stuck in a handler that ran past its ``timeout`` (a
  thread cannot be killed; its message is settled as failed and its late
  return ignored, and a fresh thread takes its place). A handler thread
  does not settle: it parks the outcome and is free for the next message;
  the dispatcher commits everything parked since its last round in one
  transaction (one fsync), then resumes each message's lifecycle (the
  ``on_settle`` hooks run in the dispatcher). With many short handlers
  this turns one commit per message into one per round, and keeps the
  store's connection to one thread instead of a crowd contending for it;
* one heartbeat thread extends the leases of running handlers;
* an event loop thread (anyio portal), only when some handler is ``async``.

Wake-ups: the dispatcher sleeps in one ``Broker._wait_any`` covering all its
queues. A put in this process wakes it at once; puts by other processes are
seen within ``broker.poll_interval`` (default 0.05 s), when it polls with the
store's cheap lock-free probe. A handler that finishes while every slot is
taken wakes it to claim again.
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

from pmsq.worker.invoke import HandlerAbandoned, Invocation
from pmsq.worker.lifecycle import PARKED, Call, Effect, Job, Lifecycle, Settle, drive
from pmsq.worker.middleware import Middleware
from pmsq.worker.options import (
    check_concurrency,
    check_middleware,
    check_queues,
    make_hooks,
    select_handlers,
)

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


class Worker:
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
        concurrency: Handlers running at once, at most. It is also the most
            messages this worker holds: it claims only as many as it can start.
        queues: Queues to serve (each needs a handler); ``None``: every queue
            with a handler.
        middleware: Hooks for this worker, after those in ``broker.middleware``.

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
    ) -> None:
        self.broker = broker
        self.concurrency = check_concurrency(concurrency)
        self.queues = check_queues(queues)
        self.middleware = check_middleware(middleware)
        self._core: Lifecycle | None = None
        self._state = "new"
        self._drained = True
        self._stop_lock = threading.Lock()
        self._mine = threading.local()
        self._pool: _Threads | None = None
        self._dispatcher: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._hb_cv = threading.Condition()
        self._hb_dirty = False
        self._hb_stop = False
        self._loop_stack = contextlib.ExitStack()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._signals = 0
        self._shutdown_timeout = 30.0
        # Settlements parked by handler threads for the dispatcher to commit.
        self._parked: list[tuple[Job, Generator[Effect, Any, None], Settle]] = []
        self._parked_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Worker {self._state} concurrency={self.concurrency} broker={self.broker!r}>"

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
            specs = select_handlers(self.broker, self.queues)
            hooks = make_hooks(self.broker, self.middleware)
            core = Lifecycle(self.broker, specs, self.concurrency, hooks, kick=self.broker._kick)
            core.heartbeats.on_earlier = self._poke_heartbeat
            self._core = core
            self._pool = _Threads("pmsq-worker", self._mark)
            if any(spec.is_async for spec in specs.values()):
                self._portal = self._loop_stack.enter_context(
                    anyio.from_thread.start_blocking_portal()
                )
                self._portal.call(self._mark)
            hooks("on_worker_start", self)
            self._dispatcher = threading.Thread(
                target=self._dispatch_loop, name="pmsq-worker-dispatch", daemon=True
            )
            self._heartbeat = threading.Thread(
                target=self._heartbeat_loop, name="pmsq-worker-heartbeat", daemon=True
            )
            self._state = "running"
            self._heartbeat.start()
            self._dispatcher.start()
        log.info(
            "worker started: queues %s, concurrency %d",
            ", ".join(core.queues),
            self.concurrency,
            extra={"pmsq": {"event": "worker_started", "queues": list(core.queues)}},
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop claiming, let in-flight handlers finish, and return.

        Messages claimed but not started are handed back at once without
        spending an attempt. Handlers still running after ``timeout`` seconds
        are left alone: they are not settled, their leases run out and their
        messages are delivered again. After ``stop`` returns the worker
        touches the store no more, so the broker may be closed.

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
            if core.running:
                log.info(
                    "stopping: waiting up to %.0fs for %d in-flight handler(s)",
                    max(0.0, core.deadline - time.monotonic()),
                    core.running,
                    extra={"pmsq": {"event": "draining", "in_flight": core.running}},
                )
            assert self._dispatcher is not None
            assert self._heartbeat is not None
            self._dispatcher.join()
            while not core.drained_or_late():
                left = core.deadline - time.monotonic()
                self.broker._wait_any((), 0, min(1.0, left), core.drained_or_late)
            drained = core.idle()
            core.abandon()
            with self._parked_lock:
                left_parked, self._parked = self._parked, []
            for _, gen, _ in left_parked:
                gen.close()  # not settled: its lease runs out
            if not drained:
                log.warning(
                    "stopped with %d handler(s) still running: they are not settled; their "
                    "messages come back when their leases expire",
                    core.running,
                    extra={"pmsq": {"event": "abandoned", "in_flight": core.running}},
                )
            with self._hb_cv:
                self._hb_stop = True
                self._hb_cv.notify_all()
            self._heartbeat.join()
            core.close()
            if self._portal is not None:
                with contextlib.suppress(RuntimeError):
                    self._portal.call(self._portal.stop, True)
            self._loop_stack.close()
            assert self._pool is not None
            self._pool.close()
            self._state = "stopped"
            self._drained = drained
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
                self.broker._wait_any((), 0, 1.0, lambda: core.stopping)
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

    def _dispatch_loop(self) -> None:
        self._mark()
        core, broker, pool = self._core, self.broker, self._pool
        assert core is not None
        assert pool is not None

        def news() -> bool:
            return core.has_news() or bool(self._parked)

        def settling_news() -> bool:
            return bool(self._parked) or core.drained_or_late()

        while True:
            core.clear_news()
            since = broker._changes(core.queues)
            settled = self._settle_parked()
            if core.stopping:
                # Claim no more, but keep committing what finishing handlers park.
                if core.drained_or_late():
                    return
                if not settled:
                    left = min(1.0, core.deadline - time.monotonic())
                    broker._wait_any((), 0, max(0.0, left), settling_news)
                continue
            try:
                jobs: list[Job] = drive(core.claim_round(), self._perform)
            except Exception:
                log.exception("the worker's dispatcher failed; retrying in 1s")
                broker._wait_any((), 0, 1.0, news)
                continue
            for job in jobs:
                pool.submit(functools.partial(self._run_job, job))
            if jobs or settled:
                continue
            queues, timeout = core.wait_args()
            broker._wait_any(queues, since if queues else 0, timeout, news)

    def _settle_parked(self) -> bool:
        """Commit every parked settlement together and resume their lifecycles."""
        with self._parked_lock:
            batch, self._parked = self._parked, []
        if not batch:
            return False
        assert self._core is not None
        try:
            errors = self._core.settle_many([effect for _, _, effect in batch])
        except Exception as exc:  # a bug, not a store error: each message's lifecycle reports it
            log.exception(
                "settling %d message(s) failed; they come back when their leases expire",
                len(batch),
            )
            errors = [exc] * len(batch)  # type: ignore[list-item]
        for (job, gen, _), error in zip(batch, errors, strict=True):
            self._advance(job, gen, None, error)
        return True

    def _run_job(self, job: Job) -> Callable[[], None] | None:
        core = self._core
        assert core is not None
        parked = self._advance(job, core.process(job), None, None)
        # The dispatcher is told once this thread is back in the pool.
        return core.post_news if parked else None

    def _advance(
        self,
        job: Job,
        gen: Generator[Effect, Any, None],
        value: Any,
        error: Exception | None,
    ) -> bool:
        """Run ``job``'s lifecycle until it ends or parks its settlement (``True``)."""

        def park(effect: Effect) -> bool:
            if not isinstance(effect, Settle):
                return False
            with self._parked_lock:
                self._parked.append((job, gen, effect))
            return True

        try:
            return drive(gen, self._perform, park=park, value=value, error=error) is PARKED
        except Exception:
            log.exception(
                "internal error handling message %s; it comes back when its lease expires",
                job.delivery.message.id,
            )
            return False

    def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Call):
            return effect.fn()
        if isinstance(effect, Settle):
            return effect.run()
        inv = effect.invocation
        if inv.spec.isolation == "process":
            assert self._core is not None
            assert self._core.processes is not None
            inv.run_in_process(self._core.processes)
        elif inv.spec.is_async:
            self._run_async(inv)
        else:
            # Waited for until it really returns, past its timeout too: its
            # lease and its key are kept meanwhile (pmsq.worker.invoke).
            inv.run_sync()
        return None

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

    def _heartbeat_loop(self) -> None:
        self._mark()
        core = self._core
        assert core is not None
        while True:
            for job in core.heartbeats.due(time.monotonic()):
                core.beat(job)
            with self._hb_cv:
                if self._hb_stop:
                    return
                if not self._hb_dirty:
                    nxt = core.heartbeats.next_at()
                    self._hb_cv.wait(None if nxt is None else max(0.0, nxt - time.monotonic()))
                self._hb_dirty = False
