"""The peers, each in its most comparable durable configuration (synchronous=FULL, WAL).

An adapter exposes ``put(item)``, ``get_ack()`` (take one and acknowledge
it; None when empty) and ``close()``. huey's storage has no acknowledgement:
a dequeue deletes the task, so its figures do less work than the others'.
"""

from __future__ import annotations

import json
import os
from typing import Any


class PersistQueue:
    """persist-queue ``SQLiteAckQueue`` (WAL, synchronous FULL by this SQLite build's default)."""

    name = "persist-queue"

    def __init__(self, path: str) -> None:
        import persistqueue

        self.q = persistqueue.SQLiteAckQueue(
            os.path.dirname(path), multithreading=True, auto_commit=True
        )

    def put(self, item: Any) -> None:
        self.q.put(item)

    def get_ack(self) -> Any:
        import persistqueue

        try:
            item = self.q.get(block=False)
        except persistqueue.exceptions.Empty:
            return None
        self.q.ack(item)
        return item

    def close(self) -> None:
        self.q._getter.close() if hasattr(self.q, "_getter") else None


class Huey:
    """huey ``SqliteStorage`` with ``fsync=True`` (synchronous FULL); dequeue deletes."""

    name = "huey"

    def __init__(self, path: str) -> None:
        from huey.storage import SqliteStorage

        self.s = SqliteStorage(name="bench", filename=path, fsync=True)

    def put(self, item: Any) -> None:
        self.s.enqueue(json.dumps(item).encode())

    def get_ack(self) -> Any:
        data = self.s.dequeue()
        return None if data is None else json.loads(bytes(data))

    def close(self) -> None:
        self.s.close()


class LiteQueue:
    """litequeue ``LiteQueue`` switched from its default synchronous NORMAL to FULL."""

    name = "litequeue"

    def __init__(self, path: str) -> None:
        from litequeue import LiteQueue as LQ

        self.q = LQ(path)
        self.q.conn.execute("PRAGMA synchronous = FULL")

    def put(self, item: Any) -> None:
        self.q.put(json.dumps(item))

    def get_ack(self) -> Any:
        msg = self.q.pop()
        if msg is None:
            return None
        self.q.done(msg.message_id)
        return msg.data

    def close(self) -> None:
        self.q.close()


PEERS = (PersistQueue, Huey, LiteQueue)
