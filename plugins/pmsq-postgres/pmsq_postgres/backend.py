"""The PostgreSQL backend: a connection pool, short READ COMMITTED transactions, SKIP LOCKED claims.

``PostgresBackend`` is a facade over modules with one job each: ``runner``
(transactions on the pool, run again when the server aborts one),
``puts``, ``claims``, ``settle`` and ``lines`` (messages and their key
lines), ``outbox`` and ``once`` (writes in the app's transaction),
``admin``, ``transfer``, ``notify`` and ``upkeep`` (metrics and pruning),
and message control: ``control`` (cancel, reschedule), ``pauses``,
``circuit`` (the breaker and its probes) and ``expiry``.

Claims never wait for each other (``FOR UPDATE SKIP LOCKED``); producers
and consumers of one key meet on that key's row in ``keys``, which is what
keeps per-key order when sequence ids commit out of order (see
``pmsq_postgres.schema``).

Time comes from the ``now`` argument of every call (the broker's clock), as
for every backend, so a ``ManualClock`` drives leases, delays and dedup
windows in tests. In production all processes should keep their clocks in
sync (NTP), exactly as with several processes sharing one SQLite file.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from pmsq.backends.base import Backend, Capabilities
from pmsq.backends.control_family import Control
from pmsq.backends.families import Inspect, Once, Settings, TransactionalPut, Transfer
from pmsq.backends.sqlkit.metrics import Metrics
from pmsq.backends.types import (
    Claimed,
    DedupRecord,
    Envelope,
    PauseRecord,
    Readiness,
    Receipt,
    Settlement,
    StoredDeadLetter,
    StoredMessage,
)
from pmsq.config import QueueConfig
from pmsq.errors import ConfigurationError, PmsqError
from pmsq.message import Message
from pmsq.stats import Stats
from pmsq_postgres import admin, claims, control, outbox, puts, settle, transfer, wake
from pmsq_postgres import pauses as pause_rows
from pmsq_postgres.errors import translate
from pmsq_postgres.identity import IDENTITY_SQL, DatabaseIdentity
from pmsq_postgres.notify import Listener, channel_name
from pmsq_postgres.once import begin_if_idle, once_postgres
from pmsq_postgres.presence import PostgresPresence
from pmsq_postgres.runner import Runner, create_schema
from pmsq_postgres.schedules import PostgresSchedules
from pmsq_postgres.tx import SqlText, Tx
from pmsq_postgres.upkeep import Upkeep
from pmsq_postgres.url import parse_url

__all__ = ["PostgresBackend"]

T = TypeVar("T")
_SYNC = {"full": "on", "normal": "off", "memory": "off"}
_RESERVED_META = ("schema_version", "store")


class PostgresBackend(
    PostgresSchedules,
    PostgresPresence,
    Backend,
    TransactionalPut,
    Once,
    Transfer,
    Settings,
    Inspect,
    Control,
):
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
        # Which database and server this is, to refuse an app connection to another one.
        self._identity = DatabaseIdentity(
            lambda: self._read(lambda tx: tx.one(IDENTITY_SQL)), self._where
        )
        self._sql = SqlText(parsed.schema)
        self._configs = puts.ConfigReader()
        self._metrics = Metrics()
        #: Whether this backend sends NOTIFY wake-ups (``?notify=on``); a broker
        #: that sees it may also listen (``add_wake_listener``).
        self.notifies = parsed.notify
        # lock_timeout=0 would mean "wait for ever": busy_timeout=0 waits 1 ms at most.
        lock_ms = max(1, int(self.busy_timeout * 1000))
        options = f"-c synchronous_commit={_SYNC[durability]} -c lock_timeout={lock_ms}"
        connect_kwargs: dict[str, Any] = {"autocommit": True, "options": options}
        create_schema(parsed.conninfo, connect_kwargs, self._sql, self._where, self.busy_timeout)
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            parsed.conninfo,
            min_size=parsed.pool_min,
            max_size=parsed.pool_size,
            kwargs=connect_kwargs,
            timeout=max(self.busy_timeout, 0.1),
            name=f"pmsq-{parsed.schema}",
            open=False,
        )
        pool.open(wait=False)
        self._runner = Runner(
            pool, self._sql, self._where, self.busy_timeout, self.notifies, self._metrics
        )
        self._upkeep = Upkeep(self._runner, self._metrics)
        self._listener = Listener(parsed.conninfo, channel_name(parsed.schema))

    def __repr__(self) -> str:
        return f"<PostgresBackend {self._where}>"

    # -- plumbing the facade's methods share -------------------------------------------
    def _run(self, fn: Callable[[Tx], T], *, relaxed: bool = False) -> T:
        return self._runner.run(fn, relaxed=relaxed)

    def _read(self, fn: Callable[[Tx], T]) -> T:
        return self._runner.read(fn)

    def _check_open(self) -> None:
        self._runner.check_open()

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
        self._upkeep.housekeeping(now)
        return ids

    def put_in_transaction(
        self, envelopes: Sequence[Envelope], *, now: float, connection: Any
    ) -> list[str]:
        """The transactional outbox: write in the app's open transaction, never commit."""
        return outbox.put_in_transaction(
            self._runner, self._configs, connection, envelopes, now, self._identity
        )

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

        out = self._run(lambda tx: settle.settle_batch(tx, self._configs, settlements, now))
        self._upkeep.flush_metrics(now)
        return out

    def extend(self, receipt: Receipt, seconds: float, *, now: float) -> float | None:
        expires = now + seconds
        ok = self._run(lambda tx: settle.extend(tx, receipt, expires))
        return expires if ok else None

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
        self._upkeep.flush_metrics(now, force=True)
        return self._read(lambda tx: admin.stats(tx, queue, now, tenant))

    def peek(
        self, queue: str, n: int, *, tenant: str | None = None
    ) -> list[tuple[Envelope, int, str]]:
        return self._read(lambda tx: admin.peek(tx, queue, n, tenant))

    def check(self) -> list[str]:
        """Check the key-line invariants; return problems found (empty = healthy)."""
        return self._run(admin.check)

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

    # -- message control -------------------------------------------------------------------
    def _in_transaction(self, fn: Callable[[Tx], T], connection: Any, what: str) -> T:
        if connection is None:
            return self._run(fn)
        return outbox.in_app_transaction(
            self._runner, connection, fn, what=what, identity=self._identity
        )

    def cancel(
        self,
        queue: str,
        message_ids: Sequence[str],
        *,
        tenant: str | None = None,
        now: float,
        connection: Any = None,
    ) -> list[str]:
        return self._in_transaction(
            lambda tx: control.cancel(tx, queue, message_ids, tenant),
            connection,
            "cancel(connection=...)",
        )

    def cancel_key(
        self,
        queue: str,
        key: str,
        *,
        tenant: str | None,
        now: float,
        connection: Any = None,
    ) -> list[str]:
        return self._in_transaction(
            lambda tx: control.cancel_key(tx, queue, key, tenant),
            connection,
            "cancel(connection=...)",
        )

    def reschedule(
        self,
        queue: str,
        message_id: str,
        available_at: float,
        *,
        tenant: str | None = None,
        now: float,
    ) -> bool:
        return self._run(
            lambda tx: control.reschedule(tx, queue, message_id, available_at, tenant, now)
        )

    def pause(self, record: PauseRecord, *, now: float) -> None:
        self._run(lambda tx: pause_rows.upsert_pause(tx, record))

    def resume(self, queue: str, tenant: str | None, key: str | None, *, now: float) -> bool:
        def go(tx: Tx) -> bool:
            tx.notify.add(queue)  # idle consumers of the queue look again at once
            return pause_rows.delete_pause(tx, pause_rows.scope_of(queue, tenant, key), now)

        return self._run(go)

    def pauses(self, *, now: float) -> list[PauseRecord]:
        return self._read(lambda tx: pause_rows.list_pauses(tx, now))

    # -- exactly-once and wake-ups --------------------------------------------------------
    def once(
        self, message: Message, connection: Any, consumer: str | None = None
    ) -> contextlib.AbstractContextManager[bool]:
        """The PostgreSQL form of ``broker.once``: the record goes through the app's connection.

        Raises:
            ConfigurationError: ``connection`` is not a psycopg connection to this database.
        """
        try:
            self._identity.check(
                begin_if_idle(connection, "once(connection=...)"), "once(connection=...)"
            )
        except psycopg.Error as exc:
            raise translate(exc, self._where, busy_timeout=self.busy_timeout) from exc
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
        if self._runner.closed:
            return
        with contextlib.suppress(PmsqError):
            self._upkeep.flush_metrics(time.time(), force=True)
        self._runner.closed = True
        self._listener.stop()
        self._runner.pool.close()
