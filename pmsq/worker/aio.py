"""``AsyncWorker``: the anyio driver of the lifecycle (asyncio or trio).

One task group holds a dispatcher (claims), a heartbeat task, a settle task
and one task per claimed message. A message's task does not commit its
outcome itself: it parks it, and the settle task commits everything parked
meanwhile in one transaction (``Lifecycle.settle_many``) and hands each
task its own result. ``async def`` handlers are awaited; sync handlers and
every store call (the backend is synchronous) go to worker threads through
``anyio.to_thread.run_sync`` with capacity limiters: one sized
``concurrency`` for sync handlers, a small one for store calls.

Wake-ups: an idle dispatcher waits in a thread on ``Broker._wait_any``,
which covers all its queues: a put in this process wakes it at once, puts
by other processes are seen within ``broker.poll_interval`` (default
0.05 s). ``stop()`` and finished handlers wake it through the same
condition, so ``stop()`` works from any thread.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from pmsq.worker.invoke import HandlerAbandoned
from pmsq.worker.lifecycle import Call, Effect, Job, Lifecycle, Settle
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

__all__ = ["AsyncWorker"]

log = logging.getLogger("pmsq.worker")

# Store calls serialise on the backend anyway; a few threads let a settle
# overlap a claim and keep group commit fed without a thread per message.
_STORE_THREADS = 8


class _Parked:
    """A finished handler's settlement waiting for the settle loop."""

    __slots__ = ("done", "effect", "error")

    def __init__(self, effect: Settle) -> None:
        self.effect = effect
        self.done = anyio.Event()
        self.error: Exception | None = None


