"""A lease starts when the claim is made, not when the consumer began to wait for the lock.

Found by the tiny-lease torture run: ``Queue.get_many`` reads the clock,
then the backend waits for the write lock (up to ``busy_timeout``), then
grants a lease of ``now + lease`` from the time read *before* the wait. A
claim that waited longer than the lease hands out a delivery that has
already expired: another consumer may claim the message at once, and the
first one's settle is then ``LeaseLost`` although nothing went wrong. With
the default 30 s lease and 30 s ``busy_timeout`` the window is there too.

Fixed in the SQLite backend: the time spent waiting for the lock is added
to ``now`` before the lease is granted.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pmsq
from faults._support import reaping, start_role


def test_a_claim_that_waited_for_the_lock_gets_a_whole_lease(db_path: Path, tmp_path: Path) -> None:
    with pmsq.connect(str(db_path)) as broker, reaping([]) as procs:
        q = broker.declare_queue("orders", lease=0.3)
        q.put({"n": 1})
        holder = start_role("hold_lock.py", db_path, log=tmp_path / "holder.err")
        procs.append(holder)
        assert holder.stdout.readline() == b"locked\n"
        # Let go of the lock in a moment, while the claim below waits for it.
        release_at = time.monotonic() + 0.6

        def release() -> None:
            time.sleep(max(0.0, release_at - time.monotonic()))
            holder.stdin.write(b"go\n")
            holder.stdin.flush()

        t = threading.Thread(target=release)
        t.start()
        d = q.get(timeout=5)
        granted_at = time.time()
        t.join()
        assert d.lease_expires - granted_at > 0.2, (
            f"the lease was {d.lease_expires - granted_at:.2f} s long when handed out"
        )
        d.ack()
