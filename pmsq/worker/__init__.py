"""Worker pools: ``Worker`` (threads), ``AsyncWorker`` (anyio) and ``Middleware`` hooks.

Both drivers run one lifecycle (``pmsq.worker.lifecycle``): claim only as
many messages as can start, invoke the handler with its lease kept alive by
heartbeats, settle through ``pmsq.policy.decide``, hand back what never
started on a graceful stop.
"""

from pmsq.worker.aio import AsyncWorker
from pmsq.worker.middleware import Middleware
from pmsq.worker.thread import Worker

__all__ = ["AsyncWorker", "Middleware", "Worker"]
