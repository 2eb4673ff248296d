"""The SQLite backend: one file, WAL, every write in a ``BEGIN IMMEDIATE`` transaction.

Concurrency model: one connection per backend, guarded by a lock; SQLite's
file lock serialises writers across processes. Puts and settlements (ack,
retry, dead letter) use group commit: a thread that finds a commit under way
queues its request, and whoever leads next commits every queued request in
one transaction and one fsync. Each caller returns only after the commit
that holds its own work.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar

from pmsq.backends.base import Backend, Capabilities
from pmsq.backends.families import History, Inspect, Once, Settings, TransactionalPut, Transfer
from pmsq.backends.sqlite import admin, claims, journal, settle, transfer, wake
from pmsq.backends.sqlite.errors import translate
from pmsq.backends.sqlite.journal import Journal
from pmsq.backends.sqlite.puts import ConfigReader, dump_config, put_one
from pmsq.backends.sqlite.schema import (
    SchemaError,
    check_file_size,
    create_or_migrate,
    inspect_file,
)
from pmsq.backends.types import (
    Claimed,
    DedupRecord,
    Envelope,
    HistoryEvent,
    Readiness,
    Receipt,
    Settlement,
    StoredDeadLetter,
    StoredMessage,
)
from pmsq.config import QueueConfig
from pmsq.errors import ConfigurationError, PmsqError, StorageError
from pmsq.message import Message
from pmsq.once import once_sqlite
from pmsq.stats import Stats

__all__ = ["SQLiteBackend", "parse_sqlite_url"]

T = TypeVar("T")
Durability = Literal["full", "normal", "memory"]
_SYNC = {"full": "FULL", "normal": "NORMAL", "memory": "OFF"}
_HOUSEKEEPING_EVERY = 30.0
#: Journal retention when none is given: three days.
DEFAULT_HISTORY = 3 * 86400.0


def _after_wait(now: float, called: float) -> float:
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


class _Request:
    """One caller's write (a put, an ack, a retry, a dead letter) waiting for group commit."""

    __slots__ = ("done", "error", "event", "fn", "now", "rerunnable", "result")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], now: float, rerunnable: bool = False
    ) -> None:
        self.fn = fn
        self.now = now
        # Its only effects outside the transaction are journal rows (dropped on
        # rollback), so it may run again after a rollback.
        self.rerunnable = rerunnable
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        # Made only for a request that has to wait (most run as their own leader).
        self.event: threading.Event | None = None

    def wake(self) -> None:
        # Only requests queued behind a leader are woken, and they all have an event.
        assert self.event is not None
        self.event.set()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class _RequestFailed(Exception):
    """A request of an unisolated batch failed: roll back and run the batch isolated."""


