"""Placeholder: process isolation (filled in by the next commit)."""

from __future__ import annotations

from pmsq.handlers import HandlerSpec
from pmsq.message import Message

__all__ = ["ProcessPool"]


class ProcessPool:
    """Child processes that run handlers."""

    def call(self, spec: HandlerSpec, message: Message) -> BaseException | None:
        """Run ``spec`` on ``message`` in a child; return its error or ``None``."""
        raise NotImplementedError
