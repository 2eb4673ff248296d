"""Writes ``v7_store.sql`` and ``v7_history.json``: a store journaled by pmsq at schema 7.

Run with a pmsq whose store is at schema 7 (three journal rows per delivered
message; commit 3a3dbb5 of pmsq), e.g. ``PYTHONPATH=<that checkout> python
make_v7_store.py``. The dump and the history that pmsq read from it are what
``test_journal_layout.py`` checks the schema-8 reader against.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from pathlib import Path

import attrs

import pmsq
from pmsq.backends.sqlite.schema import SCHEMA_VERSION
from pmsq.leases import get_many

HERE = Path(__file__).resolve().parent


def main() -> int:
    if SCHEMA_VERSION != 7:
        print(f"needs a pmsq at schema 7, this one is at {SCHEMA_VERSION}", file=sys.stderr)
        return 1
    clock = pmsq.ManualClock()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "v7.db"
        with pmsq.connect(str(db), clock=clock, durability="normal") as b:
            b.declare_queue("mail", max_attempts=3, lease=30.0, fallback="sms")
            q = b.queue("mail")
            acked = q.put("a", key="guest:1", tenant="acme", dedup_id="a-1")
            clock.advance(1)
            q.put("a again", key="guest:1", tenant="acme", dedup_id="a-1")
            [d] = get_many(b.runtime, "mail", 1, 0, consumer="w-old")
            clock.advance(1)
            d.retry(delay=0)
            [d] = get_many(b.runtime, "mail", 1, 0, consumer="w-old")
            clock.advance(1)
            d.ack()
            dead = q.put("b", key="guest:2")
            leased = q.put("c")
            waiting = q.put("d", key="guest:2")
            got = get_many(b.runtime, "mail", 2, 0, consumer="w-old")
            assert [x.message.id for x in got] == [dead, leased]
            clock.advance(1)
            got[0].dead_letter("mailbox full")  # its fallback copy waits in "sms"
            # ``leased`` stays in flight across the upgrade.
            ids = {"acked": acked, "dead": dead, "leased": leased, "waiting": waiting}
            history = {
                name: [attrs.asdict(e) for e in b.backend.history(message_id=mid)]
                for name, mid in ids.items()
            }
            history["queue"] = [attrs.asdict(e) for e in b.backend.history(queue="mail")]
            history["key"] = [attrs.asdict(e) for e in b.backend.history(key="guest:2")]
        conn = sqlite3.connect(db)
        dump = "\n".join(conn.iterdump())
        conn.close()
    (HERE / "v7_store.sql").write_text(dump + "\n")
    out = {"clock": clock.time(), "ids": ids, "history": history}
    (HERE / "v7_history.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
