"""Handler registration: ``@broker.handler(queue, ...)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import attrs

from pmsq.errors import ConfigurationError

__all__ = ["ISOLATIONS", "HandlerSpec"]

#: Where a handler runs: a thread of the worker (default), or a child process
#: that is killed at the handler's timeout.
ISOLATIONS = ("thread", "process")


def _check_isolation(spec: HandlerSpec, attribute: attrs.Attribute[str], value: object) -> None:
    if value not in ISOLATIONS:
        raise ConfigurationError(
            f"isolation must be one of {', '.join(map(repr, ISOLATIONS))}, got {value!r}"
        )
    if value == "process":
        qualname = str(getattr(spec.fn, "__qualname__", ""))
        if "<" in qualname or not getattr(spec.fn, "__module__", None):
            raise ConfigurationError(
                f"the handler of queue {spec.queue!r} has isolation='process': a child process "
                "imports it by name, so it must be a function defined at the top level of an "
                f"importable module, not {qualname or repr(spec.fn)}"
            )


@attrs.frozen
class HandlerSpec:
    """A registered handler and its options.

    Attributes:
        queue: The queue it consumes.
        fn: The function (sync or ``async def``) taking one ``pmsq.Message``.
        concurrency: At most this many run at once (``None``: the worker's limit).
        timeout: Seconds after which a running handler counts as failed (``None``: no
            bound). A handler in a thread is waited for past it (its key stays
            blocked) and then settled as a timeout failure; an async one is
            cancelled; one in a process is killed.
        tenant_concurrency: At most this many of one tenant's messages at once.
        isolation: ``"thread"`` (default) or ``"process"``: run in a child
            process that is killed at ``timeout`` (``fn`` must be importable by name).
    """

    queue: str
    fn: Callable[..., Any]
    concurrency: int | None = None
    timeout: float | None = None
    tenant_concurrency: int | None = None
    isolation: str = attrs.field(default="thread", validator=_check_isolation)

    @property
    def is_async(self) -> bool:
        """Whether ``fn`` is a coroutine function."""
        return inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(
            getattr(self.fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
