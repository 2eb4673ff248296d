"""Process isolation: handlers run in child processes that can be killed.

``@broker.handler(q, timeout=..., isolation="process")`` is for handlers
that call libraries which may hang (PDF rendering, payment SDKs): a thread
cannot be stopped, a process can. Each running handler has a child process
of its own, started with the ``spawn`` method (a fresh interpreter: no
inherited locks, threads or store connections) and reused for the next
message once it answered. A child still running at the handler's timeout is
killed (SIGKILL) and waited for, so the message is settled only once nothing
of its attempt runs any more: its key stays blocked until then.

The child imports the handler by name (``module`` + ``__qualname__``), so
it must be a function defined at the top level of an importable module. It
receives a pickled ``pmsq.Message`` and answers with plain strings (the
outcome, never a pickled exception). A child that dies (``os._exit``, a
crash, SIGKILL from outside) fails its message, and the next message gets a
fresh child; a child whose parent died exits by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pmsq.context import current_message
from pmsq.errors import ConfigurationError, Reject, Retry, Snooze
from pmsq.handlers import HandlerSpec
from pmsq.message import Message
from pmsq.policy import RemoteError, describe_error

__all__ = ["HandlerProcessDied", "ProcessPool", "check_importable"]

# How often a child checks that its parent is still there.
_PARENT_CHECK = 1.0
# A child must start the handler (interpreter start-up, imports) within this.
_STARTUP_TIMEOUT = 120.0


class HandlerProcessDied(Exception):
    """The child process running a handler exited before it answered."""


def check_importable(spec: HandlerSpec) -> None:
    """Check that a child process can import ``spec``'s handler by name.

    Raises:
        ConfigurationError: the handler cannot be found again by its module
            and qualified name (a lambda, a nested function, a function
            defined in an interactive session, or rebound under another name).
    """
    fn = spec.fn
    module_name = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    problem = (
        f"the handler of queue {spec.queue!r} has isolation='process': a child process "
        "imports it by name, so it must be a function defined at the top level of an "
        "importable module"
    )
    if module_name == "__main__" and not getattr(sys.modules.get("__main__"), "__file__", None):
        raise ConfigurationError(f"{problem}; it was defined in an interactive session")
    try:
        found = _resolve(str(module_name), str(qualname))
    except Exception as exc:
        raise ConfigurationError(
            f"{problem}; {module_name}.{qualname} cannot be imported ({exc})"
        ) from exc
    if found is not fn:
        raise ConfigurationError(
            f"{problem}; {module_name}.{qualname} names another object than the registered handler"
        )


def _resolve(module_name: str, qualname: str) -> Any:
    if "<" in qualname:  # <lambda>, <locals>
        raise LookupError("it is a lambda or a nested function")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "was lost"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class _Child:
    """One child process and the parent's end of its pipe."""

    def __init__(self, ctx: Any) -> None:
        parent_end, child_end = ctx.Pipe()
        self._gone = False
        self.conn: multiprocessing.connection.Connection = parent_end
        self.process = ctx.Process(
            target=_child_main,
            args=(child_end, os.getpid()),
            name="pmsq-handler",
            daemon=True,
        )
        self.process.start()
        child_end.close()

    def kill(self) -> None:
        """Kill the child and wait until it is gone (idempotent)."""
        if self._gone:
            return
        with contextlib.suppress(OSError, ValueError):
            self.process.kill()
        self.process.join()
        self.close()

    def close(self) -> None:
        """Let go of the pipe and, once it exited, the process object."""
        self._gone = True
        with contextlib.suppress(OSError):
            self.conn.close()
        with contextlib.suppress(ValueError):
            if self.process.exitcode is not None:
                self.process.close()