class AsyncWorker:
    """Runs the handlers registered on ``broker`` in an anyio task group.

    ``await worker.run()`` runs until the task is cancelled (handlers are
    cancelled with it; their messages come back when their leases expire)
    or until :meth:`stop` is called (a graceful drain).

    A put in this process wakes an idle worker at once; a put by another
    process is picked up within ``broker.poll_interval`` (default 0.05 s).

    Args:
        broker: The broker whose handlers (``@broker.handler``) to run.
        concurrency: Handlers running at once, at most; also the most
            messages held (it claims only as many as it can start).
        queues: Queues to serve (each needs a handler); ``None``: all with a handler.
        middleware: Hooks for this worker, after those in ``broker.middleware``.

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
    ) -> None:
        self.broker = broker
        self.concurrency = check_concurrency(concurrency)
        self.queues = check_queues(queues)
        self.middleware = check_middleware(middleware)
        self._core: Lifecycle | None = None
        self._started = False
        self._early_stop: float | None = None
        self._hb_event: anyio.Event | None = None
        # Made in run(): anyio primitives belong to the event loop that runs them.
        self._handler_threads: anyio.CapacityLimiter | None = None
        self._store_threads: anyio.CapacityLimiter | None = None
        self._wait_threads: anyio.CapacityLimiter | None = None
        # Settlements parked by finished handlers, committed together by _settle_loop.
        self._parked: list[_Parked] = []
        self._settle_wake: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<AsyncWorker concurrency={self.concurrency} broker={self.broker!r}>"

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for (the worker claims nothing more)."""
        return self._early_stop is not None or (self._core is not None and self._core.stopping)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask :meth:`run` to drain and return; does not wait. Safe from any thread.

        ``run`` stops claiming, hands back messages claimed but not started
        (no attempt spent), waits up to ``timeout`` seconds for in-flight
        handlers, cancels those still running (not settled: their leases
        expire) and returns. Calling again can only shorten the grace period.
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
        specs = select_handlers(self.broker, self.queues)
        hooks = make_hooks(self.broker, self.middleware)
        core = Lifecycle(self.broker, specs, self.concurrency, hooks, kick=self.broker._kick)
        self._hb_event = anyio.Event()
        self._settle_wake = anyio.Event()
        self._handler_threads = anyio.CapacityLimiter(self.concurrency)
        self._store_threads = anyio.CapacityLimiter(min(_STORE_THREADS, self.concurrency + 1))
        self._wait_threads = anyio.CapacityLimiter(2)
        core.heartbeats.on_earlier = self._poke_heartbeat
        self._core = core
        if self._early_stop is not None:
            core.request_stop(self._early_stop)
        hooks("on_worker_start", self)
        log.info(
            "async worker started: queues %s, concurrency %d",
            ", ".join(core.queues),
            self.concurrency,
            extra={"pmsq": {"event": "worker_started", "queues": list(core.queues)}},
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._settle_loop)
                await self._dispatch(tg)
                await self._drain()
                tg.cancel_scope.cancel()
        finally:
            core.abandon()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(core.close)
            hooks("on_worker_stop", self)
            log.info("async worker stopped", extra={"pmsq": {"event": "worker_stopped"}})

    # -- tasks -------------------------------------------------------------------
    async def _wait(self, fn: Callable[[], None]) -> None:
        # Abandoned on cancellation: the thread ends by itself within its timeout.
        await anyio.to_thread.run_sync(fn, abandon_on_cancel=True, limiter=self._wait_threads)

    async def _dispatch(self, tg: anyio.abc.TaskGroup) -> None:
        core, broker = self._core, self.broker
        assert core is not None
        while not core.stopping:
            core.clear_news()
            since = broker._changes(core.queues)
            try:
                jobs: list[Job] = await self._drive(core.claim_round())
            except Exception:
                log.exception("the worker's dispatcher failed; retrying in 1s")
                await self._wait(functools.partial(broker._wait_any, (), 0, 1.0, core.has_news))
                continue
            for job in jobs:
                tg.start_soon(self._run_job, job)
            if jobs:
                continue
            queues, timeout = core.wait_args()
            await self._wait(
                functools.partial(
                    broker._wait_any, queues, since if queues else 0, timeout, core.has_news
                )
            )

    async def _drain(self) -> None:
        core = self._core
        assert core is not None
        if core.running:
            log.info(
                "stopping: waiting up to %.0fs for %d in-flight handler(s)",
                max(0.0, core.deadline - time.monotonic()),
                core.running,
                extra={"pmsq": {"event": "draining", "in_flight": core.running}},
            )
        while not core.drained_or_late():
            left = min(1.0, core.deadline - time.monotonic())
            await self._wait(
                functools.partial(self.broker._wait_any, (), 0, left, core.drained_or_late)
            )
        if not core.idle():
            log.warning(
                "stopped with %d handler(s) still running: they are cancelled and not "
                "settled; their messages come back when their leases expire",
                core.running,
                extra={"pmsq": {"event": "abandoned", "in_flight": core.running}},
            )
        core.abandon()

    async def _run_job(self, job: Job) -> None:
        assert self._core is not None
        try:
            await self._drive(self._core.process(job))
        except Exception:
            log.exception(
                "internal error handling message %s; it comes back when its lease expires",
                job.delivery.message.id,
            )

    async def _drive(self, gen: Generator[Effect, Any, Any]) -> Any:
        # The async twin of lifecycle.drive: send results, throw errors in.
        value: Any = None
        error: Exception | None = None
        try:
            while True:
                try:
                    effect = gen.throw(error) if error is not None else gen.send(value)
                except StopIteration as stop:
                    return stop.value
                value, error = None, None
                try:
                    value = await self._perform(effect)
                except Exception as exc:
                    error = exc
        finally:
            gen.close()

    async def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Call):
            return await anyio.to_thread.run_sync(effect.fn, limiter=self._store_threads)
        if isinstance(effect, Settle):
            # Parked: the settle loop commits what finished handlers parked meanwhile
            # in one transaction (Lifecycle.settle_many).
            parked = _Parked(effect)
            self._parked.append(parked)
            assert self._settle_wake is not None
            self._settle_wake.set()
            await parked.done.wait()
            if parked.error is not None:
                raise parked.error
            return None
        inv = effect.invocation
        try:
            if inv.spec.isolation == "process":
                assert self._core is not None
                assert self._core.processes is not None
                await anyio.to_thread.run_sync(
                    inv.run_in_process,
                    self._core.processes,
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
        return None

    async def _settle_loop(self) -> None:
        core = self._core
        assert core is not None
        while True:
            assert self._settle_wake is not None
            await self._settle_wake.wait()
            self._settle_wake = anyio.Event()
            batch, self._parked = self._parked, []
            if not batch:
                continue
            try:
                errors: list[Exception | None] = list(
                    await anyio.to_thread.run_sync(
                        core.settle_many, [p.effect for p in batch], limiter=self._store_threads
                    )
                )
            except Exception as exc:  # a bug, not a store error: each lifecycle reports it
                log.exception(
                    "settling %d message(s) failed; they come back when their leases expire",
                    len(batch),
                )
                errors = [exc] * len(batch)
            for p, error in zip(batch, errors, strict=True):
                p.error = error
                p.done.set()

    def _poke_heartbeat(self) -> None:
        if self._hb_event is not None:
            self._hb_event.set()

    async def _heartbeat_loop(self) -> None:
        core = self._core
        assert core is not None
        while True:
            self._hb_event = anyio.Event()
            for job in core.heartbeats.due(time.monotonic()):
                await anyio.to_thread.run_sync(core.beat, job, limiter=self._store_threads)
            nxt = core.heartbeats.next_at()
            delay = math.inf if nxt is None else max(0.0, nxt - time.monotonic())
            with anyio.move_on_after(delay):
                await self._hb_event.wait()
