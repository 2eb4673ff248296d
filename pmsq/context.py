"""The message being handled in this thread or task, for correlation and causation ids."""

from __future__ import annotations

from contextvars import ContextVar

from pmsq.message import Message

__all__ = ["current_message"]

#: Set while a handler (or a ``with queue.get() as d:`` block) processes a message.
current_message: ContextVar[Message | None] = ContextVar("pmsq_current_message", default=None)
