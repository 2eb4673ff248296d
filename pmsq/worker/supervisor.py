"""``Supervisor``: keeps N worker processes running (``pmsq worker --processes N``).

Each child is a fresh interpreter running ``pmsq worker`` for one process,
so it imports the app and opens its own broker (a SQLite connection must
never cross a fork). The supervisor:

* restarts a child that dies, after a backoff that doubles while children
  keep dying young (0.5 s up to 30 s), so a crash loop is not a tight loop;
* on SIGTERM or SIGINT forwards SIGTERM to every child (a graceful drain)
  and exits once they have; a second signal is forwarded too (children then
  stop at once), and children still alive ``shutdown_timeout`` + 10 s after
  the first signal are killed;
* starts children in their own session, so a terminal's Ctrl-C reaches only
  the supervisor (which forwards one SIGTERM), and asks the kernel to send
  them SIGTERM should the supervisor itself die (Linux).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType

import attrs

__all__ = ["PARENT_ENV", "Supervisor", "die_with_parent"]

log = logging.getLogger("pmsq.worker.supervisor")

#: Set in a child's environment to the supervisor's pid.
PARENT_ENV = "PMSQ_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1
_KILL_MARGIN = 10.0
_TICK = 0.1


def die_with_parent() -> None:
    """In a supervised child: get SIGTERM when the supervisor dies (Linux; else a no-op).

    Exits at once if the supervisor is already gone.
    """
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        raise SystemExit(0)  # orphaned before the request took effect


@attrs.define
class _Slot:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float | None = None


class Supervisor:
    """Runs ``command`` in ``processes`` children until a signal, restarting the dead.

    Args:
        command: The child's argv (``python -m pmsq worker app:broker ...``).
        processes: How many children.
        shutdown_timeout: The children's grace period; they are killed
            ``shutdown_timeout`` + 10 s after the first signal.
        min_backoff: First restart delay, seconds.
        max_backoff: Longest restart delay, seconds.
        stable_after: A child that ran this long resets the backoff.
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        shutdown_timeout: float = 30.0,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        stable_after: float = 10.0,
    ) -> None:
        self.command = list(command)
        self.shutdown_timeout = shutdown_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self._slots = [_Slot(i + 1) for i in range(processes)]
        self._signals = 0
        self._forwarded = 0
        self._stop_at: float | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1  # acted upon by the loop, never here

    def _spawn(self, slot: _Slot) -> None:
        env = dict(os.environ)
        env[PARENT_ENV] = str(os.getpid())
        slot.process = subprocess.Popen(self.command, env=env, start_new_session=True)
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("started worker process %d (pid %d)", slot.number, slot.process.pid)

    def _reap(self, slot: _Slot, now: float) -> None:
        proc = slot.process
        if proc is None or proc.poll() is None:
            return
        code = proc.returncode
        slot.process = None
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
        if self._signals:
            log.info("worker process %d (pid %d) %s", slot.number, proc.pid, how)
            return
        lived = now - slot.started
        if lived >= self.stable_after or slot.backoff == 0:
            slot.backoff = self.min_backoff
        else:
            slot.backoff = min(self.max_backoff, slot.backoff * 2)
        slot.restart_at = now + slot.backoff
        log.warning(
            "worker process %d (pid %d) %s after %.1fs; restarting in %.1fs",
            slot.number,
            proc.pid,
            how,
            lived,
            slot.backoff,
        )

    def _forward(self, sig: signal.Signals) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(sig)

    def run(self) -> int:
        """Supervise until a signal and every child has exited; return the exit code (0).

        Signal handlers are installed only on the main thread; elsewhere
        nothing stops it but killing its children's parent.
        """
        previous: dict[signal.Signals, object] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            for slot in self._slots:
                self._spawn(slot)
            while True:
                now = time.monotonic()
                for slot in self._slots:
                    self._reap(slot, now)
                if self._signals > self._forwarded:
                    if not self._forwarded:
                        log.info("stopping: asking %d worker process(es) to drain", self._alive())
                        self._stop_at = now + self.shutdown_timeout + _KILL_MARGIN
                    self._forward(signal.SIGTERM)
                    self._forwarded = self._signals
                if self._signals:
                    if not self._alive():
                        break
                    if self._stop_at is not None and now >= self._stop_at:
                        log.warning("worker processes did not stop in time; killing them")
                        self._forward(signal.SIGKILL)
                        self._stop_at = None
                else:
                    for slot in self._slots:
                        if slot.restart_at is not None and now >= slot.restart_at:
                            self._spawn(slot)
                time.sleep(_TICK)  # a supervisor's pace; signals cut it short
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
            self._forward(signal.SIGKILL)  # only if we leave by an error
        log.info("all worker processes stopped")
        return 0

    def _alive(self) -> int:
        return sum(1 for s in self._slots if s.process is not None and s.process.poll() is None)
