"""The refresh loop behind ``pmsq monitor`` (and the demo's screen).

Each refresh takes one ``broker.stats()`` snapshot and reads the stored
alert rules, then either redraws a rich ``Live`` display or, without a
terminal, prints the snapshot as plain lines. The loop ends when ``stop`` is
set (SIGINT/SIGTERM handlers set it), so the command exits 0 after a signal.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from pmsq.alerts import Alert, AlertRule, evaluate, load_rules
from pmsq.backends.presence import WorkerInfo
from pmsq.broker import Broker
from pmsq.control import pause_alerts
from pmsq.errors import PmsqError
from pmsq.monitor.figures import Tracker, plain_text, queue_history
from pmsq.monitor.pauses import pause_lines, pause_section, read_pauses
from pmsq.monitor.render import render
from pmsq.monitor.workers import read_workers, render_workers, worker_lines
from pmsq.schedules import Schedule
from pmsq.schedules.health import (
    read_schedules,
    schedule_alerts,
    schedule_lines,
    schedule_section,
)

__all__ = ["install_stop_signals", "watch"]


def install_stop_signals(stop: threading.Event) -> Callable[[], None]:
    """Make SIGINT and SIGTERM set ``stop``; return a function restoring the old handlers.

    Does nothing off the main thread (Python only delivers signals there).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


class _Screen:
    """One snapshot at a time: the tracker of previous snapshots and the rules."""

    def __init__(self, broker: Broker, *, tenants: bool, title: str) -> None:
        self.broker = broker
        self.tenants = tenants
        self.title = title
        self.tracker = Tracker()
        self.rules: dict[str, AlertRule] = {}
        self.schedules: list[Schedule] = []
        self.workers: list[WorkerInfo] | None = None
        self.pauses: list[Any] = []
        self.pause_alerts: list[Alert] = []
        self.error: str | None = None

    def take(self) -> bool:
        """Take a snapshot; False (with ``error`` set) if the store could not be read."""
        try:
            snap = self.broker.stats()
            self.rules = load_rules(self.broker.backend, snap.queues)
            self.schedules = read_schedules(self.broker.runtime)
            self.workers = read_workers(self.broker)
            self.pauses = read_pauses(self.broker)
            self.pause_alerts = pause_alerts(self.broker.runtime)
        except PmsqError as exc:
            # A store briefly locked or being replaced must not end the watch.
            self.error = str(exc)
            return False
        self.error = None
        self.tracker.update(snap)
        return True

    def renderable(
        self, width: int, header: RenderableType | None, *, final: bool = False
    ) -> RenderableType:
        """The screen; the ``final`` one, left behind when the watch ends, has no quit hint."""
        parts: list[RenderableType] = []
        if header is not None:
            parts.append(header)
        current = self.tracker.current
        if current is not None:
            parts.append(
                render(
                    current,
                    self.tracker.previous,
                    self.rules,
                    width,
                    history=queue_history(self.tracker),
                    tenants=self.tenants,
                    title=self.title,
                    extra_alerts=self.pause_alerts,
                )
            )
        if self.schedules and current is not None:
            parts.append(schedule_section(self.schedules, self.broker.clock.time()))
        if self.pauses and current is not None:
            parts.append(pause_section(self.pauses, self.broker.clock.time()))
        if current is not None:
            parts.append(render_workers(self.workers, self.broker.clock.time()))
        if self.error is not None:
            parts.append(Text(f"cannot read the store: {self.error}", style="bold red"))
        if not final:
            parts.append(Text("Ctrl-C to quit", style="dim"))
        return Group(*parts)

    def plain(self) -> str:
        current = self.tracker.current
        if self.error is not None or current is None:
            return f"pmsq: cannot read the store: {self.error}"
        alerts = evaluate(current, self.rules, tenants=self.tenants) + self.pause_alerts
        now = self.broker.clock.time()
        alerts += schedule_alerts(self.schedules, now)
        text = plain_text(
            current, self.tracker.previous, alerts, tenants=self.tenants, source=self.title
        )
        return (
            text
            + schedule_lines(self.schedules, now)
            + pause_lines(self.pauses, now)
            + worker_lines(self.workers, now)
        )


def watch(
    broker: Broker,
    *,
    stop: threading.Event,
    refresh: float = 1.0,
    tenants: bool = False,
    title: str = "pmsq monitor",
    plain: bool | None = None,
    console: Console | None = None,
    out: TextIO | None = None,
    header: Callable[[], RenderableType | None] | None = None,
) -> None:
    """Show the store's figures every ``refresh`` seconds until ``stop`` is set.

    Args:
        broker: The store to watch (another process may be writing it).
        stop: Set it to end the loop (after the current refresh).
        refresh: Seconds between snapshots.
        tenants: Show a line per tenant under each queue.
        title: First words of the header (command and store).
        plain: Print plain snapshots instead of a live display; default:
            when standard output is not a terminal.
        console: Rich console for the live display.
        out: Stream for plain snapshots (default standard output).
        header: Called each refresh for something to show above the table.
    """
    screen = _Screen(broker, tenants=tenants, title=title)
    if plain is None:
        plain = not sys.stdout.isatty()
    if plain:
        stream = out or sys.stdout
        while not stop.is_set():
            screen.take()
            extra = header() if header is not None else None
            if isinstance(extra, Text):
                print(extra.plain, file=stream)
            print(screen.plain(), file=stream, flush=True)
            stop.wait(refresh)
        return
    console = console or Console()

    def frame(final: bool = False) -> RenderableType:
        screen.take()
        extra = header() if header is not None else None
        return screen.renderable(console.width, extra, final=final)

    with Live(frame(), console=console, auto_refresh=False, redirect_stdout=False) as live:
        while not stop.wait(refresh):
            live.update(frame(), refresh=True)
        # The screen left behind shows the final state, without "Ctrl-C to quit".
        live.update(frame(final=True), refresh=True)
