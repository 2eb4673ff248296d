"""``pmsq migrate`` with PostgreSQL: SQLite → PostgreSQL → SQLite keeps everything, an
interrupted migration resumes without duplicates, and a key's line order survives export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pmsq
from pmsq.backends.base import Backend
from pmsq.cli import main
from pmsq.migrate import BackendSource, copy


def fill_source(broker: pmsq.Broker) -> None:
    """One of everything migrate carries: options, bindings, keys of two tenants, priorities,
    delays, headers, dedup ids, a retried message, a key-blocking dead letter, a fallback copy."""
    broker.declare_queue(
        "calendar",
        max_attempts=3,
        backoff=pmsq.Backoff(base=2.0, factor=3.0, cap=60.0, jitter=False),
        dedup_window=None,
    )
    broker.declare_queue("email", max_attempts=1, fallback="sms", on_key_failure="block")
    broker.declare_queue("sms", rate_limit=pmsq.RateLimit(5, per=1.0, scope="tenant"))
    broker.subscribe("booking.*", queue="calendar")
    broker.subscribe("booking.#", queue="email")
    cal = broker.queue("calendar")
    for i in range(30):
        cal.put(
            {"n": i, "text": "héllo"},
            key=f"property:{i % 4}",
            tenant=("acme", "blue", None)[i % 3],
            priority=i % 2,
            dedup_id=f"cal-{i}",
            headers={"trace": str(i)},
        )
    cal.put(b"\x00raw bytes", key="property:9")
    cal.put({"later": True}, key="property:1", tenant="acme", delay=3600)
    cal.put({"retried": True}, key="retry-key")
    for d in cal.get_many(50, timeout=1.0):
        if d.message.key == "retry-key":
            d.retry(delay=3600)
        else:
            d.release()
    broker.publish("booking.created", {"booking": 7}, key="property:7", tenant="acme")
    broker.queue("email").put({"mail": 2}, key="property:7", tenant="acme")
    with broker.queue("email").get(timeout=1.0) as d:
        d.dead_letter("mailbox full")


def snapshot(backend: Backend) -> dict[str, Any]:
    """Everything migrate copies, each queue's messages in export (delivery) order."""
    messages: dict[str, list[Any]] = {}
    dedup: dict[str, list[Any]] = {}
    for cfg in backend.list_queues():
        rows: list[Any] = []
        cursor: str | None = None
        while True:
            page, cursor = backend.export_messages(cfg.name, after=cursor, limit=7)
            rows.extend(page)
            if cursor is None:
                break
        messages[cfg.name] = rows
        dedup[cfg.name] = sorted(
            backend.export_dedup(cfg.name, now=0.0), key=lambda r: (r.tenant or "", r.dedup_id)
        )
    return {
        "queues": backend.list_queues(),
        "bindings": sorted(backend.bindings()),
        "messages": messages,
        "dedup": dedup,
    }


def _snap(url: str) -> dict[str, Any]:
    with pmsq.connect(url) as b:
        return snapshot(b.backend)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _lines(url: str, queue: str) -> dict[tuple[str | None, str | None], list[str]]:
    """Drain ``queue``; each (tenant, key)'s message ids in delivery order."""
    seen: dict[tuple[str | None, str | None], list[str]] = defaultdict(list)
    with pmsq.connect(url) as b:
        q = b.queue(queue)
        while batch := q.get_many(100, timeout=0):
            for d in batch:
                seen[(d.message.tenant, d.message.key)].append(d.message.id)
                d.ack()
    return dict(seen)


