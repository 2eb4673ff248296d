"""``pmsq migrate persistqueue:///DIR DST --queue Q``: persist-queue apps move to pmsq."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import pmsq
from tests.cli.conftest import Run

persistqueue = pytest.importorskip("persistqueue")


def _rows(folder: Path, table: str = "ack_queue_default") -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{folder / 'data.db'}?mode=ro", uri=True)
    try:
        return list(conn.execute(f"SELECT _id, data, timestamp, status FROM {table} ORDER BY _id"))
    finally:
        conn.close()


@pytest.fixture
def pq_dir(tmp_path: Path) -> Path:
    """Ten items: one acked, two taken and never acked, one ack_failed, six waiting."""
    folder = tmp_path / "pq"
    q = persistqueue.SQLiteAckQueue(str(folder))
    for i in range(9):
        q.put({"booking": i, "tags": ["a", "b"]})
    q.put(b"\x00\x01raw")
    acked = q.get()
    q.ack(acked)  # booking 0: done, left behind
    q.get()  # booking 1: unacked
    failed = q.get()
    q.ack_failed(failed)  # booking 2: a dead letter
    q.get()  # booking 3: unacked
    q.close()
    return folder


def _pending_payloads(dst: Path, queue: str) -> list[tuple[Any, dict[str, Any]]]:
    out = []
    with pmsq.connect(str(dst)) as b:
        q = b.queue(queue)
        while batch := q.get_many(100, timeout=0):
            for d in batch:
                out.append((d.message.payload, d.message.headers))
                d.ack()
    return out


def test_pending_and_unacked_items_migrate_in_order(cli: Run, pq_dir: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    before = _rows(pq_dir)
    code, out, err = cli("migrate", f"persistqueue:///{pq_dir}", str(dst), "--queue", "legacy")
    assert (code, err) == (0, ""), err
    assert "9 message(s) copied" in out  # 8 pending, 1 dead
    assert "verified" in out
    assert _rows(pq_dir) == before  # nothing acked, resumed or rewritten in the source
    with pmsq.connect(str(dst)) as b:
        dead = b.dead_letters("legacy").list()
        assert [d.message.payload for d in dead] == [{"booking": 2, "tags": ["a", "b"]}]
        assert dead[0].reason == "marked ack_failed in persist-queue"
    got = _pending_payloads(dst, "legacy")
    assert [p for p, _ in got] == [
        {"booking": i, "tags": ["a", "b"]} for i in (1, 3, 4, 5, 6, 7, 8)
    ] + [b"\x00\x01raw"]
    unacked = [p["booking"] for p, h in got if h.get("persistqueue.unacked")]
    assert unacked == [1, 3]


def test_rerun_copies_nothing_twice(cli: Run, pq_dir: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    url = f"persistqueue:///{pq_dir / 'data.db'}"  # the database file works too
    assert cli("migrate", url, str(dst), "--queue", "legacy")[0] == 0
    code, out, _ = cli("migrate", url, str(dst), "--queue", "legacy")
    assert code == 0
    assert "0 message(s) copied, 9 already there" in out
    assert len(_pending_payloads(dst, "legacy")) == 8


def test_json_serializer_and_named_queue(cli: Run, tmp_path: Path) -> None:
    from persistqueue.serializers import json as pq_json

    folder = tmp_path / "pqj"
    q = persistqueue.SQLiteAckQueue(str(folder), name="mail", serializer=pq_json)
    q.put({"to": "guest@example.com"})
    q.close()
    dst = tmp_path / "dst.db"
    code, _, err = cli(
        "migrate", f"persistqueue:///{folder}?name=mail&serializer=json", str(dst), "--queue", "e"
    )
    assert code == 0, err
    assert _pending_payloads(dst, "e") == [({"to": "guest@example.com"}, {})]


def test_item_json_cannot_hold_is_named(cli: Run, tmp_path: Path) -> None:
    folder = tmp_path / "pq"
    q = persistqueue.SQLiteAckQueue(str(folder))
    q.put({"ok": 1})
    q.put({"when": {1, 2}})  # a set: pickle holds it, JSON cannot
    q.close()
    code, _, err = cli(
        "migrate", f"persistqueue:///{folder}", str(tmp_path / "d.db"), "--queue", "x"
    )
    assert code == 1
    assert "persist-queue item 2 (dict) cannot be stored as JSON" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("url", "extra", "message"),
    [
        ("persistqueue:///{pq}", (), "needs --queue"),
        ("persistqueue:///{tmp}/nowhere", ("--queue", "x"), "no persist-queue database"),
        ("persistqueue:///{pq}?name=other", ("--queue", "x"), "no SQLiteAckQueue named 'other'"),
        ("persistqueue:///{pq}?serializer=yaml", ("--queue", "x"), "serializer must be"),
        ("persistqueue:///{pq}?colour=red", ("--queue", "x"), "unknown option"),
        ("persistqueue:///{pq}", ("--queue", "bad name!"), "queue name"),
    ],
)
def test_bad_persistqueue_sources(
    cli: Run, pq_dir: Path, tmp_path: Path, url: str, extra: tuple[str, ...], message: str
) -> None:
    before = _rows(pq_dir)
    target = url.format(pq=pq_dir, tmp=tmp_path)
    code, _, err = cli("migrate", target, str(tmp_path / "d.db"), *extra)
    assert code == 1
    assert message in err, err
    assert not (tmp_path / "nowhere").exists()  # persist-queue was not allowed to create it
    assert _rows(pq_dir) == before


def test_headers_are_json(pq_dir: Path, tmp_path: Path, cli: Run) -> None:
    dst = tmp_path / "dst.db"
    assert cli("migrate", f"persistqueue:///{pq_dir}", str(dst), "--queue", "legacy")[0] == 0
    with pmsq.connect(str(dst)) as b:
        peeked = b.backend.peek("legacy", 2)
    assert json.loads(peeked[0][0].headers or "{}") == {"persistqueue.unacked": True}
