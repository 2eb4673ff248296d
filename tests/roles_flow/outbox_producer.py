"""Role: a booking service that writes a booking row and its event in one transaction.

Usage: outbox_producer.py DB MODE, MODE ``before-commit`` (print UNCOMMITTED and
wait to be killed) or ``after-commit`` (commit, print COMMITTED, wait to be killed).
The test SIGKILLs this process by its PID.
"""

from __future__ import annotations

import sqlite3
import sys
import time

import pmsq


def main() -> int:
    db, mode = sys.argv[1], sys.argv[2]
    broker = pmsq.connect(f"sqlite:///{db}", busy_timeout=10.0)
    app = sqlite3.connect(db, timeout=10.0)
    app.execute("BEGIN IMMEDIATE")
    app.execute("INSERT INTO bookings (id, property) VALUES (?, ?)", (8812, 4521))
    ids = broker.publish(
        "booking.created", {"booking_id": 8812}, key="property:4521", connection=app
    )
    if mode == "after-commit":
        app.commit()
        print("COMMITTED", *ids, flush=True)
    else:
        print("UNCOMMITTED", *ids, flush=True)
    time.sleep(120)  # killed here
    return 1


if __name__ == "__main__":
    sys.exit(main())
