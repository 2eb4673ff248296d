"""The PostgreSQL backend: a connection pool, short READ COMMITTED transactions, SKIP LOCKED claims.

Concurrency model: every call borrows a pooled connection and runs one short
transaction. Claims never wait for each other (``FOR UPDATE SKIP LOCKED``);
producers and consumers of one key meet on that key's row in ``keys``, which
is what keeps per-key order when sequence ids commit out of order (see
``pmsq_postgres.schema``). A transaction that PostgreSQL aborts as a deadlock
victim or serialization failure was rolled back whole and is simply run
again.

Time comes from the ``now`` argument of every call (the broker's clock), as
for every backend, so a ``ManualClock`` drives leases, delays and dedup
windows in tests. In production all processes should keep their clocks in
sync (NTP), exactly as with several processes sharing one SQLite file.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from pmsq.backends.base import Backend, Capabilities
from pmsq.backends.families import Inspect, Once, Settings, TransactionalPut, Transfer
from pmsq.backends.types import (
    Claimed,
    DedupRecord,
    Envelope,
    Readiness,
    Receipt,
    Settlement,
    StoredDeadLetter,
    StoredMessage,
)
from pmsq.config import QueueConfig
from pmsq.errors import ConfigurationError, PmsqError, StorageError
from pmsq.message import Message
from pmsq.stats import Stats
from pmsq_postgres import admin, claims, metrics, puts, settle, transfer, wake
from pmsq_postgres.errors import RETRYABLE, translate
from pmsq_postgres.notify import Listener, channel_name
from pmsq_postgres.once import begin_if_idle, once_postgres
from pmsq_postgres.schema import SchemaError, create_or_migrate
from pmsq_postgres.tx import SqlText, Tx
from pmsq_postgres.url import parse_url

__all__ = ["PostgresBackend"]

T = TypeVar("T")
_SYNC = {"full": "on", "normal": "off", "memory": "off"}
_HOUSEKEEPING_EVERY = 30.0
_MAX_TRIES = 8
_RESERVED_META = ("schema_version", "store")


class _Again(Exception):
    """The transaction was rolled back by the server and may simply run again."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class PostgresBackend(Backend, TransactionalPut, Once, Transfer, Settings, Inspect):
    """pmsq on PostgreSQL: the same guarantees as SQLite, shared by many hosts.

    Args:
        url: ``postgresql://user:password@host:port/dbname`` with optional query
            parameters ``schema`` (default ``pmsq``), ``pool_size`` (default 10)
            and ``pool_min`` (default 1); other parameters go to libpq.
        durability: ``"full"`` (``synchronous_commit=on``: a returned put
            survives a server crash) or ``"normal"`` / ``"memory"``
            (``synchronous_commit=off``: a server crash may lose the last
            fraction of a second of commits; the store stays consistent).
        busy_timeout: Seconds to wait for a pooled connection or a row lock.
        schema: Schema for pmsq's tables (overrides ``?schema=``).
        pool_size: Largest number of pooled connections (overrides ``?pool_size=``).
        pool_min: Connections kept open while idle (overrides ``?pool_min=``).
        notify: Send NOTIFY on the store's channel when messages become
            deliverable, so idle workers of every process wake at once
            (``wait_for_change``; overrides ``?notify=on``). Off by default:
            PostgreSQL serialises the commits of notifying transactions, which
            costs concurrent producers about half their throughput.

    Raises:
        ConfigurationError: a bad URL or option.
        BackendUnavailable: the server cannot be reached.
        StorageError: the schema holds foreign tables or a newer pmsq's store.
    """

    capabilities = Capabilities()
    name = "PostgreSQL"

    def __init__(
        self,
        url: str,
        *,
        durability: str = "full",
        busy_timeout: float = 30.0,
        schema: str | None = None,
        pool_size: int | None = None,
        pool_min: int | None = None,
        notify: bool | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) for the PostgreSQL backend: {', '.join(sorted(unknown))}; "
                "it takes durability, busy_timeout, schema, pool_size, pool_min and notify"
            )
        if durability not in _SYNC:
            raise ConfigurationError(
                f"durability must be 'full', 'normal' or 'memory', got {durability!r}"
            )
        parsed = parse_url(
            url, schema=schema, pool_size=pool_size, pool_min=pool_min, notify=notify
        )
        self.url = parsed.display
        self.schema = parsed.schema
        self.durability = durability
        self.busy_timeout = float(busy_timeout)
        self._where = f"{parsed.display} (schema {parsed.schema!r})"
        self._sql = SqlText(parsed.schema)
        self._configs = puts.ConfigReader()
        self._metrics = metrics.Metrics()
        self._flush_lock = threading.Lock()
        self._metrics_flushed = time.monotonic()
        self._last_housekeeping = 0.0
        #: Whether this backend sends NOTIFY wake-ups (``?notify=on``); a broker
        #: that sees it may also listen (``add_wake_listener``).
        self.notifies = parsed.notify
        self._closed = False
        # lock_timeout=0 would mean "wait for ever": busy_timeout=0 waits 1 ms at most.
        lock_ms = max(1, int(self.busy_timeout * 1000))
        options = f"-c synchronous_commit={_SYNC[durability]} -c lock_timeout={lock_ms}"
        connect_kwargs: dict[str, Any] = {"autocommit": True, "options": options}
        self._create_schema(parsed.conninfo, connect_kwargs)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            parsed.conninfo,
            min_size=parsed.pool_min,
            max_size=parsed.pool_size,
            kwargs=connect_kwargs,
            timeout=max(self.busy_timeout, 0.1),
            name=f"pmsq-{parsed.schema}",
            open=False,
        )
        self._pool.open(wait=False)
        self._listener = Listener(parsed.conninfo, channel_name(parsed.schema))

    def __repr__(self) -> str:
        return f"<PostgresBackend {self._where}>"

    # -- connections and transactions ---------------------------------------------
    def _create_schema(self, conninfo: str, kwargs: dict[str, Any]) -> None:
        try:
            # A first contact that fails fast and says why (the pool would only time out).
            first: dict[str, Any] = dict(kwargs)
            if "connect_timeout" not in conninfo:
                first["connect_timeout"] = 10
            with psycopg.connect(conninfo, **first) as conn:
                create_or_migrate(conn, self._sql)
        except SchemaError as exc:
            raise StorageError(
                f"PostgreSQL store {self._where} cannot be opened by pmsq: {exc}; "
                "nothing was changed"
            ) from exc
        except psycopg.Error as exc:
            raise translate(exc, self._where, busy_timeout=self.busy_timeout) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"the broker for {self._where} is closed")

    def _run(self, fn: Callable[[Tx], T], *, relaxed: bool = False) -> T:
        """Run ``fn`` in one transaction on a pooled connection; commit; count its outcomes.

        ``relaxed`` commits without waiting for the WAL flush. Only claims use
        it: losing a claim to a server crash merely makes its message
        deliverable again, which at-least-once delivery allows, and any later
        durable commit (the ack) flushes the claim's WAL record first.
        """
        self._check_open()
        tries = 0
        while True:
            tries += 1
            try:
                result, tx = self._transaction(fn, relaxed)
            except _Again as again:
                if tries >= _MAX_TRIES:
                    raise translate(
                        again.cause, self._where, busy_timeout=self.busy_timeout
                    ) from again.cause
                time.sleep(random.uniform(0, 0.002 * tries))
                continue
            for queue, tenant, counts in tx.outcomes:
                self._metrics.add(queue, tenant, **counts)
            return result

    def _transaction(self, fn: Callable[[Tx], T], relaxed: bool) -> tuple[T, Tx]:
        # Pipeline mode: BEGIN travels with the first statement and COMMIT with
        # the last ones whose results nobody waits for, so a transaction costs
        # one round trip per result actually read, not one per statement.
        committing = False
        try:
            with self._pool.connection() as conn:
                tx = Tx(conn, self._sql)
                try:
                    with conn.pipeline():
                        conn.execute("BEGIN")
                        if relaxed:
                            conn.execute("SET LOCAL synchronous_commit = off")
                        result = fn(tx)
                        if tx.notify and self.notifies:
                            self._send_notify(tx)
                        committing = True
                        conn.execute("COMMIT")
                except BaseException as exc:
                    if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                        with contextlib.suppress(psycopg.Error):
                            conn.execute("ROLLBACK")
                    if not isinstance(exc, psycopg.Error):
                        raise
                    state = getattr(exc.diag, "sqlstate", None)
                    if state in RETRYABLE or (
                        not committing and isinstance(exc, psycopg.OperationalError)
                    ):
                        # Rolled back whole (or a pooled connection the server had
                        # dropped, before COMMIT was sent): safe to run again.
                        raise _Again(exc) from exc
                    raise translate(
                        exc, self._where, busy_timeout=self.busy_timeout, committing=committing
                    ) from exc
                return result, tx
        except PoolTimeout as exc:
            raise translate(exc, self._where, busy_timeout=self.busy_timeout) from exc

    def _read(self, fn: Callable[[Tx], T]) -> T:
        """Run a single-statement read outside any explicit transaction (autocommit)."""
        self._check_open()
        try:
            with self._pool.connection() as conn:
                return fn(Tx(conn, self._sql))
        except PoolTimeout as exc:
            raise translate(exc, self._where, busy_timeout=self.busy_timeout) from exc
        except psycopg.Error as exc:
            raise translate(exc, self._where, busy_timeout=self.busy_timeout) from exc

    def _send_notify(self, tx: Tx) -> None:
        tx.execute(
            "SELECT pg_notify(%s, q) FROM unnest(%s::text[]) AS q",
            (channel_name(self.schema), sorted(tx.notify)),
        )

    # -- configuration ---------------------------------------------------------------
    def declare_queue(self, config: QueueConfig) -> None:
        text = puts.dump_config(config)
        self._configs.forget(config.name)
        self._run(
            lambda tx: tx.execute(
                "INSERT INTO {s}.queues (name, config) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET config = excluded.config",
                (config.name, text),
            )
        )

    def ensure_queue(self, config: QueueConfig) -> None:
        # Insert-if-absent: a process that merely uses a queue never resets
        # the options another process declared a moment before.
        text = puts.dump_config(config)
        self._run(
            lambda tx: tx.execute(
                "INSERT INTO {s}.queues (name, config) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (config.name, text),
            )
        )

    def queue_config(self, name: str) -> QueueConfig | None:
        row = self._read(
            lambda tx: tx.one("SELECT config FROM {s}.queues WHERE name = %s", (name,))
        )
        return None if row is None else self._configs.decode(row[0])

    def list_queues(self) -> list[QueueConfig]:
        rows = self._read(lambda tx: tx.all("SELECT config FROM {s}.queues ORDER BY name"))
        return [self._configs.decode(r[0]) for r in rows]

    def bind(self, pattern: str, queue: str) -> None:
        def go(tx: Tx) -> None:
            self._configs.get(tx, queue)
            tx.execute(
                "INSERT INTO {s}.bindings (pattern, queue) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (pattern, queue),
            )

        self._run(go)

    def unbind(self, pattern: str, queue: str) -> bool:
        row = self._run(
            lambda tx: tx.one(
                "DELETE FROM {s}.bindings WHERE pattern = %s AND queue = %s RETURNING 1",
                (pattern, queue),
            )
        )
        return row is not None

    def bindings(self) -> list[tuple[str, str]]:
        rows = self._read(
            lambda tx: tx.all("SELECT pattern, queue FROM {s}.bindings ORDER BY 1, 2")
        )
        return [(r[0], r[1]) for r in rows]

    # -- puts ------------------------------------------------------------------------
    def put_many(self, envelopes: Sequence[Envelope], *, now: float) -> list[str]:
        ids = self._run(lambda tx: puts.put_many(tx, self._configs, envelopes, now))
        self._housekeeping(now)
        return ids

    def put_in_transaction(
        self, envelopes: Sequence[Envelope], *, now: float, connection: Any
    ) -> list[str]:
        """The transactional outbox: write in the app's open transaction, never commit."""
        self._check_open()
        conn = begin_if_idle(connection, "put(connection=...)")
        tx = Tx(conn, self._sql)
        try:
            found = tx.one("SELECT to_regclass(%s) IS NOT NULL", (f'"{self.schema}".messages',))
            if not found or not found[0]:
                raise ConfigurationError(
                    f"connection= must reach the database of the pmsq store {self._where}; "
                    f"its database has no {self.schema}.messages table"
                )
            tx.execute("SAVEPOINT pmsq_outbox")
            try:
                ids = puts.put_many(tx, self._configs, envelopes, now)
                if tx.notify and self.notifies:
                    self._send_notify(tx)  # delivered when (and if) the app commits
            except BaseException:
                tx.execute("ROLLBACK TO SAVEPOINT pmsq_outbox")
                tx.execute("RELEASE SAVEPOINT pmsq_outbox")
                raise
            tx.execute("RELEASE SAVEPOINT pmsq_outbox")
        except psycopg.Error as exc:
            raise translate(exc, self._where, busy_timeout=self.busy_timeout) from exc
        return ids

    def _housekeeping(self, now: float) -> None:
        # Time-gated pruning keeps the dedup, metrics and keys tables bounded
        # without adding work to every put. SKIP LOCKED: it never waits on,
        # or deadlocks with, the transactions it cleans up after.
        mono = time.monotonic()
        if mono - self._last_housekeeping < _HOUSEKEEPING_EVERY:
            return
        self._last_housekeeping = mono
        oldest_slot = int((now - 3600) // metrics.SLOT_SECONDS)

        def go(tx: Tx) -> None:
            tx.execute(
                "DELETE FROM {s}.dedup WHERE ctid IN (SELECT ctid FROM {s}.dedup "
                "WHERE expires_at <= %s LIMIT 10000 FOR UPDATE SKIP LOCKED)",
                (now,),
            )
            tx.execute(
                "DELETE FROM {s}.keys WHERE ctid IN (SELECT ctid FROM {s}.keys WHERE live = 0 "
                "LIMIT 10000 FOR UPDATE SKIP LOCKED)"
            )
            tx.execute(
                "DELETE FROM {s}.metrics WHERE ctid IN (SELECT ctid FROM {s}.metrics "
                "WHERE slot != 0 AND slot < %s LIMIT 10000 FOR UPDATE SKIP LOCKED)",
                (oldest_slot,),
            )

        with contextlib.suppress(PmsqError):
            self._run(go, relaxed=True)

    # -- claims and settlement -----------------------------------------------------------
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
        return self._run(
            lambda tx: claims.claim(tx, self._configs, queue, n, now=now, tenant=tenant),
            relaxed=True,
        )

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        # One transaction for a worker's whole round of finished handlers.
        if not settlements:
            return []

        def go(tx: Tx) -> list[bool]:
            done = [False] * len(settlements)
            acks = [i for i, s in enumerate(settlements) if s.action == "ack"]
            if acks:
                oks = settle.ack(
                    tx,
                    [settlements[i].receipt for i in acks],
                    [settlements[i].duration_ms for i in acks],
                )
                for i, ok in zip(acks, oks, strict=True):
                    done[i] = ok
            for i, s in enumerate(settlements):
                if s.action == "retry":
                    done[i] = settle.retry(
                        tx,
                        s.receipt,
                        now=now,
                        available_at=s.available_at,
                        error_type=s.error_type,
                        error=s.error,
                        duration_ms=s.duration_ms,
                    )
                elif s.action == "dead":
                    done[i] = self._bury(tx, s, now)
            releases = [i for i, s in enumerate(settlements) if s.action == "release"]
            if releases:
                oks = settle.release(tx, [settlements[i].receipt for i in releases], now)
                for i, ok in zip(releases, oks, strict=True):
                    done[i] = ok
            return done

        out = self._run(go)
        self._flush_metrics(now)
        return out

    def _bury(self, tx: Tx, s: Settlement, now: float) -> bool:
        done = settle.bury(
            tx,
            self._configs,
            s.receipt.queue,
            s.receipt.handle,
            token=s.receipt.token,
            now=now,
            reason=s.reason,
            error_type=s.error_type,
            traceback=s.error,
        )
        if done is None:
            return False
        tx.count(
            done[0],
            done[1],
            dead=1,
            failed=int(s.error_type is not None),
            duration_ms=s.duration_ms,
        )
        return True

    def extend(self, receipt: Receipt, seconds: float, *, now: float) -> float | None:
        expires = now + seconds
        ok = self._run(lambda tx: settle.extend(tx, receipt, expires))
        return expires if ok else None

    def _flush_metrics(self, now: float, *, force: bool = False) -> None:
        if not self._metrics:
            return
        with self._flush_lock:
            mono = time.monotonic()
            if not force and mono - self._metrics_flushed < 1.0:
                return
            self._metrics_flushed = mono
            counts, hist = self._metrics.take()
            if not counts and not hist:
                return
            try:
                self._run(lambda tx: metrics.write(tx, counts, hist, now), relaxed=True)
            except BaseException:
                self._metrics.give_back(counts, hist)
                raise

    # -- operators -------------------------------------------------------------------------
    def dead_letters(
        self,
        queue: str,
        *,
        tenant: str | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredDeadLetter]:
        return self._read(lambda tx: admin.dead_letters(tx, queue, tenant, ids, limit))

    def redrive(
        self, queue: str, ids: Sequence[str] | None, *, now: float, tenant: str | None = None
    ) -> int:
        return self._run(lambda tx: admin.redrive(tx, queue, ids, now, tenant))

    def purge(self, queue: str, ids: Sequence[str] | None, *, tenant: str | None = None) -> int:
        return self._run(lambda tx: admin.purge(tx, queue, ids, tenant))

    def stats(self, queue: str | None = None, *, now: float, tenant: str | None = None) -> Stats:
        # This process's own recent outcomes belong in its own snapshot.
        self._flush_metrics(now, force=True)
        return self._read(lambda tx: admin.stats(tx, queue, now, tenant))

    def peek(
        self, queue: str, n: int, *, tenant: str | None = None
    ) -> list[tuple[Envelope, int, str]]:
        return self._read(lambda tx: admin.peek(tx, queue, n, tenant))

    def check(self) -> list[str]:
        """Check the key-line invariants; return problems found (empty = healthy)."""
        return self._run(_check_lines)

    def get_meta(self, key: str) -> str | None:
        row = self._read(lambda tx: tx.one("SELECT v FROM {s}.meta WHERE k = %s", (key,)))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        if key in _RESERVED_META:
            raise ConfigurationError(f"meta key {key!r} is reserved for pmsq's own bookkeeping")
        if value is None:
            self._run(lambda tx: tx.execute("DELETE FROM {s}.meta WHERE k = %s", (key,)))
            return
        self._run(
            lambda tx: tx.execute(
                "INSERT INTO {s}.meta (k, v) VALUES (%s, %s) "
                "ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                (key, value),
            )
        )

    # -- moving stores -------------------------------------------------------------------
    def export_messages(
        self, queue: str, *, after: str | None = None, limit: int = 500
    ) -> tuple[list[StoredMessage], str | None]:
        return self._read(lambda tx: transfer.export_messages(tx, queue, after, limit))

    def import_messages(self, records: Sequence[StoredMessage], *, now: float) -> int:
        return self._run(lambda tx: transfer.import_messages(tx, self._configs, records, now))

    def export_dedup(self, queue: str, *, now: float) -> list[DedupRecord]:
        return self._read(lambda tx: transfer.export_dedup(tx, queue, now))

    def import_dedup(self, records: Sequence[DedupRecord]) -> int:
        return self._run(lambda tx: transfer.import_dedup(tx, records))

    # -- exactly-once and wake-ups --------------------------------------------------------
    def once(
        self, message: Message, connection: Any, consumer: str | None = None
    ) -> contextlib.AbstractContextManager[bool]:
        """The PostgreSQL form of ``broker.once``: the record goes through the app's connection.

        Raises:
            ConfigurationError: ``connection`` is not a psycopg connection to this database.
        """
        return once_postgres(message, connection, consumer, self._sql)

    def wait_for_change(self, since: object | None, timeout: float) -> object:
        """A token of ``(notifications heard, WAL position)``.

        With ``notify`` on, the wait ends the moment a NOTIFY of this store
        arrives (from any process); the WAL position is the safety net for
        writes that send none, and the only signal with ``notify`` off.
        """
        self._check_open()
        heard = since[0] if isinstance(since, tuple) else None
        if self.notifies:
            heard = self._listener.wait_past(heard, 0.0)
        lsn = self._read(wake.wal_position)
        if lsn is not None and (heard, lsn) != since:
            return (heard, lsn)
        if timeout > 0:
            if self.notifies:
                heard = self._listener.wait_past(heard, timeout)
            else:
                time.sleep(timeout)
            lsn = self._read(wake.wal_position)
        # An unreadable WAL position (a standby, a restricted role) proves nothing.
        return (heard, lsn if lsn is not None else object())

    def ready_queues(self, queues: Sequence[str], *, now: float) -> Readiness:
        if not queues:
            return Readiness(frozenset())
        return self._read(lambda tx: wake.readiness(tx, queues, now))

    def close(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(PmsqError):
            self._flush_metrics(time.time(), force=True)
        self._closed = True
        self._listener.stop()
        self._pool.close()


def _check_lines(tx: Tx) -> list[str]:
    problems: list[str] = []
    for q, t, k, live, actual in tx.all(
        "SELECT k.queue, k.tenant, k.key, k.live, count(m.seq) FROM {s}.keys k "
        "LEFT JOIN {s}.messages m ON m.queue = k.queue AND m.tenant = k.tenant "
        "AND m.key = k.key AND m.line GROUP BY 1, 2, 3, 4 HAVING k.live != count(m.seq)"
    ):
        problems.append(f"key {k!r} of queue {q!r} tenant {t!r}: live={live}, line has {actual}")
    for q, t, k, heads, first_is_head in tx.all(
        "SELECT queue, tenant, key, count(*) FILTER (WHERE head), "
        "(array_agg(head ORDER BY kpos))[1] FROM {s}.messages WHERE line "
        "GROUP BY 1, 2, 3 HAVING count(*) FILTER (WHERE head) != 1 "
        "OR NOT (array_agg(head ORDER BY kpos))[1]"
    ):
        problems.append(
            f"key {k!r} of queue {q!r} tenant {t!r}: {heads} heads, first in line is "
            f"{'' if first_is_head else 'not '}the head"
        )
    orphans = tx.one(
        "SELECT count(*) FROM {s}.messages m WHERE m.line AND NOT EXISTS (SELECT 1 FROM "
        "{s}.keys k WHERE k.queue = m.queue AND k.tenant = m.tenant AND k.key = m.key)"
    )[0]
    if orphans:
        problems.append(f"{orphans} messages are in a key line that has no keys row")
    return problems
