"""Role: a calendar consumer that applies its effect exactly once with ``broker.once``.

Usage: once_consumer.py DB MODE. It takes one message from queue ``calendar``,
records its effect and the once-record in one app transaction and commits.
MODE ``die-before-ack`` then prints COMMITTED and waits to be SIGKILLed (so
the message is never acked); MODE ``ack`` acks and prints ACKED.
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
    # Waits for the lease of a killed predecessor to run out.
    with broker.queue("calendar").get(timeout=60.0) as d:
        with broker.once(d.message, connection=app) as first:
            if first:
                app.execute(
                    "INSERT INTO calendar_blocks (message_id, property) VALUES (?, ?)",
                    (d.message.id, d.message.payload["property"]),
                )
        app.commit()  # the effect and its once-record, together
        print(f"COMMITTED first={first} attempt={d.message.attempt} id={d.message.id}", flush=True)
        if mode == "die-before-ack":
            time.sleep(120)  # SIGKILLed here: the lease runs out, the message comes back
            return 1
    print("ACKED", flush=True)
    broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
