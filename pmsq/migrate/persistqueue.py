"""A persist-queue ``SQLiteAckQueue`` file as a migration source (``persistqueue:///dir``).

The file is opened with persist-queue itself (``auto_resume=False``, so its
unacked items are not touched) after a read-only check that it holds the
queue's table, so persist-queue never creates anything. Items are read in
put order and never acked, nacked or changed.

Status mapping (persist-queue's ``AckStatus``): inited, ready and unack
items become pending messages (unack ones carry the header
``persistqueue.unacked``: a consumer took them and never acked, so their
work may be half done); ack_failed items become dead letters; acked items
are left behind.

Payloads: persist-queue pickles items by default, so reading the file
unpickles them. That runs code chosen by whoever wrote the file; migrating
an app's own persist-queue file is the user's explicit choice. Unpickled
items are stored as JSON (bytes as they are); an item JSON cannot hold
stops the migration with an error naming it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from pmsq.backends.base import Envelope, StoredMessage
from pmsq.backends.sqlite.files import readonly_uri
from pmsq.codec import BYTES_FORMAT, JsonCodec
from pmsq.config import QueueConfig
from pmsq.errors import ConfigurationError, SerializationError
from pmsq.ids import stable_message_id
from pmsq.migrate.sources import Counts, Source

__all__ = ["PersistQueueSource", "parse_persistqueue_url"]

SCHEME = "persistqueue"
# persist-queue's AckStatus values.
_INITED, _READY, _UNACK, _ACKED, _ACK_FAILED = 0, 1, 2, 5, 9
_PENDING = (_INITED, _READY, _UNACK)
_SERIALIZERS = ("pickle", "json")


def parse_persistqueue_url(url: str) -> tuple[str, dict[str, str]]:
    """Split ``persistqueue:///dir?name=default&serializer=pickle`` into path and options.

    Like ``sqlite:///``: three slashes then a relative path, four for an
    absolute one. The path is persist-queue's ``path`` (a directory holding
    ``data.db``) or the database file itself.

    Raises:
        ConfigurationError: no path, or an unknown option.
    """
    rest = url[len(SCHEME) + len("://") :]
    if rest.startswith("/"):
        rest = rest[1:]
    path, _, query = rest.partition("?")
    if not path:
        raise ConfigurationError(
            f"no path in {url!r}; use persistqueue:///relative/dir or persistqueue:////abs/dir"
        )
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(options) - {"name", "serializer"}
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) in {url!r}: {', '.join(sorted(unknown))}; "
            "a persistqueue URL takes name (default 'default') and serializer (pickle or json)"
        )
    if options.get("serializer", "pickle") not in _SERIALIZERS:
        raise ConfigurationError(
            f"serializer must be pickle or json, got {options['serializer']!r}"
        )
    return path, options


class PersistQueueSource(Source):
    """Items of a persist-queue ``SQLiteAckQueue``, read into one pmsq queue.

    Args:
        url: ``persistqueue:///dir`` with optional ``name`` and ``serializer``.
        queue: The pmsq queue that receives the items.

    Raises:
        ConfigurationError: bad URL, no such file or queue, persist-queue not installed.
    """

    def __init__(self, url: str, queue: str) -> None:
        path, options = parse_persistqueue_url(url)
        self.name = options.get("name", "default")
        self.queue = queue
        self.description = f"persist-queue {self.name!r} in {path}"
        if os.path.isdir(path):
            folder, db_file = path, "data.db"
        else:
            folder, db_file = os.path.dirname(path) or ".", os.path.basename(path)
        self.db_path = os.path.join(folder, db_file)
        self.table = f"ack_queue_{self.name}"
        if not os.path.isfile(self.db_path):
            hint = " (four slashes for an absolute path)" if not os.path.isabs(path) else ""
            raise ConfigurationError(f"no persist-queue database at {self.db_path}{hint}")
        self._check_table()
        try:
            import persistqueue
            from persistqueue.serializers import json as pq_json
            from persistqueue.serializers import pickle as pq_pickle
        except ImportError:
            raise ConfigurationError(
                "reading a persist-queue file needs the persist-queue package: "
                "pip install persist-queue (the persistqueue extra of pmsq)"
            ) from None
        serializer = pq_json if options.get("serializer") == "json" else pq_pickle
        # auto_resume=False: opening must not turn the file's unacked items back to ready.
        self._pq: Any = persistqueue.SQLiteAckQueue(
            folder,
            name=self.name,
            auto_resume=False,
            serializer=serializer,
            db_file_name=db_file,
        )
        self._codec = JsonCodec()

    def _check_table(self) -> None:
        """Refuse a file without the queue's table before persist-queue would create one."""
        try:
            conn = sqlite3.connect(readonly_uri(self.db_path), uri=True)
            try:
                tables = [
                    r[0]
                    for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                ]
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise ConfigurationError(f"{self.db_path} is not readable as SQLite: {exc}") from exc
        if self.table not in tables:
            found = [t[len("ack_queue_") :] for t in tables if t.startswith("ack_queue_")]
            names = ", ".join(repr(n) for n in found) or "none"
            raise ConfigurationError(
                f"{self.db_path} has no SQLiteAckQueue named {self.name!r} "
                f"(ack queues found: {names}); pick one with ?name="
            )

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        # persist-queue's own reading connection: the table name is its own too.
        return list(self._pq._getter.execute(sql.replace("{t}", self._pq._table_name), args))

    def queues(self) -> list[QueueConfig]:
        return [QueueConfig(name=self.queue)]

    def counts(self) -> Counts:
        pending = self._rows(
            "SELECT count(*) FROM {t} WHERE status IN (?, ?, ?)", (_INITED, _READY, _UNACK)
        )[0][0]
        dead = self._rows("SELECT count(*) FROM {t} WHERE status = ?", (_ACK_FAILED,))[0][0]
        return {self.queue: (int(pending), int(dead))}

    def pages(self, queue: str, batch: int) -> Iterator[list[StoredMessage]]:
        if queue != self.queue:
            return
        after = 0
        while True:
            rows = self._rows(
                "SELECT _id, data, timestamp, status FROM {t} WHERE _id > ? "
                "AND status IN (?, ?, ?, ?) ORDER BY _id LIMIT ?",
                (after, _INITED, _READY, _UNACK, _ACK_FAILED, batch),
            )
            if not rows:
                return
            yield [self._record(*row) for row in rows]
            after = rows[-1][0]

    def _record(self, rowid: int, data: bytes, timestamp: float, status: int) -> StoredMessage:
        try:
            item = self._pq._serializer.loads(data)
        except Exception as exc:
            raise SerializationError(
                f"persist-queue item {rowid} of {self.description} cannot be read "
                f"({type(exc).__name__}: {exc}); is ?serializer= right?"
            ) from exc
        if isinstance(item, bytes):
            body, fmt = item, BYTES_FORMAT
        else:
            try:
                body, fmt = self._codec.encode(item), self._codec.format
            except SerializationError as exc:
                raise SerializationError(
                    f"persist-queue item {rowid} ({type(item).__name__}) cannot be stored as "
                    f"JSON: {exc}; convert such items in the app before migrating"
                ) from exc
        at = float(timestamp)
        mid = stable_message_id(at, f"persistqueue:{self.table}:{rowid}:{at!r}".encode())
        envelope = Envelope(
            id=mid,
            queue=self.queue,
            data=body,
            format=fmt,
            key=None,
            tenant=None,
            priority=0,
            available_at=at,
            enqueued_at=at,
            headers='{"persistqueue.unacked":true}' if status == _UNACK else None,
            dedup_id=None,
            topic=None,
            correlation_id=mid,
            causation_id=None,
        )
        if status == _ACK_FAILED:
            return StoredMessage(
                envelope=envelope,
                state="dead",
                attempts=1,
                dead_reason="marked ack_failed in persist-queue",
                dead_at=at,
            )
        return StoredMessage(envelope=envelope, state="pending")

    def close(self) -> None:
        pq, self._pq = self._pq, None
        if pq is not None:
            pq.close()
