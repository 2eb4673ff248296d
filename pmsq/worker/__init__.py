"""Worker pools: ``Worker`` (threads), ``AsyncWorker`` (anyio) and ``Middleware`` hooks.

Both drivers run the same I/O-free code and only perform its effects:

* ``loops``: the dispatcher (claim, commit parked settlements, wait, drain)
  and the heartbeat;
* ``lifecycle``: one message from claim to settlement (bounded prefetch,
  limits, the policy's outcome, hand-back of what never started);
* ``invoke``: one handler call, whatever it raises; ``isolation``: handlers
  in child processes, killed at their timeout;
* ``effects``: what those ask a driver to do, and the synchronous ``drive``.
"""

from pmsq.worker.aio import AsyncWorker
from pmsq.worker.middleware import Middleware
from pmsq.worker.thread import Worker

__all__ = ["AsyncWorker", "Middleware", "Worker"]
