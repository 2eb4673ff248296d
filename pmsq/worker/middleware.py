"""``Middleware``: hooks around the worker lifecycle, and the runner that calls them.

A middleware subclasses :class:`Middleware` and overrides the hooks it needs;
every hook is a no-op by default. Register one for every worker of a broker
with ``broker.middleware.append(m)``, or for one worker with
``Worker(..., middleware=[m])``. A hook that raises is logged on the
``pmsq.worker`` logger and otherwise ignored: a broken metrics exporter must
never stop messages from flowing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from pmsq.errors import PmsqError
from pmsq.message import Message
from pmsq.policy import Outcome

__all__ = ["Hooks", "Middleware"]

log = logging.getLogger("pmsq.worker")


class Middleware:
    """Base class of worker hooks; override what you need, all default to doing nothing.

    Hooks run synchronously in the worker: keep them quick. In an
    ``AsyncWorker`` most run on the event loop, so they must not block; they
    may run in several threads at once, so they must be thread-safe.
    """

    def on_worker_start(self, worker: Any) -> None:
        """The worker started (before its first claim)."""

    def on_worker_stop(self, worker: Any) -> None:
        """The worker stopped (after the drain; it touches the store no more)."""

    def on_claim(self, message: Message) -> None:
        """``message`` was leased to this worker and is about to start."""

    def before_process(self, message: Message) -> None:
        """The handler is about to run, in its own thread or task.

        ``pmsq.context.current_message`` is already set, and context variables
        set here are visible to the handler.
        """

    def after_process(
        self,
        message: Message,
        outcome: Outcome,
        error: BaseException | None,
        duration_ms: float,
    ) -> None:
        """The handler ended; ``outcome`` is the policy's decision, about to be applied.

        When the message was cancelled (or its lease lost) while the handler
        ran, this is still called, with ``pmsq.worker.invoke.MessageGone``
        as the error of a cancelled async handler, but the outcome is
        discarded: :meth:`on_settle` is not called.

        Args:
            message: The message handled.
            outcome: ``pmsq.policy.Ack``, ``RetryAt`` or ``DeadLetterOutcome``.
            error: What the handler raised (``TimeoutError`` past its
                ``timeout``), or ``None`` when it returned.
            duration_ms: Handler time in milliseconds.
        """

    def on_settle(self, message: Message, outcome: Outcome, error: PmsqError | None) -> None:
        """The outcome was applied (``error`` is ``None``), or applying it failed.

        Args:
            message: The message handled.
            outcome: What was applied.
            error: ``LeaseLost`` (the lease expired and someone else holds the
                message now) or ``StorageError``, if settling failed.
        """

    def on_release(self, message: Message) -> None:
        """``message`` was handed back unstarted (shutdown) without spending an attempt."""


def _nothing(*args: Any) -> None:
    pass


def _overrides(m: Middleware, name: str, base: object) -> bool:
    # Looked up on the instance, as the call will be: a hook may come from
    # __getattr__ or an instance attribute as well as from a subclass.
    found = getattr(m, name, None)
    return getattr(found, "__func__", None) is not base


class Hooks:
    """Calls a hook on every middleware in order, logging (never raising) failures.

    Only middleware that override a hook are called for it: a hook nobody
    overrides costs a dictionary look-up, not a call per middleware per message.
    """

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        self.middleware = tuple(middleware)
        self._table: dict[str, tuple[Middleware, ...]] = {}
        for name, base in vars(Middleware).items():
            if callable(base) and not name.startswith("_"):
                self._table[name] = tuple(m for m in self.middleware if _overrides(m, name, base))

    def has(self, hook: str) -> bool:
        """Whether some middleware overrides ``hook``."""
        return bool(self._table.get(hook, self.middleware))

    def caller(self, hook: str) -> Callable[..., None]:
        """A callable running ``hook`` (one that does nothing when nobody overrides it)."""
        return functools.partial(self, hook) if self.has(hook) else _nothing

    def __call__(self, hook: str, *args: Any) -> None:
        for m in self._table.get(hook, self.middleware):
            try:
                getattr(m, hook)(*args)
            except Exception:
                log.exception(
                    "middleware %s.%s failed; the worker carries on",
                    type(m).__qualname__,
                    hook,
                    extra={"pmsq": {"event": "hook_failed", "hook": hook}},
                )
