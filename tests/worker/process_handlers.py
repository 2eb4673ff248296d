"""Handlers for the process-isolation tests: top-level functions a child process imports.

Each appends ``<message id> <attempt> <pid> <event>`` lines to the file
named by ``payload["log"]``, the only channel back to the test besides the
settlement.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pmsq
from pmsq.context import current_message


def _note(message: pmsq.Message, event: str) -> None:
    with Path(message.payload["log"]).open("a") as f:
        f.write(f"{message.id} {message.attempt} {os.getpid()} {event}\n")


def behave(message: pmsq.Message) -> None:
    """Do what ``payload["do"]`` says; every message but the first attempt's succeeds."""
    assert current_message.get() == message  # the context is set in the child too
    _note(message, "start")
    do = message.payload.get("do")
    if message.attempt == 1 or do in ("hang", "reject", "fail"):
        if do == "hang":
            threading.Event().wait()  # a library that never returns
        if do == "exit":
            os._exit(3)
        if do == "wait-for-kill":
            threading.Event().wait()  # the test SIGKILLs this process
        if do == "reject":
            raise pmsq.Reject("no such booking")
        if do == "retry":
            raise pmsq.Retry(delay=0)
        if do == "fail":
            raise ValueError(f"invoice {message.payload.get('n')} is broken")
        if do == "sys-exit":
            raise SystemExit(2)
    _note(message, "done")


async def behave_async(message: pmsq.Message) -> None:
    """The async twin of :func:`behave` for ``hang`` (an await that never ends)."""
    _note(message, "start")
    if message.payload.get("do") == "hang":
        await asyncio.Event().wait()
    _note(message, "done")
