"""Handler registration: ``@broker.handler(queue, ...)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["HandlerSpec"]


@attrs.frozen
class HandlerSpec:
    """A registered handler and its options.

    Attributes:
        queue: The queue it consumes.
        fn: The function (sync or ``async def``) taking one ``pmsq.Message``.
        concurrency: At most this many run at once (``None``: the worker's limit).
        timeout: Seconds after which a running handler counts as failed (``None``: no bound).
        tenant_concurrency: At most this many of one tenant's messages at once.
    """

    queue: str
    fn: Callable[..., Any]
    concurrency: int | None = None
    timeout: float | None = None
    tenant_concurrency: int | None = None

    @property
    def is_async(self) -> bool:
        """Whether ``fn`` is a coroutine function."""
        return inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(
            getattr(self.fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
