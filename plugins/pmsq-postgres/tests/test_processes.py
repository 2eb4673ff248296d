"""Four consumer processes on one PostgreSQL store, one of them killed with SIGKILL mid-run.

Checks: every message takes effect exactly once (``broker.once`` in the app's
transaction), per-key order of the effects holds, the killed consumer's
message comes back after its lease, and the store ends empty and consistent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psycopg
from pmsq_postgres import PostgresBackend

import pmsq

ROLE = Path(__file__).resolve().parent / "roles" / "pg_consumer.py"
KEYS = 12
PER_KEY = 25
UNKEYED = 60
TOTAL = KEYS * PER_KEY + UNKEYED


def _messages(half: int) -> list[pmsq.NewMessage]:
    """Half 0 or 1 of the messages, keys interleaved; ``n`` is the per-key position."""
    out = []
    for n in range(half * PER_KEY // 2, PER_KEY if half else PER_KEY // 2):
        out += [pmsq.NewMessage({"n": n}, key=f"property:{k}") for k in range(KEYS)]
    out += [pmsq.NewMessage({"n": -1}) for _ in range(UNKEYED // 2)]
    return out


def test_four_consumer_processes_one_killed(pg_url: str, schema: str, tmp_path: Path) -> None:
    base = pg_url.split("?")[0]
    app_schema = f"app_{schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{app_schema}"')
        conn.execute(
            f'CREATE TABLE "{app_schema}".effects (id bigserial PRIMARY KEY, message_id text, '
            "key text, n int, proc text, attempt int)"
        )
    marker = tmp_path / "victim-holds"
    procs: list[subprocess.Popen[bytes]] = []
    broker = pmsq.connect(pg_url)
    try:
        broker.declare_queue("calendar", lease=3.0, max_attempts=10)
        q = broker.queue("calendar")
        ids = q.put_many(_messages(0))
        for i in range(4):
            args = [sys.executable, str(ROLE), pg_url, base, app_schema, f"c{i}", str(TOTAL)]
            if i == 0:
                args += ["5", str(marker)]
            procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        ids += q.put_many(_messages(1))
        assert len(set(ids)) == TOTAL

        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline, "the victim never reached its fifth message"
            assert procs[0].poll() is None, procs[0].communicate()[0].decode()
            time.sleep(0.02)
        held = marker.read_text()
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].communicate(timeout=30)

        for p in procs[1:]:
            out, _ = p.communicate(timeout=170)
            assert p.returncode == 0, out.decode()

        with psycopg.connect(base) as conn:
            rows = conn.execute(
                f'SELECT message_id, key, n, proc FROM "{app_schema}".effects ORDER BY id'
            ).fetchall()
        by_id: dict[str, int] = defaultdict(int)
        by_key: dict[str, list[int]] = defaultdict(list)
        for mid, key, n, _ in rows:
            by_id[mid] += 1
            if key is not None:
                by_key[key].append(n)
        assert set(by_id) == set(ids), "a message was lost or an unknown one appeared"
        assert [m for m, c in by_id.items() if c != 1] == [], "an effect happened twice"
        for key, seen in by_key.items():
            assert seen == list(range(PER_KEY)), f"{key} processed out of order: {seen}"
        # The killed consumer's effect was committed once, by it; the redelivery was absorbed.
        assert [proc for mid, _, _, proc in rows if mid == held] == ["c0"]
        stats = broker.stats("calendar")
        assert (stats.ready, stats.delayed, stats.in_flight, stats.dead) == (0, 0, 0, 0)
        assert isinstance(broker.backend, PostgresBackend)
        assert broker.backend.check() == []
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.communicate(timeout=30)
        broker.close()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{app_schema}" CASCADE')
