"""The store's one connection: opening the file, and every transaction on it.

Concurrency model: one connection per backend, guarded by a lock; SQLite's
file lock serialises writers across processes. Every write runs in a
``BEGIN IMMEDIATE`` transaction (a deferred one fails its read-to-write
upgrade under concurrent processes), rolled back whole on any error.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

from pmsq.backends.sqlite import files
from pmsq.backends.sqlite.errors import translate
from pmsq.backends.sqlite.journal import Journal
from pmsq.backends.sqlite.paths import check_folder
from pmsq.backends.sqlite.puts import ConfigReader
from pmsq.backends.sqlite.schema import (
    SchemaError,
    check_file_size,
    create_or_migrate,
    inspect_file,
)
from pmsq.backends.sqlite.wal import WalGuard, is_full
from pmsq.backends.sqlkit.metrics import Metrics
from pmsq.errors import ConfigurationError, StorageError

__all__ = ["SYNC", "Durability", "Store", "after_wait", "open_connection", "parse_sqlite_url"]

T = TypeVar("T")
Durability = Literal["full", "normal", "memory"]
#: ``PRAGMA synchronous`` of each durability.
SYNC = {"full": "FULL", "normal": "NORMAL", "memory": "OFF"}


def after_wait(now: float, called: float) -> float:
    """``now`` moved on by the time spent waiting for the write lock since ``called``.

    A lease counts from when it is granted: a claim that waited for another
    process's lock (up to busy_timeout) must not hand out a lease that is
    already partly or wholly spent. Waits under 50 ms are ignored, so a
    test's ManualClock stays exact.
    """
    waited = time.monotonic() - called
    return now + waited if waited > 0.05 else now


def parse_sqlite_url(url: str) -> str:
    """Return the file path of a ``sqlite:///path`` URL or a plain path.

    ``sqlite:///rel.db`` is relative, ``sqlite:////abs.db`` absolute,
    ``sqlite:///:memory:`` (or ``:memory:``) an in-memory store.

    Raises:
        ConfigurationError: for an empty path.
    """
    path = url
    if url.lower().startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if path.startswith("/"):
            path = path[1:]
        path = path.split("?", 1)[0]
    if not path:
        raise ConfigurationError(f"no database path in {url!r}; use sqlite:///path/to/file.db")
    return path


def open_connection(
    path: str,
    durability: Durability,
    busy_timeout: float,
    *,
    url: str | None = None,
    wal: WalGuard | None = None,
) -> sqlite3.Connection:
    """Open (creating or migrating) the store at ``path``, in WAL mode.

    Args:
        path: The file, or ``:memory:``.
        durability: ``"full"``, ``"normal"`` or ``"memory"``.
        busy_timeout: Seconds to wait for another process's write lock.
        url: The URL the user gave (for the error about a missing folder).
        wal: Sizes and checkpoints the WAL to fit the disk (``None``: SQLite's defaults).

    Raises:
        StorageError: the file is corrupt, foreign, from a newer pmsq, or cannot be opened.
    """
    memory = path == ":memory:"
    if not memory and os.path.isdir(path):
        raise StorageError(f"{path!r} is a directory; give a file path for the store")
    check_folder(path, url if url is not None else path)
    try:
        conn = sqlite3.connect(
            path if memory else files.uri(path),  # a quoted URI: see files.uri
            uri=not memory,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=512,
        )
    except sqlite3.Error as exc:
        raise translate(exc, path, busy_timeout=busy_timeout) from exc
    conn.row_factory = sqlite3.Row
    try:
        if not memory:
            check_file_size(path)  # before the first read creates a -wal file
        # The first read of the header is where a corrupt or foreign file shows.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        # Refuse a foreign or newer file before the WAL switch below rewrites its header.
        inspect_file(conn)
        if not memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(
                    f"SQLite store {path!r} cannot use WAL mode (got {mode!r}); "
                    "put it on a local disk"
                )
        conn.execute(f"PRAGMA synchronous = {SYNC[durability]}")
        conn.execute("PRAGMA temp_store = MEMORY")
        # After a burst (or a full disk) the WAL is cut back to this size once
        # checkpointed, instead of keeping its peak size forever.
        conn.execute("PRAGMA journal_size_limit = 8388608")
        if wal is not None:
            wal.configure(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            create_or_migrate(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except SchemaError as exc:
        conn.close()
        raise StorageError(
            f"SQLite store {path!r} cannot be opened by pmsq: {exc}; the file was left untouched"
        ) from exc
    except sqlite3.Error as exc:
        conn.close()
        raise translate(exc, path, busy_timeout=busy_timeout) from exc
    except BaseException:
        conn.close()
        raise
    return conn


class Store:
    """The open store: its connection, its lock, and transactions on it.

    Args:
        path: The file (or ``:memory:``).
        durability: ``"full"``, ``"normal"`` or ``"memory"``.
        busy_timeout: Seconds to wait for another process's write lock.
        configs: Queue configs, cached per transaction.
        journal: Events of the transaction in progress, flushed just before
            its COMMIT.
        url: The URL the user gave (for error messages).
        wal: Sizes and checkpoints the WAL to fit the disk.
        metrics: The outcome buffer; a transaction run again after a full
            disk first drops what its rolled-back attempt counted.

    Raises:
        StorageError: the file cannot be opened as a store.
    """

    def __init__(
        self,
        path: str,
        durability: Durability,
        busy_timeout: float,
        configs: ConfigReader,
        journal: Journal,
        *,
        url: str | None = None,
        wal: WalGuard | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.path = path
        self.durability = durability
        self.busy_timeout = busy_timeout
        self.lock = threading.RLock()
        self.closed = False
        self._configs = configs
        self._journal = journal
        self._wal = wal
        self._metrics = metrics
        self.conn = open_connection(path, durability, busy_timeout, url=url, wal=wal)

    def check_open(self) -> None:
        """Raise ``StorageError`` once the store is closed."""
        if self.closed:
            raise StorageError(f"the broker for {self.path!r} is closed")

    def translate(self, exc: sqlite3.Error, *, committing: bool = False) -> StorageError:
        """The pmsq error for a SQLite error on this store."""
        return translate(exc, self.path, busy_timeout=self.busy_timeout, committing=committing)

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, locked, for reads outside a write transaction."""
        with self.lock:
            self.check_open()
            try:
                yield self.conn
            except sqlite3.Error as exc:
                raise self.translate(exc) from exc

    def write(self, fn: Callable[[sqlite3.Connection], T], *, sync: bool = True) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction; roll back on any error.

        ``sync=False`` commits without waiting for the disk (WAL frames are
        synced by the next synced commit). Only claims use it: losing a claim
        to a power cut merely makes its message deliverable again, which
        at-least-once delivery allows, and it halves the fsyncs of get + ack.
        """
        with self.lock:
            self.check_open()
            relaxed = not sync and self.durability == "full"
            if not relaxed:
                return self._transaction(fn)
            try:
                self.conn.execute("PRAGMA synchronous = NORMAL")
                return self._transaction(fn)
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("PRAGMA synchronous = FULL")

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._wal is None:
            return self._transaction_once(fn)
        saved = self._metrics.snapshot() if self._metrics is not None else None
        try:
            result = self._transaction_once(fn)
        except StorageError as exc:
            # A full disk the WAL filled: hand its space back and try once more.
            if not (is_full(exc.__cause__) and self._wal.relieve(self.conn)):
                raise
            if self._metrics is not None and saved is not None:
                self._metrics.restore(saved)
            result = self._transaction_once(fn)
        self._wal.after_commit(self.conn)
        return result

    def _transaction_once(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc
        self._configs.begin()
        try:
            result = fn(conn)
            # The events of this transaction, in it: they commit or vanish with it.
            self._journal.flush(conn)
        except sqlite3.Error as exc:
            self._rollback()
            raise self.translate(exc) from exc
        except BaseException:
            self._rollback()
            raise
        finally:
            self._configs.end()
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self.translate(exc, committing=True) from exc
        return result

    def _rollback(self) -> None:
        self._journal.discard()
        with contextlib.suppress(sqlite3.Error):
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self.lock:
            self.closed = True
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
