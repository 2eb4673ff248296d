"""``AsyncWorker``: the anyio driver of the worker's loops (asyncio or trio).

One task group holds the dispatcher (``pmsq.worker.loops.dispatch``), the
heartbeat (``pmsq.worker.loops.heartbeat``) and one task per claimed
message (``Lifecycle.process``); this module only says how each effect is
performed. ``async def`` handlers are awaited; sync handlers, handler
processes and every store call (the backend is synchronous) go to worker
threads through ``anyio.to_thread.run_sync`` with capacity limiters: one
sized ``concurrency`` for handlers, a small one for store calls. A
finished handler's settlement is parked and committed by the dispatcher
with those of the others (one transaction).

Wake-ups: an idle dispatcher waits in a thread on ``WakeUps.wait_any`` (``broker.runtime.wakeups``),
which covers all its queues: a put in this process wakes it at once, puts
by other processes are seen within ``broker.poll_interval`` (default
0.05 s). ``stop()``, parked settlements and freed slots wake it through the
same condition, so ``stop()`` works from any thread.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from pmsq.schedules.timer import run_async_timer
from pmsq.worker.effects import PARKED, Call, Effect, Invoke, Park, Settle, Sleep, Start, Wait
from pmsq.worker.invoke import HandlerAbandoned, Invocation
from pmsq.worker.lifecycle import Job
from pmsq.worker.loops import dispatch, heartbeat
from pmsq.worker.middleware import Middleware
from pmsq.worker.options import Driver

if TYPE_CHECKING:
    from pmsq.broker import Broker

__all__ = ["AsyncWorker"]

log = logging.getLogger("pmsq.worker")

# Store calls serialise on the backend anyway; a few threads let a settle
# overlap a claim and keep group commit fed without a thread per message.
_STORE_THREADS = 8


class AsyncWorker(Driver):
    """Runs the handlers registered on ``broker`` in an anyio task group.

    ``await worker.run()`` runs until the task is cancelled (handlers are
    cancelled with it; their messages come back when their leases expire)
    or until :meth:`stop` is called (a graceful drain).

    A put in this process wakes an idle worker at once; a put by another
    process is picked up within ``broker.poll_interval`` (default 0.05 s).

    Args:
        broker: The broker whose handlers (``@broker.handler``) to run.
        concurrency: Handlers running at once, at most.
        queues: Queues to serve (each needs a handler); ``None``: all with a handler.
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
        concurrency: int = 200,
        queues: Iterable[str] | None = None,
        *,
        middleware: Iterable[Middleware] | None = None,
        prefetch: int | None = None,
    ) -> None:
        super().__init__(broker, concurrency, queues, middleware, prefetch)
        self._started = False
        self._early_stop: float | None = None
        self._hb_event: anyio.Event | None = None
        self._settle_event: anyio.Event | None = None
        # Made in run(): anyio primitives belong to the event loop that runs them.
        self._handler_threads: anyio.CapacityLimiter | None = None
        self._store_threads: anyio.CapacityLimiter | None = None
        self._wait_threads: anyio.CapacityLimiter | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    def __repr__(self) -> str:
        return (
            f"<AsyncWorker concurrency={self.concurrency} prefetch={self._prefetch_text} "
            f"broker={self.broker!r}>"
        )

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for (the worker claims nothing more)."""
        return self._early_stop is not None or (self._core is not None and self._core.stopping)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask :meth:`run` to drain and return; does not wait. Safe from any thread.

        ``run`` stops claiming, hands back messages claimed but not started
        (no attempt spent), waits up to ``timeout`` seconds for in-flight
        handlers, cancels those still running and kills handler processes
        (not settled: their leases expire) and returns. Calling again can
        only shorten the grace period.
        """
        core = self._core
        if core is None:
            self._early_stop = min(timeout, self._early_stop or math.inf)
            return
        core.request_stop(timeout)

    async def run(self) -> None:
        """Claim and handle messages until cancelled or :meth:`stop`.

        Raises:
            ConfigurationError: no handlers, or a queue without one.
            RuntimeError: the worker ran before (an AsyncWorker runs once).
        """
        if self._started:
            raise RuntimeError("an AsyncWorker runs once; create a new one to run again")
        self._started = True
        core = self._new_core(self._poke_heartbeat)
        self._hb_event = anyio.Event()
        self._settle_event = anyio.Event()
        self._handler_threads = anyio.CapacityLimiter(self.concurrency)
        self._store_threads = anyio.CapacityLimiter(min(_STORE_THREADS, self.concurrency + 1))
        self._wait_threads = anyio.CapacityLimiter(2)
        if self._early_stop is not None:
            core.request_stop(self._early_stop)
        self._announce(core, "async worker")
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._drive, heartbeat(core))
                tg.start_soon(
                    run_async_timer,
                    self.broker.runtime,
                    self.broker.run_schedules,
                    self._store_threads,
                )
                tg.start_soon(self._settle_loop)
                await self._drive(dispatch(core, commit=False))
                # Past the grace period: handlers still running are cancelled
                # (not settled: their leases expire).
                tg.cancel_scope.cancel()
        finally:
            core.abandon()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(core.close)
            core.hooks("on_worker_stop", self)
            log.info("async worker stopped", extra={"pmsq": {"event": "worker_stopped"}})

    # -- performing effects ------------------------------------------------------------
    async def _run_job(self, job: Job) -> None:
        core = self._core
        assert core is not None
        tell = False

        def park(gen: Generator[Effect, Any, Any], effect: Effect) -> bool:
            nonlocal tell
            taken, first = core.park_noting(gen, effect)
            tell = first
            return taken

        current: Job | None = job
        while current is not None:
            tell = False
            try:
                await self._drive(core.process(current), park=park)
            except Exception:
                core.internal_error(current)
            if tell:
                # Committed with the others by the settle task, woken here on the
                # loop: no thread hop between a finished handler and its commit.
                assert self._settle_event is not None
                self._settle_event.set()
            # The slot is free: a held message starts in this task at once
            # (after a checkpoint: a chain of handlers that never await must
            # not starve the dispatcher and the settle task).
            current = core.next_job()
            if current is not None:
                await anyio.lowlevel.checkpoint()

    async def _settle_loop(self) -> None:
        # Here, unlike the thread Worker, a task of its own commits what
        # finished handlers parked (Lifecycle.commit_parked: one transaction
        # for all of them), woken on the loop: the dispatcher's waits go
        # through a thread, and a commit should not wait for its next round.
        core = self._core
        assert core is not None
        while True:
            assert self._settle_event is not None
            await self._settle_event.wait()
            self._settle_event = anyio.Event()
            await anyio.to_thread.run_sync(core.commit_parked, limiter=self._store_threads)

    async def _drive(self, gen: Generator[Effect, Any, Any], park: Park | None = None) -> Any:
        # The awaiting twin of pmsq.worker.effects.drive.
        value: Any = None
        error: Exception | None = None
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
                    value = await self._perform(effect)
                except Exception as exc:
                    error = exc
        finally:
            if not parked:
                gen.close()

    async def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Call):
            return await anyio.to_thread.run_sync(effect.fn, limiter=self._store_threads)
        if isinstance(effect, Wait):
            # Abandoned on cancellation: the thread ends by itself within its timeout.
            wait = functools.partial(
                self.broker.runtime.wakeups.wait_any,
                effect.queues,
                effect.since,
                effect.timeout,
                effect.wake,
            )
            await anyio.to_thread.run_sync(wait, abandon_on_cancel=True, limiter=self._wait_threads)
        elif isinstance(effect, Start):
            assert self._tg is not None
            self._tg.start_soon(self._run_job, effect.job)
        elif isinstance(effect, Sleep):
            assert self._hb_event is not None
            delay = math.inf if effect.until is None else max(0.0, effect.until - time.monotonic())
            with anyio.move_on_after(delay):
                await self._hb_event.wait()
            if self._hb_event.is_set():
                self._hb_event = anyio.Event()
        elif isinstance(effect, Settle):
            await anyio.to_thread.run_sync(effect.run, limiter=self._store_threads)
        else:
            await self._invoke(effect)
        return None

    async def _invoke(self, effect: Invoke) -> None:
        inv: Invocation = effect.invocation
        try:
            if inv.spec.isolation == "process":
                assert self._core is not None
                await anyio.to_thread.run_sync(
                    self._core.run_in_process,
                    inv,
                    abandon_on_cancel=True,
                    limiter=self._handler_threads,
                )
            elif inv.spec.is_async:
                await inv.run_async()
            else:
                # Waited for until it really returns, past its timeout too
                # (pmsq.worker.invoke); abandoned only by a forced stop.
                await anyio.to_thread.run_sync(
                    inv.run_sync, abandon_on_cancel=True, limiter=self._handler_threads
                )
        except BaseException:
            inv.abandon(HandlerAbandoned("the worker was cancelled while the handler ran"))
            raise

    def _poke_heartbeat(self) -> None:
        if self._hb_event is not None:
            self._hb_event.set()