class ProcessPool:
    """Child processes running handlers, one per running handler, reused when idle.

    Thread-safe: each worker thread that runs a handler calls :meth:`call`
    and waits there (the heartbeat keeps the lease meanwhile).
    """

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._closed = False

    def _acquire(self) -> _Child:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker's handler processes are shut down")
            child = self._idle.pop() if self._idle else None
        if child is None or not child.process.is_alive():
            if child is not None:
                child.kill()
            child = _Child(self._ctx)
        with self._lock:
            self._busy.add(child)
        return child

    def _give_back(self, child: _Child, *, alive: bool) -> None:
        with self._lock:
            self._busy.discard(child)
            if alive and not self._closed:
                self._idle.append(child)
                return
        if alive:
            self._stop_child(child)
        else:
            child.kill()

    def call(
        self,
        spec: HandlerSpec,
        message: Message,
        *,
        on_start: Callable[[Callable[[], None]], None] | None = None,
    ) -> BaseException | None:
        """Run ``spec``'s handler on ``message`` in a child process; block until it is over.

        ``on_start`` is handed a thread-safe function that kills the child
        (the worker calls it when the message is cancelled under the
        handler); the call then returns ``HandlerProcessDied``.

        Returns:
            ``None`` when the handler returned, otherwise what the message
            is settled with: ``Retry``/``Reject`` as raised, a ``RemoteError``
            carrying the child's exception type and traceback, a
            ``TimeoutError`` (the child was killed at the timeout) or
            ``HandlerProcessDied``.
        """
        child = self._acquire()
        alive = False
        if on_start is not None:
            # Only the signal: this thread, waiting on the pipe, sees the child
            # die and reaps it (closing the pipe under it would not be safe).
            on_start(functools.partial(_signal_kill, child))
        try:
            try:
                child.conn.send((spec.fn.__module__, spec.fn.__qualname__, message))
            except (OSError, EOFError):
                return HandlerProcessDied(
                    f"the handler process (pid {child.process.pid}) of queue {spec.queue!r} "
                    f"{_describe_exit(child.process.exitcode)} before it took the message"
                )
            # The timeout counts from the handler's start: a fresh child's
            # interpreter start-up and imports are not the handler's time.
            started = self._started(child, spec)
            if started is not None:
                return started
            if not child.conn.poll(spec.timeout):
                pid = child.process.pid
                child.kill()
                return TimeoutError(
                    f"handler of queue {spec.queue!r} ran past its timeout of {spec.timeout}s; "
                    f"its process (pid {pid}) was killed"
                )
            try:
                reply = child.conn.recv()
            except (OSError, EOFError):
                child.process.join()
                return HandlerProcessDied(
                    f"the handler process (pid {child.process.pid}) of queue {spec.queue!r} "
                    f"{_describe_exit(child.process.exitcode)} before it answered"
                )
            alive = True
            return _error_from(reply)
        finally:
            self._give_back(child, alive=alive)

    @staticmethod
    def _started(child: _Child, spec: HandlerSpec) -> BaseException | None:
        """Wait for the child to take the message; the error if it never does."""
        try:
            if child.conn.poll(_STARTUP_TIMEOUT) and child.conn.recv() == ("started",):
                return None
        except (OSError, EOFError):
            child.process.join()
            return HandlerProcessDied(
                f"the handler process (pid {child.process.pid}) of queue {spec.queue!r} "
                f"{_describe_exit(child.process.exitcode)} before the handler started"
            )
        pid = child.process.pid
        child.kill()
        return HandlerProcessDied(
            f"the handler process (pid {pid}) of queue {spec.queue!r} did not start the "
            f"handler within {_STARTUP_TIMEOUT:.0f}s and was killed"
        )

    def close(self, *, kill: bool = False) -> None:
        """Stop the idle children; ``kill``: also kill those still running a handler."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy) if kill else []
        for child in idle:
            self._stop_child(child)
        for child in busy:
            # Reaped here too, so nothing of an abandoned attempt outlives the
            # stop; the thread that waited for it then finds it gone.
            with contextlib.suppress(OSError, ValueError):
                child.process.kill()
                child.process.join(5.0)

    @staticmethod
    def _stop_child(child: _Child) -> None:
        with contextlib.suppress(OSError):
            child.conn.send(None)
        child.process.join(5.0)
        if child.process.is_alive():
            child.kill()
        else:
            child.close()


def _signal_kill(child: _Child) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        child.process.kill()


def _error_from(reply: tuple[Any, ...]) -> BaseException | None:
    kind = reply[0]
    if kind == "ok":
        return None
    if kind == "retry":
        return Retry(delay=reply[1])
    if kind == "reject":
        return Reject(reply[1])
    if kind == "snooze":
        return Snooze(reply[1])
    _, error_type, summary, text = reply
    return RemoteError(error_type, summary, text)


# -- the child's side ---------------------------------------------------------------
def _child_main(conn: multiprocessing.connection.Connection, parent: int) -> None:
    """Serve handler calls from ``conn`` until told to stop or the parent is gone."""
    # The parent decides about stopping: a Ctrl-C reaching the whole process
    # group must not kill a handler halfway; the worker drains or kills it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        module_name, qualname, message = request
        conn.send(_run(conn, module_name, qualname, message))


def _watch_parent(parent: int) -> None:
    # A parent killed with SIGKILL cannot kill its children: an orphan exits
    # by itself, even in the middle of a hung handler.
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK)
    os._exit(70)


def _run(
    conn: multiprocessing.connection.Connection, module_name: str, qualname: str, message: Message
) -> tuple[Any, ...]:
    current_message.set(message)
    fn: Any = None
    unresolved: BaseException | None = None
    try:
        fn = _resolve(module_name, qualname)  # imports: not the handler's time
    except BaseException as exc:
        unresolved = exc  # the handler's failure, reported below like any error
    conn.send(("started",))
    try:
        if unresolved is not None:
            raise unresolved
        if inspect.iscoroutinefunction(fn):
            asyncio.run(fn(message))
        else:
            fn(message)
    except Retry as signal_:
        return ("retry", signal_.delay)
    except Reject as signal_:
        return ("reject", signal_.reason)
    except Snooze as signal_:
        return ("snooze", signal_.delay)
    except BaseException as exc:  # SystemExit too: it is this message's failure
        error_type, text = describe_error(exc)
        return ("error", error_type, str(exc) or type(exc).__name__, text)
    return ("ok",)
