"""Run an ``AsyncWorker`` beside an ASGI app (FastAPI, Starlette) for the app's lifetime.

The durable replacement for FastAPI's ``BackgroundTasks``: work is a stored
message (put in the request's own transaction with ``connection=``), not a
callback that dies with the process. ::

    app = FastAPI(lifespan=pmsq.contrib.asgi.lifespan(broker))

or, inside a lifespan of the app's own::

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with pmsq.contrib.asgi.run_worker(broker):
            yield

On shutdown (uvicorn's SIGTERM, after in-flight requests) the worker stops
claiming, hands back messages claimed but not started, and waits up to
``shutdown_timeout`` seconds for the handlers in flight; handlers still
running then are cancelled and their messages come back when their leases
expire. Nothing is lost either way. Needs only anyio (a core dependency).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio

from pmsq.broker import Broker
from pmsq.worker.aio import AsyncWorker
from pmsq.worker.middleware import Middleware
from pmsq.worker.options import check_queues, select_handlers

__all__ = ["lifespan", "run_worker"]


@contextlib.asynccontextmanager
async def run_worker(
    broker: Broker,
    *,
    concurrency: int = 200,
    queues: Iterable[str] | None = None,
    middleware: Iterable[Middleware] | None = None,
    shutdown_timeout: float = 30.0,
) -> AsyncIterator[AsyncWorker]:
    """Run an ``AsyncWorker`` for ``broker``'s handlers while the block runs; drain on exit.

    Args:
        broker: The broker whose handlers (``@broker.handler``) to run.
        concurrency: Handlers running at once, at most.
        queues: Queues to serve; ``None``: every queue with a handler.
        middleware: Hooks for this worker.
        shutdown_timeout: Seconds the handlers in flight get to finish on exit.

    Yields:
        The running worker.

    Raises:
        ConfigurationError: no handlers, a queue without one, or a bad option
            (raised on entry, before the app starts serving).
    """
    # Checked here so a misconfiguration stops the app's startup with its own
    # error, rather than failing in the background task group.
    names = check_queues(queues)
    select_handlers(broker, names)
    worker = AsyncWorker(broker, concurrency, names, middleware=middleware)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run, name="pmsq worker")
        try:
            yield worker
        finally:
            worker.stop(shutdown_timeout)
        # Leaving the task group waits for run() to finish its drain.


def lifespan(
    broker: Broker,
    *,
    concurrency: int = 200,
    queues: Iterable[str] | None = None,
    middleware: Iterable[Middleware] | None = None,
    shutdown_timeout: float = 30.0,
    close: bool = False,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    """A Starlette/FastAPI ``lifespan=`` that runs :func:`run_worker` for the app's lifetime.

    Args:
        broker: The broker whose handlers to run.
        concurrency: Handlers running at once, at most.
        queues: Queues to serve; ``None``: every queue with a handler.
        middleware: Hooks for this worker.
        shutdown_timeout: Seconds the handlers in flight get to finish at shutdown.
        close: Also close ``broker`` once the worker has drained.

    Returns:
        ``lifespan(app)``: an async context manager whose state
        (``request.state``) holds ``pmsq_broker`` and ``pmsq_worker``.
    """

    @contextlib.asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            async with run_worker(
                broker,
                concurrency=concurrency,
                queues=queues,
                middleware=middleware,
                shutdown_timeout=shutdown_timeout,
            ) as worker:
                yield {"pmsq_broker": broker, "pmsq_worker": worker}
        finally:
            if close:
                broker.close()

    return _lifespan
