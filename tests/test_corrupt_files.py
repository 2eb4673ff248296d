"""Damaged, foreign and future files: refused at connect, clearly, and left untouched.

Also: damage inside a healthy file (a payload's bytes) costs only that message,
and an app's own SQLite file is a fine home for pmsq's tables.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from faults._support import file_digest, integrity, table_rows

import pmsq

# A rejected file must be refused at once, not after waiting for some lock:
# with busy_timeout this long, the test timeout would fire first.
PATIENT = 120.0


def _make_store(path: Path, n: int = 200) -> list[str]:
    with pmsq.connect(str(path), durability="normal") as broker:
        q = broker.declare_queue("orders")
        ids = q.put_many(
            [
                pmsq.NewMessage({"n": i, "pad": "x" * 300}, key=f"property:{i % 7}", tenant="acme")
                for i in range(n)
            ]
        )
    # Closing the last connection checkpoints the WAL away: one self-contained file.
    assert not Path(f"{path}-wal").exists()
    return ids


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pristine") / "store.db"
    _make_store(path)
    return path


def _damaged_header(src: Path, dst: Path) -> None:
    data = bytearray(src.read_bytes())
    data[:100] = random.Random(1).randbytes(100)
    dst.write_bytes(bytes(data))


def _damaged_schema_page(src: Path, dst: Path) -> None:
    data = bytearray(src.read_bytes())
    data[100:4096] = random.Random(2).randbytes(3996)  # page 1's b-tree: sqlite_master
    dst.write_bytes(bytes(data))


def _text(_src: Path, dst: Path) -> None:
    dst.write_text("booking_id,property\n" + "".join(f"{i},4521\n" for i in range(500)))


def _png(_src: Path, dst: Path) -> None:
    dst.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(3).randbytes(5000))


def _truncated(fraction: float, whole_pages: bool = False) -> Callable[[Path, Path], None]:
    def make(src: Path, dst: Path) -> None:
        data = src.read_bytes()
        cut = int(len(data) * fraction)
        if whole_pages:
            # Cut at a page boundary (the half of an odd page count is not one).
            cut -= cut % 4096
        dst.write_bytes(data[:cut])

    return make


def _foreign(_src: Path, dst: Path) -> None:
    conn = sqlite3.connect(dst)
    conn.execute("PRAGMA application_id = 123")
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (99.5)")
    conn.commit()
    conn.close()


def _newer(src: Path, dst: Path) -> None:
    shutil.copy(src, dst)
    conn = sqlite3.connect(dst)
    conn.execute("UPDATE pmsq_meta SET v = '999' WHERE k = 'schema_version'")
    conn.commit()
    conn.close()


def _no_version(src: Path, dst: Path) -> None:
    shutil.copy(src, dst)
    conn = sqlite3.connect(dst)
    conn.execute("DELETE FROM pmsq_meta WHERE k = 'schema_version'")
    conn.commit()
    conn.close()


BAD_FILES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "damaged-header": (_damaged_header, "not a SQLite database"),
    "damaged-schema-page": (_damaged_schema_page, "corrupt"),
    "text-file": (_text, "not a SQLite database"),
    "png": (_png, "not a SQLite database"),
    "truncated-half": (_truncated(0.5, whole_pages=True), "corrupt"),
    "truncated-mid-page": (_truncated(0.99), "truncated"),
    "truncated-to-50-bytes": (_truncated(50 / 4096 / 200), "corrupt|not a SQLite database"),
    "foreign-application-id": (_foreign, "another application"),
    "newer-schema": (_newer, "newer pmsq"),
    "no-schema-version": (_no_version, "no valid schema_version"),
}

# What the message tells the operator to do, per kind of damage.
RECOVERY = ("restore", "backup", "upgrade pmsq", "give pmsq", "another file")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_connect_refuses_a_bad_file(pristine: Path, tmp_path: Path, case: str) -> None:
    make, problem = BAD_FILES[case]
    path = tmp_path / "bad.db"
    make(pristine, path)
    before = file_digest(path)
    for url in (str(path), f"sqlite:///{path}"):
        with pytest.raises(pmsq.StorageError, match=problem) as info:
            pmsq.connect(url, busy_timeout=PATIENT)
        message = str(info.value)
        assert str(path) in message, "the message must name the file"
        assert any(step in message for step in RECOVERY), f"no recovery step in: {message}"
        assert "left untouched" in message
    assert file_digest(path) == before, "a refused file must be left byte-for-byte untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db"], "no -wal/-shm left behind"


def test_empty_file_is_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pmsq.connect(str(path)) as broker:
        q = broker.queue("orders")
        mid = q.put({"n": 1})
        with q.get(timeout=0) as d:
            assert d.message.id == mid
    assert integrity(path) == ["ok"]


def test_healthy_store_still_opens(pristine: Path, tmp_path: Path) -> None:
    """The control for the bad files above: the same store, undamaged, opens and flows."""
    path = tmp_path / "copy.db"
    shutil.copy(pristine, path)
    with pmsq.connect(str(path), busy_timeout=PATIENT) as broker:
        assert broker.stats("orders").ready == 7  # one head per key


def _flip_payload_byte(path: Path, message_id: str) -> None:
    conn = sqlite3.connect(path)
    (payload,) = conn.execute(
        "SELECT payload FROM pmsq_messages WHERE id = ?", (message_id,)
    ).fetchone()
    damaged = bytearray(payload)
    damaged[0] ^= 0x55  # '{' becomes '.': not even JSON any more
    conn.execute("UPDATE pmsq_messages SET payload = ? WHERE id = ?", (bytes(damaged), message_id))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_damaged_payload_is_dead_lettered_and_the_rest_flows(tmp_path: Path, keyed: bool) -> None:
    path = tmp_path / "store.db"
    with pmsq.connect(str(path), durability="normal") as broker:
        q = broker.declare_queue("orders", max_attempts=3)
        key = "property:4521" if keyed else None
        ids = [q.put({"n": i}, key=key) for i in range(6)]
        victim = ids[2]
        _flip_payload_byte(path, victim)  # behind pmsq's back, like a bad disk sector

        seen = []
        while batch := q.get_many(10, timeout=0):
            for d in batch:
                seen.append(d.message.id)
                d.ack()
        assert seen == [i for i in ids if i != victim]

        [dead] = broker.dead_letters("orders").list()
        assert dead.message.id == victim
        assert "checksum" in dead.reason
        assert dead.error_type == "pmsq.CorruptPayload"
        # The operator can still see what is left of the bytes.
        assert isinstance(dead.message.payload, bytes)
        stats = broker.stats("orders")
        assert (stats.ready, stats.in_flight, stats.dead) == (0, 0, 1)
        # Redriving it cannot launder the damage: it dies again, nothing else is touched.
        broker.dead_letters("orders").redrive([victim])
        assert q.get_many(10, timeout=0) == []
        assert [d.message.id for d in broker.dead_letters("orders").list()] == [victim]


def test_app_database_with_its_own_tables_is_accepted(tmp_path: Path) -> None:
    """The transactional outbox needs pmsq's tables next to the app's own."""
    path = tmp_path / "pms.db"
    app = sqlite3.connect(path, isolation_level=None)
    app.execute("CREATE TABLE bookings (id INTEGER PRIMARY KEY, property INTEGER, guest TEXT)")
    app.execute("CREATE INDEX bookings_by_property ON bookings (property)")
    app.execute("INSERT INTO bookings (property, guest) VALUES (4521, 'Ada'), (4522, 'Bo')")
    assert app.execute("PRAGMA application_id").fetchone()[0] == 0
    app.close()
    rows_before = table_rows(path, "SELECT * FROM bookings ORDER BY id")

    with pmsq.connect(str(path)) as broker:
        q = broker.queue("calendar")
        app = sqlite3.connect(path, isolation_level=None)
        try:
            app.execute("BEGIN IMMEDIATE")
            app.execute("INSERT INTO bookings (property, guest) VALUES (4521, 'Cy')")
            mid = q.put({"booking": 3}, key="property:4521", connection=app)
            app.execute("COMMIT")
        finally:
            app.close()
        with q.get(timeout=0) as d:
            assert (d.message.id, d.message.payload) == (mid, {"booking": 3})

    assert table_rows(path, "SELECT * FROM bookings ORDER BY id") == [
        *rows_before,
        (3, 4521, "Cy"),
    ]
    names = {r[0] for r in table_rows(path, "SELECT name FROM sqlite_master")}
    assert {"bookings", "bookings_by_property", "pmsq_messages", "pmsq_meta"} <= names
    assert integrity(path) == ["ok"]
    # And it opens again: the app's tables do not make the file "foreign".
    with pmsq.connect(str(path)) as broker:
        assert broker.stats("calendar").ready == 0


def test_pmsq_store_reopens_after_a_crash_left_its_wal(tmp_path: Path) -> None:
    """A live -wal file next to the store is normal after a crash, not damage."""
    path = tmp_path / "store.db"
    ids = _make_store(path, n=20)
    copy = tmp_path / "copy.db"
    with pmsq.connect(str(path), durability="normal") as broker:
        ids += broker.queue("orders").put_many([{"late": i} for i in range(5)])
        assert Path(f"{path}-wal").stat().st_size > 0
        for suffix in ("", "-wal", "-shm"):  # what a crash leaves: the file and its live WAL
            shutil.copy(f"{path}{suffix}", f"{copy}{suffix}")
    with pmsq.connect(str(copy)) as broker:
        got = broker.queue("orders").peek(100)
        assert {m.id for m, _ in got} == set(ids)
    assert integrity(copy) == ["ok"]


def test_payload_json_in_file_is_what_was_put(tmp_path: Path) -> None:
    """The stored form is plain JSON next to a CRC: another tool can read it."""
    path = tmp_path / "store.db"
    with pmsq.connect(str(path)) as broker:
        broker.queue("orders").put({"booking_id": 1, "guest": "Ada"})
    [(payload, fmt)] = table_rows(path, "SELECT payload, format FROM pmsq_messages")
    assert fmt == "json"
    assert json.loads(payload) == {"booking_id": 1, "guest": "Ada"}
    assert os.path.getsize(path) > 0


def test_undecodable_payload_does_not_make_get_report_empty(tmp_path: Path) -> None:
    """Bytes that pass their checksum but are not JSON (another codec, a buggy writer):
    that message is dead-lettered, and ``get`` goes on to the next one instead of
    raising ``Empty`` while messages are ready."""
    path = tmp_path / "store.db"
    with pmsq.connect(str(path), durability="normal") as broker:
        q = broker.queue("orders")
        bad = q.put({"n": 0}, key="property:1")
        good = q.put({"n": 1}, key="property:1")
        conn = sqlite3.connect(path)
        conn.execute(
            "UPDATE pmsq_messages SET payload = ?, crc = ? WHERE id = ?",
            (b"\x81\xa1n\x00", zlib.crc32(b"\x81\xa1n\x00"), bad),
        )
        conn.commit()
        conn.close()
        with q.get(timeout=0) as d:
            assert d.message.id == good
        [dead] = broker.dead_letters("orders").list()
        assert dead.message.id == bad
        assert "cannot be decoded" in dead.reason
        assert dead.message.payload == b"\x81\xa1n\x00"  # listed raw, not an error
