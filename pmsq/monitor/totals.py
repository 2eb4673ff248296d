"""``totals``: a snapshot's all-time counters (processed, failed, ...) as a rich table.

The dashboard shows what is happening now (depth, rates over the last
minute); ``pmsq stats`` adds this table for what has happened since the
store was created, with a line summing every queue.
"""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from pmsq.stats import QueueStats, Stats

__all__ = ["render_totals"]

_COLUMNS = ("processed", "failed", "retried", "dead-lettered")


def _figures(s: QueueStats) -> tuple[int, int, int, int]:
    return (s.processed, s.failed, s.retried, s.dead_lettered)


def render_totals(stats: Stats, *, tenants: bool = False) -> Table:
    """All-time counters per queue (and per tenant), then their sum over every queue.

    Args:
        stats: The snapshot.
        tenants: Add a line per tenant under each queue.

    Returns:
        A table titled "totals since the store was created".
    """
    table = Table(
        title="totals since the store was created",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 0, 0, 1),
        pad_edge=False,
        show_edge=False,
        header_style="bold",
        show_footer=len(stats.queues) > 1,
    )
    sums = [0] * len(_COLUMNS)
    for name in sorted(stats.queues):
        for i, n in enumerate(_figures(stats.queues[name])):
            sums[i] += n
    table.add_column("queue", footer="all queues", no_wrap=True, overflow="ellipsis", max_width=24)
    for title, total in zip(_COLUMNS, sums, strict=True):
        table.add_column(title, footer=f"{total:,}", justify="right", no_wrap=True)
    for name in sorted(stats.queues):
        qs = stats.queues[name]
        table.add_row(Text(name, style="bold"), *(f"{n:,}" for n in _figures(qs)))
        if tenants:
            for tenant in sorted(qs.tenants):
                figures = _figures(qs.tenants[tenant])
                table.add_row(
                    Text(f" └ {tenant}", style="dim"),
                    *(Text(f"{n:,}", style="dim") for n in figures),
                )
    return table
