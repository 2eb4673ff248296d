"""The journal's layout: one row per delivery outcome, read back as the events
``pmsq trace`` always showed, and old stores' three-row histories unchanged."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import attrs

import pmsq
from pmsq.backends.sqlite.schema import SCHEMA_VERSION
from pmsq.leases import get_many

DATA = Path(__file__).resolve().parent / "data"


def rows(db: Path, mid: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return list(
            conn.execute(
                "SELECT event, attempt, worker, claimed_at, claimed_process FROM pmsq_journal "
                "WHERE message_id = ? ORDER BY seq",
                (mid,),
            )
        )
    finally:
        conn.close()


def story(broker: pmsq.Broker, mid: str) -> list[tuple[str, int | None, str | None, float]]:
    return [(e.event, e.attempt, e.worker, e.at) for e in broker.backend.history(message_id=mid)]


def test_an_acked_message_is_two_rows_read_as_three_events(
    broker: pmsq.Broker, clock: pmsq.ManualClock, db_path: Path
) -> None:
    q = broker.declare_queue("calendar")
    mid = q.put({"booking": 1})
    t0 = clock.time()
    clock.advance(1)
    [d] = get_many(broker.runtime, "calendar", 1, 0, consumer="w-1")
    clock.advance(2)
    d.ack()
    assert rows(db_path, mid) == [
        ("put", None, None, None, None),
        # The claimer's process is the row's own: not repeated.
        ("acked", 1, "w-1", t0 + 1, None),
    ]
    assert story(broker, mid) == [
        ("put", None, None, t0),
        ("delivered", 1, "w-1", t0 + 1),
        ("acked", 1, None, t0 + 3),
    ]
    events = broker.backend.history(message_id=mid)
    assert events[1].process == events[2].process == broker.backend._journal.process  # type: ignore[attr-defined]
    assert events[1].detail == {}
    assert "duration_ms" in events[2].detail


def test_a_delivery_in_flight_is_read_from_its_message_row(
    broker: pmsq.Broker, clock: pmsq.ManualClock, db_path: Path
) -> None:
    q = broker.declare_queue("calendar")
    mid = q.put("x", key="room:1")
    [d] = get_many(broker.runtime, "calendar", 1, 0, consumer="w-1")
    assert [r[0] for r in rows(db_path, mid)] == ["put"]
    assert [(e.event, e.worker) for e in broker.backend.history(key="room:1")] == [
        ("put", None),
        ("delivered", "w-1"),
    ]
    d.release()
    # Released: the delivery is told once, by the release's row.
    assert [e.event for e in broker.backend.history(message_id=mid)] == [
        "put",
        "delivered",
        "released",
    ]


def test_a_lapsed_lease_taken_back_and_acked_tells_its_delivery_once(
    broker: pmsq.Broker, clock: pmsq.ManualClock
) -> None:
    q = broker.declare_queue("calendar", lease=10.0)
    mid = q.put("x", tenant="acme")
    [d] = get_many(broker.runtime, "calendar", 1, 0, consumer="w-1")
    clock.advance(11)
    # Another tenant's claim ends the lease without taking the message.
    assert get_many(broker.runtime, "calendar", 1, 0, tenant="other") == []
    d.extend(10)  # nobody claimed it since: the holder takes it back
    d.ack()
    assert [(e.event, e.attempt, e.worker) for e in broker.backend.history(message_id=mid)] == [
        ("put", None, None),
        ("delivered", 1, "w-1"),
        ("lease_expired", 1, None),
        ("acked", 1, None),
    ]


def _v7_store(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    db = tmp_path / "v7.db"
    conn = sqlite3.connect(db)
    conn.executescript((DATA / "v7_store.sql").read_text())
    conn.close()
    return db, json.loads((DATA / "v7_history.json").read_text())


def test_a_schema_7_store_reads_the_same_after_the_upgrade(tmp_path: Path) -> None:
    db, old = _v7_store(tmp_path)
    clock = pmsq.ManualClock(old["clock"])
    ids = old["ids"]
    with pmsq.connect(str(db), clock=clock, durability="normal") as b:
        assert b.backend.get_meta("schema_version") == str(SCHEMA_VERSION) == "8"
        read = {
            name: [attrs.asdict(e) for e in b.backend.history(message_id=mid)]
            for name, mid in ids.items()
        }
        read["queue"] = [attrs.asdict(e) for e in b.backend.history(queue="mail")]
        read["key"] = [attrs.asdict(e) for e in b.backend.history(key="guest:2")]
        assert read == old["history"]

        # Leased before the upgrade (its delivered row written then): its lease
        # runs out, and the expiry must not tell that delivery a second time.
        clock.advance(31)
        got = {d.message.id: d for d in get_many(b.runtime, "mail", 3, 0, consumer="w-new")}
        assert set(got) == {ids["leased"], ids["waiting"]}
        for d in got.values():
            d.ack()
        after = [
            (e.event, e.attempt, e.worker) for e in b.backend.history(message_id=ids["leased"])
        ]
    assert after == [
        ("put", None, None),
        ("delivered", 1, "w-old"),
        ("lease_expired", 1, None),
        ("delivered", 2, "w-new"),
        ("acked", 2, None),
    ]


def test_limit_counts_events_not_rows(broker: pmsq.Broker, clock: pmsq.ManualClock) -> None:
    q = broker.declare_queue("calendar")
    mid = q.put("x")
    with q.get(timeout=0) as d:
        d.retry(delay=0)
    with q.get(timeout=0):
        pass
    every = [e.event for e in broker.backend.history(message_id=mid)]
    assert every == ["put", "delivered", "retried", "delivered", "acked"]
    for limit in range(len(every) + 2):
        got = [e.event for e in broker.backend.history(message_id=mid, limit=limit)]
        assert got == (every[-limit:] if limit else [])
