"""Drive a demo day: start it, show it (live dashboard or progress lines), verify it."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from rich.console import Console
from rich.text import Text

import pmsq
from pmsq.demo.app import DemoRun
from pmsq.demo.model import verify
from pmsq.demo.report import render_report
from pmsq.demo.scenario import TENANTS

__all__ = ["run_demo"]


def _progress(day: DemoRun) -> Text:
    with day.lock:
        published, fired = len(day.published), list(day.alerts_fired)
        fired_at = list(day.alerts_fired_at)
    phase = "draining" if day.publishing_done.is_set() else "publishing"
    elapsed = day.elapsed()
    text = Text("PMS day ", style="bold")
    text.append(
        f"{len(TENANTS)} companies, {sum(TENANTS.values())} properties · {phase} · "
        f"{min(elapsed, day.duration):.0f}/{day.duration:.0f}s · {published:,} events published"
    )
    put, sent, withdrawn = day.reminders.counts()
    channel = "DOWN (maintenance)" if day.in_maintenance() else "up"
    text.append(
        f"\nreminders {put:,} put, {sent:,} sent, {withdrawn:,} withdrawn by cancellations"
        f" · channel API {channel}"
    )
    if fired:
        # A callback fires once, when its alert starts; the figure it carries is
        # the one at that moment (the table below shows the current one).
        at = f", at {fired_at[-1]:.0f}s" if fired_at else ""
        text.append(
            f"\nalert callbacks fired: {len(fired)} (each once, when its alert starts)"
            f"\n  latest{at}: {fired[-1].message}"
        )
        text.stylize("yellow", text.plain.index("alert callbacks"))
    return text


def _plain_line(day: DemoRun, broker: pmsq.Broker) -> str:
    snap = broker.stats()
    qs = snap.queues.values()
    with day.lock:
        published = len(day.published)
    return (
        f"[{day.elapsed():5.1f}s] {published} events · "
        f"{sum(q.processed for q in qs)} processed · {sum(q.retried for q in qs)} retried · "
        f"{sum(q.dead for q in qs)} dead · {sum(q.ready + q.delayed for q in qs)} waiting · "
        f"{sum(q.in_flight for q in qs)} in flight"
    )


@contextlib.contextmanager
def _log_to(path: str) -> Iterator[None]:
    # The worker logs every retry and dead letter; on screen they would tear the
    # dashboard apart, so during the demo they go to a file beside the store.
    logger = logging.getLogger("pmsq")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        handler.close()


def run_demo(
    path: str,
    *,
    duration: float,
    seed: int | None = None,
    live: bool = True,
    console: Console | None = None,
    routes: dict[str, str] | None = None,
) -> int:
    """Run the demo on a new store at ``path``; return 0 if every check passed, else 1.

    Args:
        path: The store file to create.
        duration: Seconds of publishing.
        seed: Seed of the day.
        live: Show the live dashboard (else a progress line per second).
        console: Where to print (default standard output).
        routes: Queues in other stores (``--payments-db``: the accounting queue).
    """
    console = console or Console()
    console.print(f"store: {path}  (worker log: {path}.log)", highlight=False, soft_wrap=True)
    with _log_to(f"{path}.log"):
        return _run(path, duration=duration, seed=seed, live=live, console=console, routes=routes)


def _run(
    path: str,
    *,
    duration: float,
    seed: int | None,
    live: bool,
    console: Console,
    routes: dict[str, str] | None = None,
) -> int:
    from pmsq.monitor.live import install_stop_signals, watch

    day = DemoRun(path, duration=duration, seed=seed, routes=routes)
    interrupted = threading.Event()
    stop_threads = day.start()
    # SIGINT/SIGTERM end the show early; the run then stops without a verdict.
    restore = install_stop_signals(interrupted)
    watcher = pmsq.connect(path, durability="normal", routes=routes)
    try:
        if live:
            done = threading.Event()

            def finish() -> None:
                while not (day.drained.wait(0.1) or interrupted.is_set()):
                    pass
                done.set()

            threading.Thread(target=finish, daemon=True).start()
            watch(
                watcher,
                stop=done,
                refresh=0.5,
                title=f"pmsq demo {path}",
                plain=False,
                console=console,
                header=lambda: _progress(day),
            )
        else:
            while not (day.drained.wait(1.0) or interrupted.is_set()):
                console.print(_plain_line(day, watcher), highlight=False, soft_wrap=True)
            console.print(_plain_line(day, watcher), highlight=False, soft_wrap=True)
    finally:
        restore()
        stop_threads()
        watcher.close()
    try:
        if interrupted.is_set():
            console.print("interrupted: no verification", style="yellow")
            return 130
        history = day.history()
    finally:
        day.close()
    checks = verify(history)
    console.print(render_report(checks, history))
    flags = "".join(f" --route '{p}={u}'" for p, u in (routes or {}).items())
    console.print(
        f"store kept: pmsq stats {path}{flags}; pmsq dlq list {path} email",
        highlight=False,
        soft_wrap=True,
    )
    return 0 if all(c.ok for c in checks) else 1
