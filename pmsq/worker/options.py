"""What both worker drivers check and assemble before they run (``Driver``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from pmsq.errors import ConfigurationError
from pmsq.handlers import HandlerSpec
from pmsq.worker.isolation import check_importable
from pmsq.worker.lifecycle import Lifecycle
from pmsq.worker.logs import OutcomeLog
from pmsq.worker.middleware import Hooks, Middleware

if TYPE_CHECKING:
    from pmsq.broker import Broker

__all__ = [
    "Driver",
    "check_concurrency",
    "check_middleware",
    "check_prefetch",
    "check_queues",
    "make_hooks",
    "select_handlers",
]

log = logging.getLogger("pmsq.worker")


def check_concurrency(concurrency: object) -> int:
    """Return ``concurrency`` if it is an int >= 1.

    Raises:
        ConfigurationError: otherwise.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
    return concurrency


def check_prefetch(prefetch: object) -> int | None:
    """Return ``prefetch`` if it is ``None`` (adaptive) or an int >= 0.

    Raises:
        ConfigurationError: otherwise.
    """
    if prefetch is None:
        return None
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise ConfigurationError(
            "prefetch must be None (adaptive) or an int >= 0 (messages claimed ahead of the "
            f"free handler slots), got {prefetch!r}"
        )
    return prefetch


def check_queues(queues: Iterable[str] | None) -> list[str] | None:
    """Return the queue names as a list (``None`` = every queue with a handler).

    Raises:
        ConfigurationError: a single string (a common slip for ``[name]``) or a non-string.
    """
    if queues is None:
        return None
    if isinstance(queues, str):
        raise ConfigurationError(f"queues takes a list of names, got the string {queues!r}")
    names = list(queues)
    for name in names:
        if not isinstance(name, str):
            raise ConfigurationError(f"queue names must be strings, got {name!r}")
    return names


def check_middleware(middleware: Iterable[object] | None) -> list[Middleware]:
    """Return the middleware as a list.

    Raises:
        ConfigurationError: an item is not a ``pmsq.Middleware``.
    """
    out: list[Middleware] = []
    for m in middleware or ():
        if not isinstance(m, Middleware):
            raise ConfigurationError(
                f"middleware must subclass pmsq.Middleware, got {type(m).__name__}"
            )
        out.append(m)
    return out


def select_handlers(broker: Broker, queues: Sequence[str] | None) -> dict[str, HandlerSpec]:
    """The handlers a worker serves: those of ``queues``, or every registered one.

    Raises:
        ConfigurationError: no handler at all, a named queue without one, or a
            handler with ``isolation="process"`` a child process cannot import.
    """
    handlers = broker.handlers
    names = sorted(handlers) if queues is None else list(dict.fromkeys(queues))
    missing = [q for q in names if q not in handlers]
    if missing:
        known = ", ".join(sorted(handlers)) or "none"
        raise ConfigurationError(
            f"no handler for queue(s) {', '.join(missing)}; handlers are registered with "
            f"@broker.handler(queue) (registered: {known})"
        )
    if not names:
        raise ConfigurationError(
            "no handlers to run: register one with @broker.handler(queue) before starting a worker"
        )
    specs = {q: handlers[q] for q in names}
    for spec in specs.values():
        if spec.isolation == "process":
            check_importable(spec)
    return specs


def make_hooks(broker: Broker, middleware: Sequence[Middleware]) -> Hooks:
    """The worker's log lines first, then the broker's middleware, then the worker's own.

    Raises:
        ConfigurationError: an item of ``broker.middleware`` is not a ``pmsq.Middleware``.
    """
    return Hooks([OutcomeLog(broker.clock), *check_middleware(broker.middleware), *middleware])


class Driver:
    """The part of ``Worker`` and ``AsyncWorker`` that is not about threads or tasks.

    The arguments are those of the two drivers (documented there), checked here.

    Raises:
        ConfigurationError: a bad option.
    """

    def __init__(
        self,
        broker: Broker,
        concurrency: int,
        queues: Iterable[str] | None,
        middleware: Iterable[Middleware] | None,
        prefetch: int | None = None,
    ) -> None:
        self.broker = broker
        self.concurrency = check_concurrency(concurrency)
        self.prefetch = check_prefetch(prefetch)
        self.queues = check_queues(queues)
        self.middleware = check_middleware(middleware)
        self._core: Lifecycle | None = None

    def _new_core(self, poke_heartbeat: Callable[[], None]) -> Lifecycle:
        """Select the handlers and build this run's lifecycle.

        Raises:
            ConfigurationError: no handlers, a queue without one, or a
                process-isolated handler a child process cannot import.
        """
        specs = select_handlers(self.broker, self.queues)
        hooks = make_hooks(self.broker, self.middleware)
        core = Lifecycle(
            self.broker,
            specs,
            self.concurrency,
            hooks,
            kick=self.broker.runtime.wakeups.kick,
            prefetch=self.prefetch,
        )
        core.heartbeats.on_earlier = poke_heartbeat
        self._core = core
        return core

    @property
    def _prefetch_text(self) -> str:
        return "adaptive" if self.prefetch is None else str(self.prefetch)

    def _announce(self, core: Lifecycle, what: str) -> None:
        """Run the ``on_worker_start`` hooks and log the start."""
        core.hooks("on_worker_start", self)
        log.info(
            "%s started: queues %s, concurrency %d, prefetch %s",
            what,
            ", ".join(core.queues),
            self.concurrency,
            self._prefetch_text,
            extra={"pmsq": {"event": "worker_started", "queues": list(core.queues)}},
        )