class _PlainRows:
    """Runs statements on a caller's connection with plain tuple rows (their row_factory aside)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        cur = self._conn.cursor()
        cur.row_factory = None
        return cur.execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> sqlite3.Cursor:
        cur = self._conn.cursor()
        cur.row_factory = None
        return cur.executemany(sql, rows)


class SQLiteBackend(Backend, TransactionalPut, Once, History, Transfer, Settings, Inspect):
    """The reference backend: a SQLite file (or memory) shared by threads and processes.

    Args:
        url: ``sqlite:///path.db`` or a plain path.
        durability: ``"full"`` (fsync every commit: survives power loss),
            ``"normal"`` (survives a process crash) or ``"memory"`` (no fsync; tests).
        busy_timeout: Seconds to wait for another process's write lock.
        history: Seconds the message journal keeps events (``None``: no journal).

    Raises:
        StorageError: the file is corrupt, foreign, from a newer pmsq, or cannot be opened.
    """

    capabilities = Capabilities()
    name = "SQLite"

    def __init__(
        self,
        url: str,
        *,
        durability: Durability = "full",
        busy_timeout: float = 30.0,
        history: float | None = DEFAULT_HISTORY,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) for the SQLite backend: {', '.join(sorted(unknown))}; "
                "it takes durability, busy_timeout and history"
            )
        if durability not in _SYNC:
            raise ConfigurationError(
                f"durability must be 'full', 'normal' or 'memory', got {durability!r}"
            )
        self.path = parse_sqlite_url(url)
        self.url = url
        self.durability = durability
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._group = threading.Lock()
        self._leading = False
        self._pending: list[_Request] = []
        # (queue, tenant) scopes whose last claim came back full (see claim).
        self._busy: set[tuple[str, str | None]] = set()
        self._configs = ConfigReader()
        # Outcome counts are buffered and written at most once a second inside
        # some write transaction: one upsert per second instead of four per ack.
        # A crash loses at most that second of statistics, never a message.
        self._metrics = settle.Metrics()
        self._metrics_flushed = time.monotonic()
        self._closed = False
        self._last_housekeeping = 0.0
        # Journal events of the transaction in progress (used under self._lock).
        self._journal = Journal(None)
        self.set_history(history)
        self._pruning_behind = False
        self._conn = self._open()
        # A second, read-only connection for wait_for_change/ready_queues: its
        # data_version moves on every commit (ours too), and probing through it
        # never waits for the write lock a group commit holds.
        self._probe: sqlite3.Connection | None = None
        self._probe_lock = threading.Lock()

    # -- connection and transactions ---------------------------------------
    def _open(self) -> sqlite3.Connection:
        memory = self.path == ":memory:"
        if not memory and os.path.isdir(self.path):
            raise StorageError(f"{self.path!r} is a directory; give a file path for the store")
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=512,
            )
        except sqlite3.Error as exc:
            raise translate(exc, self.path, busy_timeout=self.busy_timeout) from exc
        conn.row_factory = sqlite3.Row
        try:
            if not memory:
                check_file_size(self.path)  # before the first read creates a -wal file
            # The first read of the header is where a corrupt or foreign file shows.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            # Refuse a foreign or newer file before the WAL switch below rewrites its header.
            inspect_file(conn)
            if not memory:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StorageError(
                        f"SQLite store {self.path!r} cannot use WAL mode (got {mode!r}); "
                        "put it on a local disk"
                    )
            conn.execute(f"PRAGMA synchronous = {_SYNC[self.durability]}")
            conn.execute("PRAGMA temp_store = MEMORY")
            # After a burst (or a full disk) the WAL is cut back to this size once
            # checkpointed, instead of keeping its peak size forever.
            conn.execute("PRAGMA journal_size_limit = 8388608")
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
                f"SQLite store {self.path!r} cannot be opened by pmsq: {exc}; "
                "the file was left untouched"
            ) from exc
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, self.path, busy_timeout=self.busy_timeout) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"the broker for {self.path!r} is closed")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_open()
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise translate(exc, self.path, busy_timeout=self.busy_timeout) from exc

    def _write(self, fn: Callable[[sqlite3.Connection], T], *, sync: bool = True) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction; roll back on any error.

        ``sync=False`` commits without waiting for the disk (WAL frames are
        synced by the next synced commit). Only claims use it: losing a claim
        to a power cut merely makes its message deliverable again, which
        at-least-once delivery allows, and it halves the fsyncs of get + ack.
        """
        with self._lock:
            self._check_open()
            relaxed = not sync and self.durability == "full"
            if not relaxed:
                return self._transaction(fn)
            try:
                self._conn.execute("PRAGMA synchronous = NORMAL")
                return self._transaction(fn)
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA synchronous = FULL")

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise translate(exc, self.path, busy_timeout=self.busy_timeout) from exc
        self._configs.begin()
        try:
            result = fn(conn)
            # The events of this transaction, in it: they commit or vanish with it.
            self._journal.flush(conn)
        except sqlite3.Error as exc:
            self._rollback()
            raise translate(exc, self.path, busy_timeout=self.busy_timeout) from exc
        except BaseException:
            self._rollback()
            raise
        finally:
            self._configs.end()
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise translate(
                exc, self.path, busy_timeout=self.busy_timeout, committing=True
            ) from exc
        return result

    def _rollback(self) -> None:
        self._journal.discard()
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

    # -- configuration -------------------------------------------------------
    def declare_queue(self, config: QueueConfig) -> None:
        text = dump_config(config)
        self._write(
            lambda c: c.execute(
                "INSERT INTO pmsq_queues (name, config) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET config = excluded.config",
                (config.name, text),
            )
        )

    def ensure_queue(self, config: QueueConfig) -> None:
        text = dump_config(config)
        self._write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO pmsq_queues (name, config) VALUES (?, ?)",
                (config.name, text),
            )
        )

    def queue_config(self, name: str) -> QueueConfig | None:
        with self._reading() as conn:
            row = conn.execute("SELECT config FROM pmsq_queues WHERE name = ?", (name,)).fetchone()
        return None if row is None else QueueConfig.from_dict(json.loads(row[0]))

    def list_queues(self) -> list[QueueConfig]:
        with self._reading() as conn:
            rows = conn.execute("SELECT config FROM pmsq_queues ORDER BY name").fetchall()
        return [QueueConfig.from_dict(json.loads(r[0])) for r in rows]

    def bind(self, pattern: str, queue: str) -> None:
        def go(c: sqlite3.Connection) -> None:
            self._configs.get(c, queue)
            c.execute(
                "INSERT OR IGNORE INTO pmsq_bindings (pattern, queue) VALUES (?, ?)",
                (pattern, queue),
            )

        self._write(go)

    def unbind(self, pattern: str, queue: str) -> bool:
        return self._write(
            lambda c: (
                c.execute(
                    "DELETE FROM pmsq_bindings WHERE pattern = ? AND queue = ?", (pattern, queue)
                ).rowcount
                > 0
            )
        )

    def bindings(self) -> list[tuple[str, str]]:
        with self._reading() as conn:
            rows = conn.execute("SELECT pattern, queue FROM pmsq_bindings ORDER BY 1, 2")
            return [(r[0], r[1]) for r in rows]

    # -- puts ------------------------------------------------------------------
    def put_many(self, envelopes: Sequence[Envelope], *, now: float) -> list[str]:
        return list(
            self._grouped(
                lambda conn: self._put_request(conn, self._journal, envelopes, now),
                now,
                rerunnable=True,
            )
        )

    def _grouped(
        self, fn: Callable[[sqlite3.Connection], T], now: float, *, rerunnable: bool = False
    ) -> T:
        """Run ``fn`` in a transaction shared with other threads' concurrent writes.

        Group commit: a thread that finds a commit under way queues its work;
        the next leader runs everything queued in one transaction (a savepoint
        each, so one caller's error undoes only its own work) and one fsync.
        Each caller returns only after the commit that holds its own work, so
        a put is durable and an ack final when the call returns.
        """
        request = _Request(fn, now, rerunnable)
        with self._group:
            self._pending.append(request)
            lead = not self._leading
            self._leading = True
            if not lead:
                # Created under the lock, so the leader that wakes it sees it.
                request.event = threading.Event()
        if not lead:
            # A leader is committing; it will either include this request in
            # its transaction or hand leadership to it.
            assert request.event is not None
            request.event.wait()
            if request.done:
                return request.outcome()  # type: ignore[no-any-return]
        with self._group:
            batch, self._pending = self._pending, []
        try:
            self._commit_group(batch)
        finally:
            for req in batch:
                req.done = True
                if req is not request:
                    req.wake()
            with self._group:
                if self._pending:
                    self._pending[0].wake()  # the next leader
                else:
                    self._leading = False
        return request.outcome()  # type: ignore[no-any-return]

    def _commit_group(self, batch: list[_Request]) -> None:
        # A batch of rerunnable requests (puts) first runs without a savepoint
        # each: they almost never fail, and two statements less per put count
        # with sixteen threads queuing. If one does fail, the transaction is
        # rolled back and the batch runs again the careful way.
        if len(batch) > 1 and all(req.rerunnable for req in batch):
            try:
                self._write(lambda conn: self._run_batch(conn, batch, isolate=False))
            except _RequestFailed:
                pass
            except BaseException as exc:
                self._fail_batch(batch, exc)
                return
            else:
                return
            for req in batch:
                req.result, req.error = None, None
        try:
            self._write(lambda conn: self._run_batch(conn, batch, isolate=len(batch) > 1))
        except BaseException as exc:
            self._fail_batch(batch, exc)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Request], *, isolate: bool) -> None:
        """Run ``batch`` in the open transaction; ``isolate``: a savepoint per request."""
        for req in batch:
            if isolate:
                conn.execute("SAVEPOINT pmsq_req")
            mark = self._journal.mark()
            try:
                req.result = req.fn(conn)
            except PmsqError as exc:
                req.result = None
                req.error = exc
                self._journal.rewind(mark)
                if not isolate:
                    if len(batch) > 1:
                        raise _RequestFailed from exc
                    raise
                conn.execute("ROLLBACK TO pmsq_req")
            if isolate:
                conn.execute("RELEASE pmsq_req")
        self._flush_metrics(conn, batch[0].now)
        self._housekeeping(conn, batch[0].now)

    @staticmethod
    def _fail_batch(batch: list[_Request], exc: BaseException) -> None:
        # The transaction rolled back: nothing of this batch is stored.
        for req in batch:
            req.result = None
            if req.error is None:
                req.error = exc

    def _put_request(
        self, conn: Any, log: Journal, envelopes: Sequence[Envelope], now: float
    ) -> list[str]:
        if not log.enabled:
            return [put_one(conn, self._configs, e, now) for e in envelopes]
        topics = {e.topic for e in envelopes}
        fanout = len(envelopes) > 1 and len(topics) == 1 and None not in topics
        ids = [e.id for e in envelopes]
        return [
            put_one(
                conn,
                self._configs,
                e,
                now,
                log,
                [i for i in ids if i != e.id] if fanout else None,
            )
            for e in envelopes
        ]

    def put_in_transaction(
        self, envelopes: Sequence[Envelope], *, now: float, connection: Any
    ) -> list[str]:
        if not isinstance(connection, sqlite3.Connection):
            raise ConfigurationError(
                f"connection= must be a sqlite3.Connection for the SQLite backend, "
                f"got {type(connection).__name__}"
            )
        self._check_same_file(connection)
        plain = _PlainRows(connection)
        # Its own journal buffer: the caller's connection is not under our lock.
        log = Journal(self._journal.retention)
        try:
            if not connection.in_transaction:
                # Outside a transaction the savepoint below would be the outermost
                # one, and releasing it would commit the message on its own. Open
                # the app's transaction instead (IMMEDIATE: it is about to write),
                # so the message commits or rolls back with the app's next commit.
                plain.execute("BEGIN IMMEDIATE")
            plain.execute("SAVEPOINT pmsq_outbox")
            try:
                ids = self._put_request(plain, log, envelopes, now)
                log.flush(plain)
            except BaseException:
                plain.execute("ROLLBACK TO pmsq_outbox")
                plain.execute("RELEASE pmsq_outbox")
                raise
            plain.execute("RELEASE pmsq_outbox")
        except sqlite3.Error as exc:
            raise translate(exc, self.path, busy_timeout=self.busy_timeout) from exc
        return ids

    def _check_same_file(self, connection: sqlite3.Connection) -> None:
        try:
            rows = connection.execute("PRAGMA database_list").fetchall()
        except sqlite3.Error as exc:
            raise ConfigurationError(f"connection= is not usable: {exc}") from exc
        main = next((r for r in rows if r[1] == "main"), None)
        theirs = main[2] if main else ""
        if (
            self.path == ":memory:"
            or not theirs
            or (os.path.realpath(theirs) != os.path.realpath(self.path))
        ):
            raise ConfigurationError(
                f"connection= is open on {theirs or 'an in-memory database'!r}, but this "
                f"broker's store is {self.path!r}; the outbox needs a connection to the same file"
            )

    def _flush_metrics(self, conn: sqlite3.Connection, now: float, *, force: bool = False) -> None:
        mono = time.monotonic()
        if self._metrics and (force or mono - self._metrics_flushed >= 1.0):
            self._metrics.flush(conn, now)
            self._metrics_flushed = mono

    def _housekeeping(self, conn: sqlite3.Connection, now: float) -> None:
        # Time-gated pruning keeps the dedup and metrics tables bounded without
        # adding work to every put.
        mono = time.monotonic()
        if mono - self._last_housekeeping < _HOUSEKEEPING_EVERY:
            if self._pruning_behind:
                self._prune_journal(conn, now)
            return
        self._last_housekeeping = mono
        self._prune_journal(conn, now)
        conn.execute(
            "DELETE FROM pmsq_dedup WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
        )
        oldest_slot = int((now - 3600) // settle.SLOT_SECONDS)
        conn.execute("DELETE FROM pmsq_metrics WHERE slot != 0 AND slot < ?", (oldest_slot,))

    def _prune_journal(self, conn: sqlite3.Connection, now: float) -> None:
        # A bounded batch per pass; a pass that filled its batch (the journal
        # grows faster than one batch per pass) asks for another at the next
        # put commit instead of waiting for the next housekeeping round.
        if self._journal.retention is None:
            return
        deleted = journal.prune(conn, now - self._journal.retention)
        self._pruning_behind = deleted >= journal.PRUNE_BATCH

    # -- claims and settlement ---------------------------------------------------
    def claim(
        self,
        queue: str,
        n: int,
        *,
        now: float,
        tenant: str | None = None,
        consumer: str | None = None,
    ) -> list[Claimed]:
        if n <= 0:
            return []
        called = time.monotonic()
        # A lock-free probe first: idle consumers never take the write lock. A
        # consumer whose last claim here came back full is busy: skip it.
        scope = (queue, tenant)
        if scope not in self._busy:
            with self._reading() as conn:
                if not claims.has_ready(conn, queue, now, tenant):
                    return []
        got = self._write(
            lambda c: claims.claim(
                c,
                self._configs,
                queue,
                n,
                now=_after_wait(now, called),
                tenant=tenant,
                metrics=self._metrics,
                journal=self._journal,
                consumer=consumer,
            ),
            sync=False,
        )
        if len(got) == n:
            self._busy.add(scope)
        else:
            self._busy.discard(scope)
        return got

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        if not settlements:
            return []
        return self._settle_batch(settlements, now)

    def _settle_batch(self, settlements: Sequence[Settlement], now: float) -> list[bool]:
        # One request of the group commit: a worker's finished handlers share
        # one transaction and one fsync, and concurrent callers join it too.
        return self._grouped(lambda conn: self._settle_all(conn, settlements, now), now)

    def _settle_all(
        self, conn: sqlite3.Connection, settlements: Sequence[Settlement], now: float
    ) -> list[bool]:
        done = [False] * len(settlements)
        acks = [i for i, s in enumerate(settlements) if s.action == "ack"]
        if acks:
            acked = settle.settle_acks(
                conn,
                [
                    (
                        settlements[i].receipt.handle,
                        settlements[i].receipt.token,
                        settlements[i].duration_ms,
                    )
                    for i in acks
                ],
                now=now,
                journal=self._journal,
            )
            for i, row in zip(acks, acked, strict=True):
                if row is not None:
                    ms = settlements[i].duration_ms
                    self._metrics.add(row[0], row[1], processed=1, duration_ms=ms)
                    done[i] = True
        for i, s in enumerate(settlements):
            if s.action == "release":
                r = s.receipt
                done[i] = settle.settle_release(conn, r.handle, r.token, now, self._journal)
            elif s.action != "ack":
                done[i] = self._settle_failure(conn, s, now)
        return done

    def _settle_failure(self, conn: sqlite3.Connection, s: Settlement, now: float) -> bool:
        """A retry or a dead letter."""
        r = s.receipt
        failed = int(s.error_type is not None)
        if s.action == "retry":
            retried = settle.settle_retry(
                conn,
                r.handle,
                r.token,
                now=now,
                available_at=s.available_at,
                error_type=s.error_type,
                error=s.error,
                journal=self._journal,
                duration_ms=s.duration_ms,
            )
            if retried is None:
                return False
            self._metrics.add(
                retried[0], retried[1], retried=1, failed=failed, duration_ms=s.duration_ms
            )
            return True
        row = conn.execute(
            "SELECT queue, tenant FROM pmsq_messages WHERE seq = ? AND lease_token = ? "
            "AND state IN (0, 1)",
            (r.handle, r.token),
        ).fetchone()
        if row is None:
            return False
        settle.bury(
            conn,
            self._configs,
            r.handle,
            now=now,
            reason=s.reason,
            error_type=s.error_type,
            traceback=s.error,
            journal=self._journal,
            duration_ms=s.duration_ms,
        )
        self._metrics.add(row[0], row[1], dead=1, failed=failed, duration_ms=s.duration_ms)
        return True

    def extend(self, receipt: Receipt, seconds: float, *, now: float) -> float | None:
        called = time.monotonic()
        expires = [now + seconds]

        def go(c: sqlite3.Connection) -> bool:
            expires[0] = _after_wait(now, called) + seconds
            return settle.settle_extend(c, receipt.handle, receipt.token, expires[0])

        return expires[0] if self._write(go) else None

    # -- operators ----------------------------------------------------------------
    def dead_letters(
        self,
        queue: str,
        *,
        tenant: str | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredDeadLetter]:
        with self._reading() as conn:
            return admin.dead_letters(conn, queue, tenant, ids, limit)

    def redrive(
        self, queue: str, ids: Sequence[str] | None, *, now: float, tenant: str | None = None
    ) -> int:
        return self._write(lambda c: admin.redrive(c, queue, ids, now, tenant, self._journal))

    def purge(self, queue: str, ids: Sequence[str] | None, *, tenant: str | None = None) -> int:
        # The interface gives purge no clock: its journal event takes the system time.
        return self._write(
            lambda c: admin.purge(c, queue, ids, tenant, now=time.time(), journal=self._journal)
        )

    # -- history -------------------------------------------------------------------
    def set_history(self, retention: float | None) -> None:
        if retention is not None and not (
            isinstance(retention, (int, float))
            and not isinstance(retention, bool)
            and retention > 0
        ):
            raise ConfigurationError(
                f"history must be a retention in seconds > 0 (or a timedelta), or None for no "
                f"journal; got {retention!r}"
            )
        with self._lock:
            self._journal.retention = None if retention is None else float(retention)

    def history(
        self,
        *,
        message_id: str | None = None,
        dedup_id: str | None = None,
        correlation_id: str | None = None,
        key: str | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        limit: int = 1000,
    ) -> list[HistoryEvent]:
        with self._reading() as conn:
            ids = [message_id] if message_id is not None else [None]
            if dedup_id is not None:
                ids = [i for i in journal.resolve_dedup(conn, dedup_id) if message_id in (None, i)]
            events: list[HistoryEvent] = []
            for mid in ids:
                events.extend(
                    journal.query(
                        conn,
                        message_id=mid,
                        correlation_id=correlation_id,
                        key=key,
                        queue=queue,
                        tenant=None if tenant is None else tenant or "",
                        limit=limit,
                    )
                )
            return events

    def stats(self, queue: str | None = None, *, now: float, tenant: str | None = None) -> Stats:
        with self._lock:
            if self._metrics:
                # This process's own recent outcomes belong in its own snapshot.
                self._write(lambda c: self._flush_metrics(c, now, force=True))
            with self._reading() as conn:
                return admin.stats(conn, queue, now, tenant)

    def peek(
        self, queue: str, n: int, *, tenant: str | None = None
    ) -> list[tuple[Envelope, int, str]]:
        with self._reading() as conn:
            return admin.peek(conn, queue, n, tenant)

    # -- wake-ups ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _probing(self) -> Iterator[sqlite3.Connection]:
        """The read-only probe connection (the main one, locked, for an in-memory store)."""
        if self.path == ":memory:":
            with self._reading() as conn:
                yield conn
            return
        with self._probe_lock:
            self._check_open()
            try:
                if self._probe is None:
                    self._probe = sqlite3.connect(
                        self.path,
                        timeout=self.busy_timeout,
                        isolation_level=None,
                        check_same_thread=False,
                    )
                    self._probe.execute("PRAGMA query_only = 1")
                yield self._probe
            except sqlite3.Error as exc:
                raise translate(exc, self.path, busy_timeout=self.busy_timeout) from exc

    def wait_for_change(self, since: object | None, timeout: float) -> object:
        """``PRAGMA data_version`` of the probe connection: moves with every commit.

        An in-memory store has no other connection: only this process's own
        writes change it, and the broker hears of those directly, so its token
        never moves.
        """
        with self._probing() as conn:
            token = wake.data_version(conn)
        if token != since or timeout <= 0:
            return token
        time.sleep(timeout)
        with self._probing() as conn:
            return wake.data_version(conn)

    def ready_queues(self, queues: Sequence[str], *, now: float) -> Readiness:
        with self._probing() as conn:
            return wake.readiness(conn, queues, now)

    def once(
        self, message: Message, connection: Any, consumer: str | None = None
    ) -> contextlib.AbstractContextManager[bool]:
        """Record ``message`` for ``consumer`` in the app's SQLite database (``pmsq_once``).

        Raises:
            ConfigurationError: ``connection`` is not a ``sqlite3.Connection``.
        """
        return once_sqlite(message, connection, consumer)

    def next_due(self, queue: str, *, now: float) -> float | None:
        with self._reading() as conn:
            return claims.next_due(conn, queue, now)

    def has_ready(self, queue: str, *, now: float, tenant: str | None = None) -> bool:
        with self._reading() as conn:
            return claims.has_ready(conn, queue, now, tenant)

    def change_token(self) -> object:
        with self._reading() as conn:
            return conn.execute("PRAGMA data_version").fetchone()[0]

    def check(self) -> list[str]:
        with self._reading() as conn:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
        return problems

    def get_meta(self, key: str) -> str | None:
        with self._reading() as conn:
            row = conn.execute("SELECT v FROM pmsq_meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        if key == "schema_version":
            raise ConfigurationError("pmsq_meta key 'schema_version' is reserved for migrations")
        if value is None:
            self._write(lambda c: c.execute("DELETE FROM pmsq_meta WHERE k = ?", (key,)))
            return
        self._write(
            lambda c: c.execute(
                "INSERT INTO pmsq_meta (k, v) VALUES (?, ?) "
                "ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                (key, value),
            )
        )

    # -- moving stores -------------------------------------------------------------
    def export_messages(
        self, queue: str, *, after: str | None = None, limit: int = 500
    ) -> tuple[list[StoredMessage], str | None]:
        with self._reading() as conn:
            return transfer.export_messages(conn, queue, after, limit)

    def import_messages(self, records: Sequence[StoredMessage], *, now: float) -> int:
        return self._write(lambda c: transfer.import_messages(c, self._configs, records, now))

    def export_dedup(self, queue: str, *, now: float) -> list[DedupRecord]:
        with self._reading() as conn:
            return transfer.export_dedup(conn, queue, now)

    def import_dedup(self, records: Sequence[DedupRecord]) -> int:
        return self._write(lambda c: transfer.import_dedup(c, records))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._metrics:
                with contextlib.suppress(PmsqError):
                    self._write(lambda c: self._flush_metrics(c, time.time(), force=True))
            self._closed = True
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        with self._probe_lock, contextlib.suppress(sqlite3.Error):
            if self._probe is not None:
                self._probe.close()
