"""A consumer process for the multi-process test: Queue.get + Delivery, effects exactly once.

Usage: pg_consumer.py STORE_URL APP_URL APP_SCHEMA NAME TOTAL [VICTIM_AFTER MARKER]

Each delivery records its effect (a row in APP_SCHEMA.effects) inside the
app's transaction guarded by ``broker.once``, commits, then acks. The victim
stops after VICTIM_AFTER messages *between* commit and ack: it writes MARKER
(the message id) and hangs until the test kills it with SIGKILL, so its
message comes back after the lease and must not take effect twice.
Exits 0 once TOTAL distinct effects exist and nothing is left in the queue
(the victim's message, back after its lease, acked too).
"""

from __future__ import annotations

import os
import sys
import time

import psycopg

import pmsq


def main() -> int:
    store_url, app_url, app_schema, name, total = sys.argv[1:6]
    victim_after = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    marker = sys.argv[7] if len(sys.argv) > 7 else ""
    deadline = time.monotonic() + 150
    broker = pmsq.connect(store_url, poll_interval=0.02)
    q = broker.queue("calendar")
    done = 0
    with psycopg.connect(app_url) as app:

        def finished() -> bool:
            row = app.execute(
                f'SELECT count(DISTINCT message_id) FROM "{app_schema}".effects'
            ).fetchone()
            app.commit()
            if row is None or row[0] < int(total):
                return False
            # Every effect exists, but the killed victim's message may still be
            # leased: it comes back after its lease and must be acked, not left.
            s = broker.stats("calendar")
            return s.ready + s.delayed + s.in_flight == 0

        while time.monotonic() < deadline:
            try:
                d = q.get(timeout=0.3)
            except pmsq.Empty:
                if finished():
                    broker.close()
                    return 0
                continue
            with d:  # a normal exit acks
                msg = d.message
                with broker.once(msg, connection=app) as first:
                    if first:
                        app.execute(
                            f'INSERT INTO "{app_schema}".effects '
                            "(message_id, key, n, proc, attempt) VALUES (%s, %s, %s, %s, %s)",
                            (msg.id, msg.key, msg.payload["n"], name, msg.attempt),
                        )
                app.commit()
                done += 1
                if victim_after and done == victim_after:
                    with open(marker + ".tmp", "w") as f:
                        f.write(msg.id)
                    os.replace(marker + ".tmp", marker)
                    while True:  # "hung": committed its effect, never acks
                        time.sleep(1)
    return 2


if __name__ == "__main__":
    sys.exit(main())
