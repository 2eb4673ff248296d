"""``pmsq queues URL``: declared queues, their options, bindings and alert rules."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pmsq.cli._common import add_url, open_store, routes_of
from pmsq.config import QueueConfig

EXAMPLES = """\
examples:
  pmsq queues pms.db
  pmsq queues sqlite:///pms.db --json
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``queues`` subcommand."""
    p = sub.add_parser(
        "queues",
        help="declared queues, their options, topic bindings and alert rules",
        description=(
            "List the queues declared in a store with their stored options (as every process "
            "sees them), the topic patterns bound to each, and their alert rules."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _backoff(config: QueueConfig) -> str:
    b = config.backoff
    text = f"{b.base:g}s, factor {b.factor:g}, up to {b.cap:g}s"
    return text + (", jitter" if b.jitter else "")


def _rate(config: QueueConfig) -> str:
    r = config.rate_limit
    if r is None:
        return "-"
    return f"{r.limit}/{r.per:g}s per {r.scope}"


def run(args: argparse.Namespace) -> int:
    """Print the queues."""
    from pmsq.alerts import load_rules

    with open_store(args.url, routes_of(args)) as broker:
        configs = broker.queues()
        bindings = broker.bindings()
        rules = load_rules(broker.backend, [c.name for c in configs])
    patterns: dict[str, list[str]] = {}
    for pattern, queue in bindings:
        patterns.setdefault(queue, []).append(pattern)
    if args.json:
        data: dict[str, Any] = {
            c.name: {
                **c.to_dict(),
                "bindings": patterns.get(c.name, []),
                "alert": json.loads(rules[c.name].to_json()) if c.name in rules else None,
            }
            for c in configs
        }
        print(json.dumps({"queues": data}, indent=2, sort_keys=True))
        return 0
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    if not configs:
        console.print("no queues declared in this store yet")
        return 0
    for c in configs:
        limits = [
            f"max_depth {c.max_depth}" if c.max_depth else "",
            f"tenant_quota {c.tenant_quota}" if c.tenant_quota else "",
            "" if c.rate_limit is None else f"rate {_rate(c)}",
        ]
        lines = [
            f"max_attempts {c.max_attempts} · lease {c.lease:g}s · backoff {_backoff(c)}",
            f"on_key_failure {c.on_key_failure} · dedup "
            + ("forever" if c.dedup_window is None else f"{c.dedup_window:g}s")
            + (f" · fallback → {c.fallback}" if c.fallback else ""),
        ]
        if any(limits):
            lines.append(" · ".join(x for x in limits if x))
        lines.append("bound to: " + (", ".join(patterns.get(c.name, [])) or "-"))
        if c.name in rules:
            lines.append(f"alert: {rules[c.name].to_json()}")
        console.print(Text(c.name, style="bold"))
        for line in lines:
            console.print(f"  {line}")
    return 0
