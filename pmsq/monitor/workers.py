"""The live-workers panel of ``pmsq monitor`` and ``pmsq stats``: who is consuming.

Pure, like ``render``: it turns ``broker.workers()`` (read by the caller)
into a rich table or plain lines. Everything shown comes from the store, so
it goes into ``Text`` cells, never through rich markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from pmsq.backends.presence import WorkerInfo
from pmsq.monitor.figures import fmt_age

if TYPE_CHECKING:
    from pmsq.broker import Broker

__all__ = ["read_workers", "render_workers", "worker_lines"]


def read_workers(broker: Broker) -> list[WorkerInfo] | None:
    """The live workers, or ``None`` when the backend keeps no heartbeats."""
    if not broker.backend.capabilities.presence:
        return None
    return broker.workers()


def _queues(w: WorkerInfo) -> str:
    return ", ".join(w.queues) or "-"


def render_workers(workers: Sequence[WorkerInfo] | None, now: float) -> RenderableType:
    """The panel: one row per live worker process (id, host:pid, slots, up, seen, queues).

    Args:
        workers: Live workers, or ``None`` when the backend cannot tell.
        now: The broker's clock (epoch seconds), for the ages.
    """
    if workers is None:
        return Text("live workers: not known (this backend keeps no heartbeats)", style="dim")
    if not workers:
        return Text("live workers: none (no process is consuming)", style="yellow")
    table = Table(
        box=box.SIMPLE_HEAD,
        padding=0,
        pad_edge=False,
        show_edge=False,
        header_style="bold",
        title=Text(f"live workers: {len(workers)}", style="bold"),
        title_justify="left",
    )
    table.add_column("worker", no_wrap=True)
    table.add_column("host:pid", no_wrap=True, overflow="ellipsis", max_width=28)
    table.add_column("slots", justify="right", no_wrap=True)
    table.add_column("up", justify="right", no_wrap=True)
    table.add_column("seen", justify="right", no_wrap=True)
    table.add_column("queues", overflow="fold")
    for w in workers:
        table.add_row(
            Text(w.id),
            Text(f"{w.host}:{w.pid}"),
            Text(str(w.concurrency)),
            Text(fmt_age(max(0.0, now - w.started_at.timestamp()))),
            Text(fmt_age(max(0.0, now - w.last_seen.timestamp())) + " ago"),
            Text(_queues(w)),
        )
    return table


def worker_lines(workers: Sequence[WorkerInfo] | None, now: float) -> str:
    """Plain lines for the monitor without a terminal (empty when not known)."""
    if workers is None:
        return ""
    if not workers:
        return "\nworkers: none live"
    return "".join(
        f"\nworker {w.id} {w.host}:{w.pid} slots={w.concurrency} "
        f"seen={fmt_age(max(0.0, now - w.last_seen.timestamp()))} queues={_queues(w)}"
        for w in workers
    )
