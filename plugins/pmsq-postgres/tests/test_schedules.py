"""PostgreSQL specifics of schedules (the shared semantics are in the conformance suite)."""

from __future__ import annotations

from pathlib import Path

import psycopg
from pmsq_postgres.schema import SCHEMA_VERSION

import pmsq
from pmsq.testing._schedule_tests import check_sigkilled_workers


def test_a_version_1_store_gains_the_schedules_table(pg_url: str, schema: str) -> None:
    with pmsq.connect(pg_url) as b:
        mid = b.queue("q").put("before the upgrade")
    with psycopg.connect(pg_url.split("?")[0], autocommit=True) as conn:
        conn.execute(f'DROP TABLE "{schema}".schedules')
        conn.execute(f"UPDATE \"{schema}\".meta SET v = '1' WHERE k = 'schema_version'")
    clock = pmsq.ManualClock()
    with pmsq.connect(pg_url, clock=clock) as b:
        assert b.backend.get_meta("schema_version") == str(SCHEMA_VERSION)  # every step ran
        b.schedule("s", queue="q", every=5.0)
        clock.advance(5.0)
        assert b.run_schedules() == 1
        got = {d.message.id for d in b.queue("q").get_many(10, timeout=0)}
        assert mid in got
        assert len(got) == 2


def test_sigkilled_workers_make_exactly_one_message_per_slot(pg_url: str, tmp_path: Path) -> None:
    assert check_sigkilled_workers(pg_url, tmp_path) >= 8
