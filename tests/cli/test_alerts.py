"""Alert rules: validation, pure evaluation, storage shared between processes, callbacks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from backends._bare import BareSQLite

import pmsq
from pmsq.alerts import (
    DEFAULT_RULE,
    Alert,
    AlertRule,
    evaluate,
    load_rules,
    meta_key,
    save_rule,
)
from pmsq.stats import QueueStats, Stats


def stats(**queues: QueueStats) -> Stats:
    return Stats(queues=dict(queues))


@pytest.mark.parametrize(
    "options",
    [
        {"max_depth": -1},
        {"max_depth": 1.5},
        {"max_depth": True},
        {"max_age": float("nan")},
        {"max_age": "60"},
        {"max_failure_rate": 1.5},
        {"dead_letters": -2},
    ],
)
def test_invalid_thresholds_are_configuration_errors(options: dict[str, object]) -> None:
    with pytest.raises(pmsq.ConfigurationError):
        AlertRule("email", **options)  # type: ignore[arg-type]


def test_defaults_flag_any_dead_letter_and_long_waits() -> None:
    alerts = evaluate(
        stats(
            email=QueueStats("email", dead=1),
            calendar=QueueStats("calendar", ready=1, oldest_age=301.0),
            cleaning=QueueStats("cleaning", ready=1, oldest_age=299.0),
        ),
        {},
    )
    assert [(a.queue, a.metric, a.level) for a in alerts] == [
        ("email", "dead", "critical"),
        ("calendar", "oldest_age", "warning"),
    ]
    assert DEFAULT_RULE.dead_letters == 0


def test_a_rule_replaces_only_the_thresholds_it_sets() -> None:
    snap = stats(email=QueueStats("email", ready=20, dead=2, oldest_age=400.0))
    rules = {"email": AlertRule("email", max_depth=10, dead_letters=5)}
    metrics = {a.metric for a in evaluate(snap, rules)}
    # depth is the rule's own, dead (2 <= 5) is relaxed, age keeps the default.
    assert metrics == {"depth", "oldest_age"}


def test_failure_rate_uses_the_last_minute_and_ignores_idle_queues() -> None:
    rules = {"email": AlertRule("email", max_failure_rate=0.2)}
    busy = stats(email=QueueStats("email", processed_per_minute=70, failed_per_minute=30))
    idle = stats(email=QueueStats("email"))
    [alert] = evaluate(busy, rules)
    assert alert.metric == "failure_rate"
    assert alert.value == pytest.approx(0.3)
    assert alert.message == "email: 30% of deliveries failed (alert above 20%)"
    assert evaluate(idle, rules) == []


def test_tenant_shares_are_checked_only_when_asked() -> None:
    snap = stats(
        email=QueueStats(
            "email",
            dead=1,
            tenants={"acme": QueueStats("email", dead=1), "blue": QueueStats("email")},
        )
    )
    assert [a.tenant for a in evaluate(snap, {})] == [None]
    both = evaluate(snap, {}, tenants=True)
    assert [a.tenant for a in both] == [None, "acme"]
    assert both[1].message == "email [acme]: 1 dead letter (alert above 0)"


def test_rules_are_stored_and_seen_by_another_connection(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with pmsq.connect(path, durability="memory") as app:
        rule = app.alert("email", max_age=60, max_failure_rate=0.25)
        assert rule == AlertRule("email", max_age=60, max_failure_rate=0.25)
        with pmsq.connect(path, durability="memory") as monitor:
            assert load_rules(monitor.backend, ["email", "calendar"]) == {"email": rule}
        app.alert("email")  # no threshold: the stored rule goes away
        with pmsq.connect(path, durability="memory") as monitor:
            assert load_rules(monitor.backend, ["email"]) == {}
            assert monitor.backend.get_meta(meta_key("email")) is None


def test_meta_round_trip_and_reserved_key(broker: pmsq.Broker) -> None:
    broker.backend.set_meta("app:x", "1")
    assert broker.backend.get_meta("app:x") == "1"
    broker.backend.set_meta("app:x", None)
    assert broker.backend.get_meta("app:x") is None
    assert broker.backend.get_meta("schema_version") is not None
    with pytest.raises(pmsq.ConfigurationError, match="reserved"):
        broker.backend.set_meta("schema_version", "99")


def test_backends_without_meta_say_so_and_rules_load_empty(tmp_path: Path) -> None:
    bare = BareSQLite(str(tmp_path / "bare.db"), durability="normal")  # no Settings family
    rule = AlertRule("email", max_depth=3)
    with pytest.raises(pmsq.ConfigurationError, match="Bare backend does not support settings"):
        save_rule(bare, rule)
    assert load_rules(bare, ["email"]) == {}
    bare.close()


def test_an_unreadable_stored_rule_is_skipped_with_a_log_line(
    broker: pmsq.Broker, caplog: pytest.LogCaptureFixture
) -> None:
    broker.backend.set_meta(meta_key("email"), "not json")
    broker.backend.set_meta(meta_key("calendar"), '{"max_depth": 3, "from_the_future": 1}')
    with caplog.at_level(logging.WARNING, logger="pmsq.alerts"):
        rules = load_rules(broker.backend, ["email", "calendar"])
    assert rules == {"calendar": AlertRule("calendar", max_depth=3)}
    assert "email" in caplog.text


def _dead_letter(broker: pmsq.Broker, queue: str) -> None:
    broker.queue(queue).put({"n": 1})
    with broker.queue(queue).get(timeout=1) as d:
        d.dead_letter("test")


def test_callbacks_fire_once_when_an_alert_starts_and_again_after_it_cleared(
    broker: pmsq.Broker,
) -> None:
    seen: list[Alert] = []
    broker.alert("email", dead_letters=0, callback=seen.append)
    # No callback: evaluated, never called back. No worker runs in this test,
    # so the "no consumer" alert is turned off to watch depth alone.
    broker.alert("calendar", max_depth=0, min_consumers=0)
    assert broker.check_alerts() == []
    broker.queue("calendar").put({"n": 1})
    assert [a.metric for a in broker.check_alerts()] == ["depth"]
    _dead_letter(broker, "email")
    alerts = broker.check_alerts()
    assert [(a.queue, a.metric) for a in alerts] == [("email", "dead"), ("calendar", "depth")]
    assert [(a.queue, a.metric) for a in seen] == [("email", "dead")]
    broker.check_alerts()
    assert len(seen) == 1  # still raised: not called again
    broker.dead_letters("email").purge()
    assert [a.queue for a in broker.check_alerts()] == ["calendar"]
    _dead_letter(broker, "email")
    broker.check_alerts()
    assert len(seen) == 2


def test_a_failing_callback_is_logged_not_raised(
    broker: pmsq.Broker, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(alert: Alert) -> None:
        raise RuntimeError("pager down")

    broker.alert("email", dead_letters=0, callback=boom)
    _dead_letter(broker, "email")
    with caplog.at_level(logging.ERROR, logger="pmsq.alerts"):
        assert len(broker.check_alerts()) == 1
    assert "pager down" in caplog.text


def test_a_callback_set_while_an_alert_is_raised_hears_about_it(broker: pmsq.Broker) -> None:
    _dead_letter(broker, "email")
    assert len(broker.check_alerts()) == 1  # raised, nobody listening yet
    seen: list[Alert] = []
    broker.alert("email", dead_letters=0, callback=seen.append)
    broker.check_alerts()
    broker.check_alerts()
    assert [a.message for a in seen] == ["email: 1 dead letter (alert above 0)"]
