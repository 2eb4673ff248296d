"""Message control's arguments: bad input is refused with a clear error naming it; values
read back are aware UTC datetimes; a queue's circuit is stored for every process."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pytest

import pmsq
from pmsq.clock import ManualClock


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"failures": 0}, "Circuit.failures"),
        ({"failures": 2.5}, "Circuit.failures"),
        ({"failures": True}, "Circuit.failures"),
        ({"within": 0}, "Circuit.within"),
        ({"within": math.inf}, "Circuit.within"),
        ({"open_for": -1.0}, "Circuit.open_for"),
        ({"open_for": "30"}, "Circuit.open_for"),
        ({"scope": "host"}, "Circuit.scope"),
    ],
)
def test_a_bad_circuit_is_refused(options: dict[str, Any], words: str) -> None:
    with pytest.raises(pmsq.ConfigurationError, match=words):
        pmsq.Circuit(**options)


@pytest.mark.parametrize("delay", [-1.0, math.nan, math.inf, "5", True, None])
def test_a_bad_snooze_delay_is_refused(delay: Any) -> None:
    with pytest.raises(pmsq.ConfigurationError, match="Snooze delay"):
        pmsq.Snooze(delay)


def test_snooze_is_a_handler_signal_not_an_error() -> None:
    assert isinstance(pmsq.Snooze(1), pmsq.HandlerSignal)
    assert not isinstance(pmsq.Snooze(1), pmsq.PmsqError)


def test_a_declared_circuit_is_stored_for_every_process(db_path: Path) -> None:
    circuit = pmsq.Circuit(failures=3, within=10.0, open_for=5.0, scope="tenant")
    with pmsq.connect(str(db_path)) as b:
        b.declare_queue("channel-sync", circuit=circuit)
    with pmsq.connect(str(db_path)) as other:
        assert other.queue_config("channel-sync").circuit == circuit
    with pytest.raises(pmsq.ConfigurationError, match=r"circuit must be a pmsq\.Circuit"):
        pmsq.QueueConfig(name="q", circuit={"failures": 3})  # type: ignore[arg-type]


def test_bad_put_expiry_is_refused(broker: pmsq.Broker, clock: ManualClock) -> None:
    q = broker.queue("q")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"expires": 0}, "expires must be"),
        ({"expires": math.nan}, "expires must be"),
        ({"expires": "1h"}, "expires must be"),
        ({"expires_at": dt.datetime(2030, 1, 1)}, "expires_at must be timezone-aware"),
        ({"expires_at": math.inf}, "expires_at must be"),
        ({"expires": 5.0, "expires_at": clock.time() + 5}, "not both"),
    ]
    for options, words in cases:
        with pytest.raises(pmsq.ConfigurationError, match=words):
            q.put("x", **options)
        with pytest.raises(pmsq.ConfigurationError, match=words):
            q.put_many([pmsq.NewMessage("x", **options)])
    assert broker.stats("q").depth == 0


def test_bad_cancel_and_reschedule_arguments_are_refused(broker: pmsq.Broker) -> None:
    q = broker.queue("q")
    mid = q.put("x")
    with pytest.raises(pmsq.ConfigurationError, match="message id"):
        q.cancel()  # type: ignore[call-overload]
    with pytest.raises(pmsq.ConfigurationError, match="message id"):
        q.cancel(mid, key="k")  # type: ignore[call-overload]
    assert q.cancel(mid, tenant="acme") is False, "ids with tenant= are that tenant's only"
    with pytest.raises(pmsq.ConfigurationError, match="invalid key"):
        q.cancel(key="")
    with pytest.raises(pmsq.ConfigurationError, match="message ids"):
        q.cancel([mid, 7])  # type: ignore[list-item]
    with pytest.raises(pmsq.ConfigurationError, match=r"delay= .* or not_before="):
        q.reschedule(mid)
    with pytest.raises(pmsq.ConfigurationError, match="delay must be"):
        q.reschedule(mid, delay=-1.0)
    with pytest.raises(pmsq.ConfigurationError, match="not_before must be timezone-aware"):
        q.reschedule(mid, not_before=dt.datetime(2030, 1, 1))
    assert q.cancel([]) == 0
    assert broker.stats("q").depth == 1


def test_bad_pause_arguments_are_refused(broker: pmsq.Broker, clock: ManualClock) -> None:
    with pytest.raises(pmsq.ConfigurationError, match="invalid queue name"):
        broker.pause("no spaces")
    with pytest.raises(pmsq.ConfigurationError, match="invalid tenant"):
        broker.pause("q", tenant="a b")
    with pytest.raises(pmsq.ConfigurationError, match="until must be in the future"):
        broker.pause("q", until=clock.time())
    with pytest.raises(pmsq.ConfigurationError, match="until must be timezone-aware"):
        broker.pause("q", until=dt.datetime(2030, 1, 1))
    with pytest.raises(pmsq.ConfigurationError, match="reason must be"):
        broker.pause("q", reason="x" * 501)
    with pytest.raises(pmsq.ConfigurationError, match="scoped to tenant 'acme'"):
        broker.tenant("acme").resume("q", tenant="zen")
    assert broker.pauses() == []


def test_pauses_read_back_as_aware_utc_datetimes(broker: pmsq.Broker, clock: ManualClock) -> None:
    until = dt.datetime.fromtimestamp(clock.time() + 90, dt.timezone(dt.timedelta(hours=2)))
    broker.pause("q", tenant="acme", key="property:1", until=until, reason="migration")
    (p,) = broker.pauses()
    assert p == pmsq.Pause(
        queue="q",
        tenant="acme",
        key="property:1",
        until=until.astimezone(dt.UTC),
        reason="migration",
        since=dt.datetime.fromtimestamp(clock.time(), dt.UTC),
        circuit=False,
    )
    assert p.until is not None
    assert p.until.tzinfo == dt.UTC
    # Pausing the scope again replaces its pause.
    broker.pause("q", tenant="acme", key="property:1", reason="longer migration")
    assert [(x.reason, x.until) for x in broker.pauses()] == [("longer migration", None)]


def test_pauses_and_open_circuits_raise_alerts(broker: pmsq.Broker, clock: ManualClock) -> None:
    broker.declare_queue("ota", circuit=pmsq.Circuit(failures=1, within=60.0, open_for=30.0))
    broker.pause("channel-sync", reason="OTA maintenance")
    broker.pause("channel-sync", tenant="acme", key="property:1")
    fired: list[pmsq.Alert] = []
    broker.alert("channel-sync", max_depth=1000, callback=fired.append)
    q = broker.queue("ota")
    q.put("x")
    with pytest.raises(RuntimeError), q.get(timeout=0):
        raise RuntimeError("HTTP 503")
    clock.advance(42.0)
    alerts = {(a.queue, a.tenant, a.metric): a for a in broker.check_alerts()}
    paused = alerts[("channel-sync", None, "paused")]
    assert (paused.level, paused.value) == ("warning", 42.0)
    assert paused.message == "channel-sync: paused for 42s"
    keyed = alerts[("channel-sync", "acme", "paused:property:1")]
    assert keyed.message == "channel-sync [acme]: key 'property:1' paused for 42s"
    circuit = alerts[("ota", None, "circuit")]
    assert circuit.level == "critical"
    assert [a.metric for a in fired] == ["paused", "paused:property:1"]
    assert broker.resume("channel-sync") is True
    assert ("channel-sync", None, "paused") not in {
        (a.queue, a.tenant, a.metric) for a in broker.check_alerts()
    }
