"""The demo's verification as a rich table, with a one-line verdict."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pmsq.demo.model import Check, History

__all__ = ["render_report"]


def render_report(checks: Sequence[Check], history: History) -> RenderableType:
    """The verification table followed by the verdict and any problems found."""
    table = Table(title="verification", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("check", no_wrap=True)
    table.add_column("queue", no_wrap=True)
    table.add_column("figures")
    table.add_column("", no_wrap=True)
    for c in checks:
        table.add_row(
            c.name,
            c.queue,
            c.detail,
            Text("✓ ok", style="green") if c.ok else Text("✗ FAIL", style="bold red"),
        )
    failed = [c for c in checks if not c.ok]
    dead = sum(len(v) for q, v in history.dead.items() if q == "email")
    parts: list[RenderableType] = [table]
    if failed:
        lines = Text(f"✗ {len(failed)} check(s) failed", style="bold red")
        for c in failed:
            for p in c.problems:
                lines.append(f"\n  {c.queue}: {p}", style="red")
        parts.append(lines)
    else:
        parts.append(
            Text(
                f"✓ all checks passed: {len(history.published):,} events, "
                f"{len(history.handled):,} handler runs, {dead} dead email(s) sent by SMS",
                style="bold green",
            )
        )
    return Group(*parts)
