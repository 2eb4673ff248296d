"""``pmsq stats --prometheus``: valid text exposition format, from the same snapshot type."""

from __future__ import annotations

import re

from pmsq.alerts import evaluate
from pmsq.monitor.prometheus import to_prometheus
from pmsq.stats import QueueStats, Stats

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(?P<labels>\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(?:,|(?=\})))*\})?'
    r" (?P<value>[-+0-9.eE]+|NaN|[+-]Inf)$"
)


def parse(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """Check the format line by line; return TYPE per family and value per series."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"TYPE of {name} given twice"
            types[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a valid sample line: {line!r}"
        family = m["name"]
        assert family in types, f"{family} sampled before its TYPE line"
        series = family + (m["labels"] or "")
        assert series not in samples, f"duplicate series {series}"
        samples[series] = float(m["value"])
    return types, samples


def snap() -> Stats:
    return Stats(
        queues={
            "email": QueueStats(
                "email",
                ready=3,
                dead=2,
                oldest_age=12.5,
                processed=40,
                failed=5,
                p50_ms=25.0,
                p95_ms=180.0,
                tenants={
                    "acme": QueueStats("email", ready=2, dead=2, processed=30),
                    "blue": QueueStats("email", ready=1, processed=10),
                },
            ),
            'we"ird\\q': QueueStats('we"ird\\q', ready=1),
        }
    )


def test_output_is_valid_exposition_format_with_types() -> None:
    types, samples = parse(to_prometheus(snap()))
    assert types["pmsq_queue_ready"] == "gauge"
    assert types["pmsq_queue_processed_total"] == "counter"
    assert types["pmsq_queue_dead_lettered_total"] == "counter"
    assert samples['pmsq_queue_ready{queue="email"}'] == 3
    assert samples['pmsq_queue_dead{queue="email"}'] == 2
    assert samples['pmsq_queue_oldest_age_seconds{queue="email"}'] == 12.5
    assert samples['pmsq_queue_processed_total{queue="email"}'] == 40
    assert samples['pmsq_queue_handler_seconds{queue="email",quantile="0.95"}'] == 0.18


def test_tenant_series_carry_a_tenant_label_next_to_the_queue_totals() -> None:
    _, samples = parse(to_prometheus(snap()))
    assert samples['pmsq_queue_ready{queue="email",tenant="acme"}'] == 2
    assert samples['pmsq_queue_ready{queue="email",tenant="blue"}'] == 1
    _, no_tenants = parse(to_prometheus(snap(), tenants=False))
    assert not any("tenant=" in series for series in no_tenants)


def test_missing_figures_are_absent_not_zero() -> None:
    _, samples = parse(to_prometheus(snap()))
    assert not any(s.startswith("pmsq_queue_oldest_age_seconds") and "weird" in s for s in samples)
    assert 'pmsq_queue_handler_seconds{queue="email",tenant="acme",quantile="0.5"}' not in samples


def test_label_values_are_escaped() -> None:
    _, samples = parse(to_prometheus(snap()))
    assert samples['pmsq_queue_ready{queue="we\\"ird\\\\q"}'] == 1


def test_alerts_become_gauges() -> None:
    s = snap()
    _, samples = parse(to_prometheus(s, evaluate(s, {})))
    assert samples['pmsq_alert{queue="email",metric="dead",level="critical"}'] == 1