def test_sqlite_to_postgresql_to_sqlite_round_trip(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, back = tmp_path / "src.db", tmp_path / "back.db"
    with pmsq.connect(str(src), durability="normal") as b:
        fill_source(b)
    code, out, err = _cli(capsys, "migrate", str(src), pg_url, "--batch", "4")
    assert (code, err) == (0, ""), err
    assert "37 message(s) copied" in out
    assert "verified" in out
    code, out, err = _cli(capsys, "migrate", pg_url, f"sqlite:///{back}", "--batch", "5")
    assert (code, err) == (0, ""), err
    assert "verified" in out
    original = _snap(str(src))
    assert _snap(pg_url) == original
    assert _snap(str(back)) == original
    with pmsq.connect(pg_url) as b:
        assert b.backend.check() == []


def test_round_trip_delivers_in_source_order(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, back = tmp_path / "src.db", tmp_path / "back.db"
    with pmsq.connect(str(src), durability="normal") as b:
        fill_source(b)
    assert _cli(capsys, "migrate", str(src), pg_url)[0] == 0
    assert _cli(capsys, "migrate", pg_url, str(back))[0] == 0
    expected = _lines(str(src), "calendar")
    assert _lines(pg_url, "calendar") == expected
    assert _lines(str(back), "calendar") == expected


def test_interrupted_migration_into_postgresql_resumes_without_duplicates(
    pg_url: str, tmp_path: Path
) -> None:
    src = tmp_path / "src.db"
    with pmsq.connect(str(src), durability="normal") as b:
        fill_source(b)
    pages: list[int] = []

    def stop_after_two(queue: str, n: int) -> None:
        pages.append(n)
        if len(pages) == 2:
            raise KeyboardInterrupt

    with pmsq.connect(str(src)) as s, pmsq.connect(pg_url) as d:
        with pytest.raises(KeyboardInterrupt):
            copy(BackendSource(s.backend, "src"), d.backend, batch=5, on_page=stop_after_two)
        result = copy(BackendSource(s.backend, "src"), d.backend, batch=5)
        assert d.backend.check() == []
    assert (result.copied, result.skipped) == (37 - 10, 10)
    assert _snap(pg_url) == _snap(str(src))


def test_export_follows_a_keys_line_not_its_sequence(
    pg_url: str, schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pmsq.connect(pg_url) as b:
        ids = [b.queue("q").put({"n": i}, key="k") for i in range(3)]
        b.queue("q").put({"loose": True})
    # Two producers of one key whose sequence values committed out of order:
    # the line (kpos) says the second put comes first.
    conninfo = pg_url.split("?", 1)[0]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            f'UPDATE "{schema}".messages SET kpos = CASE id WHEN %s THEN 2 ELSE 1 END, '
            "head = (id = %s) WHERE id IN (%s, %s)",
            (ids[0], ids[1], ids[0], ids[1]),
        )
    with pmsq.connect(pg_url) as b:
        assert b.backend.check() == []
        page, _ = b.backend.export_messages("q", limit=10)
        assert [m.envelope.id for m in page if m.envelope.key] == [ids[1], ids[0], ids[2]]
        # Page by page too: the cursor carries the remapped positions.
        assert snapshot(b.backend)["messages"]["q"] == page
        one_by_one, cursor = b.backend.export_messages("q", limit=1)
        while cursor is not None:
            more, cursor = b.backend.export_messages("q", after=cursor, limit=1)
            one_by_one.extend(more)
        assert one_by_one == page
    dst = tmp_path / "dst.db"
    assert _cli(capsys, "migrate", pg_url, str(dst))[0] == 0
    assert _lines(str(dst), "q")[(None, "k")] == [ids[1], ids[0], ids[2]]


def test_sigkilled_migration_into_postgresql_rerun_has_no_duplicates(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    src = tmp_path / "big.db"
    with pmsq.connect(str(src), durability="memory") as b:
        q = b.queue("bulk")
        for chunk in range(5):
            q.put_many(
                [
                    pmsq.NewMessage({"n": chunk * 1000 + i}, key=f"k{i % 50}", tenant="t")
                    for i in range(1000)
                ]
            )
    conninfo = pg_url.split("?", 1)[0]

    def count() -> int:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            found = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".messages',)).fetchone()
            if not found or found[0] is None:
                return 0
            row = conn.execute(f'SELECT count(*) FROM "{schema}".messages').fetchone()
            return int(row[0]) if row else 0

    cmd = [sys.executable, "-m", "pmsq", "migrate", str(src), pg_url, "--batch", "10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill it once some pages are in (polling, not timing: any point will do).
        while proc.poll() is None and count() < 100:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout
    assert count() == 5000
    with pmsq.connect(pg_url) as b:
        assert b.backend.check() == []
    assert _snap(pg_url) == _snap(str(src))


def test_schedules_and_pauses_survive_sqlite_to_postgresql_to_sqlite(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, back = tmp_path / "src.db", tmp_path / "back.db"
    clock = pmsq.ManualClock(1_800_000_000.0)
    with pmsq.connect(str(src), durability="normal", clock=clock) as b:
        b.declare_queue("channel-sync")
        b.tenant("acme").schedule("nightly-rates", queue="channel-sync", every=3600.0)
        b.schedule("sweep", queue="channel-sync", cron="30 1 * * *", tz="America/New_York")
        clock.advance(3600.5)
        assert b.run_schedules() == 1
        b.pause("channel-sync", key="property:7", reason="owner dispute")

    def schedules(url: str) -> list[tuple[Any, ...]]:
        with pmsq.connect(url) as b:
            return [
                (s.tenant, s.name, s.cron, s.every, s.tz, s.next_at, s.last_at, s.payload)
                for s in b.schedules()
            ]

    def pauses(url: str) -> list[tuple[Any, ...]]:
        with pmsq.connect(url) as b:
            return [(p.queue, p.tenant, p.key, p.reason) for p in b.pauses()]

    code, out, err = _cli(capsys, "migrate", str(src), pg_url)
    assert (code, err) == (0, ""), err
    assert "2 schedule(s), cursors kept; 1 pause(s)" in out
    code, out, err = _cli(capsys, "migrate", pg_url, f"sqlite:///{back}")
    assert (code, err) == (0, ""), err
    assert schedules(pg_url) == schedules(str(src)) == schedules(str(back))
    assert pauses(pg_url) == pauses(str(src)) == pauses(str(back))
    with pmsq.connect(pg_url, clock=clock) as b:
        assert b.run_schedules() == 0, "the slot fired in SQLite does not fire again"
