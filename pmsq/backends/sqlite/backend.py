"""The SQLite backend: one file, WAL, every write in a ``BEGIN IMMEDIATE`` transaction.

``SQLiteBackend`` is a facade: each method hands its work to the module
that does that job.

- ``store``: the connection, its lock and transactions.
- ``group_commit``: puts, claims, settlements and lease extensions of
  concurrent threads share one transaction and one fsync.
- ``puts``, ``claims``, ``settle``: storing, leasing and settling messages,
  inside a transaction; ``lines``: their key-line bookkeeping.
- ``outbox``: puts through the app's own connection (``pmsq.once`` records
  consumed messages in it the same way).
- ``wake``: the probes idle consumers use to learn that work arrived.
- ``admin``, ``settings``, ``journal``, ``transfer``: dead letters and
  stats, queue configs and meta, history, moving stores.
- ``upkeep``: buffered metrics and pruning that ride along with writes.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pmsq.backends.base import Backend, Capabilities
from pmsq.backends.families import History, Inspect, Once, Settings, TransactionalPut, Transfer
from pmsq.backends.sqlite import (
    admin,
    claims,
    journal,
    outbox,
    puts,
    settings,
    settle,
    transfer,
    wake,
    wal,
)
from pmsq.backends.sqlite.control import SQLiteControl
from pmsq.backends.sqlite.group_commit import GroupCommit
from pmsq.backends.sqlite.journal import Journal
from pmsq.backends.sqlite.presence import SQLitePresence
from pmsq.backends.sqlite.puts import ConfigReader
from pmsq.backends.sqlite.schedules import SQLiteSchedules
from pmsq.backends.sqlite.store import SYNC, Durability, Store, after_wait, parse_sqlite_url
from pmsq.backends.sqlite.upkeep import Upkeep
from pmsq.backends.sqlkit.metrics import Metrics
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
#: Journal retention when none is given: three days.
DEFAULT_HISTORY = 3 * 86400.0


def _check_retention(retention: float | None) -> float | None:
    if retention is not None and not (
        isinstance(retention, (int, float)) and not isinstance(retention, bool) and retention > 0
    ):
        raise ConfigurationError(
            f"history must be a retention in seconds > 0 (or a timedelta), or None for no "
            f"journal; got {retention!r}"
        )
    return None if retention is None else float(retention)


class SQLiteBackend(
    SQLiteSchedules,
    SQLitePresence,
    SQLiteControl,
    Backend,
    TransactionalPut,
    Once,
    History,
    Transfer,
    Settings,
    Inspect,
):
    """The reference backend: a SQLite file (or memory) shared by threads and processes.

    Args:
        url: ``sqlite:///path.db`` or a plain path.
        durability: ``"full"`` (fsync every commit: survives power loss),
            ``"normal"`` (survives a process crash) or ``"memory"`` (no fsync; tests).
        busy_timeout: Seconds to wait for another process's write lock.
        history: Seconds the message journal keeps events (``None``: no journal).
        checkpoints: ``"auto"``: pmsq sizes and checkpoints the WAL to fit the
            disk; ``"external"``: it never checkpoints (for a WAL replication
            tool such as Litestream, which checkpoints after copying).

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
        checkpoints: str = "auto",
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) for the SQLite backend: {', '.join(sorted(unknown))}; "
                "it takes durability, busy_timeout, history and checkpoints"
            )
        if durability not in SYNC:
            raise ConfigurationError(
                f"durability must be 'full', 'normal' or 'memory', got {durability!r}"
            )
        self.path = parse_sqlite_url(url)
        self.url = url
        self.durability = durability
        self.busy_timeout = busy_timeout
        self._configs = ConfigReader()
        self._metrics = Metrics()
        # Journal events of the transaction in progress (used under the store's lock).
        self._journal = Journal(_check_retention(history))
        self._store = Store(
            self.path,
            durability,
            busy_timeout,
            self._configs,
            self._journal,
            url=url,
            wal=wal.WalGuard(self.path, wal.check_checkpoints(checkpoints)),
            metrics=self._metrics,
        )
        self._lock = self._store.lock
        self._upkeep = Upkeep(self._metrics, self._journal)
        # Late-bound through self._write, so a test can count the transactions.
        self._group = GroupCommit(
            lambda fn, *, sync: self._write(fn, sync=sync),
            self._journal,
            self._upkeep.after_batch,
            self._metrics,
        )
        # Circuit probes this process leased (claims add, settlements take).
        self._probes: set[str] = set()
        self._claims = claims.Claimer(
            self._store, self._group, self._configs, self._metrics, self._journal, self._probes
        )
        self._probe = wake.Probe(self._store)

    # -- plumbing the facade's methods share ------------------------------------
    @property
    def _conn(self) -> sqlite3.Connection:
        return self._store.conn

    @property
    def _pending(self) -> list[Any]:
        return self._group.pending

    def _reading(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._store.reading()

    def _write(self, fn: Callable[[sqlite3.Connection], T], *, sync: bool = True) -> T:
        return self._store.write(fn, sync=sync)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._store.reading() as conn:
            return fn(conn)

    # -- configuration -------------------------------------------------------
    def declare_queue(self, config: QueueConfig) -> None:
        self._write(lambda c: settings.declare_queue(c, config))

    def ensure_queue(self, config: QueueConfig) -> None:
        self._write(lambda c: settings.ensure_queue(c, config))

    def queue_config(self, name: str) -> QueueConfig | None:
        return self._read(lambda c: settings.queue_config(c, name))

    def list_queues(self) -> list[QueueConfig]:
        return self._read(settings.list_queues)

    def bind(self, pattern: str, queue: str) -> None:
        self._write(lambda c: settings.bind(c, self._configs, pattern, queue))

    def unbind(self, pattern: str, queue: str) -> bool:
        return self._write(lambda c: settings.unbind(c, pattern, queue))

    def bindings(self) -> list[tuple[str, str]]:
        return self._read(settings.bindings)

    def bindings_on(self, connection: Any) -> list[tuple[str, str]]:
        """The bindings, read through the app's connection (``publish(connection=)``)."""
        try:
            return outbox.bindings_on(self.path, connection)
        except sqlite3.Error as exc:
            raise self._store.translate(exc) from exc

    # -- puts ------------------------------------------------------------------
    def put_many(self, envelopes: Sequence[Envelope], *, now: float) -> list[str]:
        return list(
            self._group.run(
                lambda conn: puts.put_batch(
                    conn, self._configs, self._journal, envelopes, now, self._metrics
                ),
                now,
                rerunnable=True,
            )
        )

    def put_in_transaction(
        self, envelopes: Sequence[Envelope], *, now: float, connection: Any
    ) -> list[str]:
        return outbox.put_in_transaction(
            connection,
            envelopes,
            path=self.path,
            busy_timeout=self.busy_timeout,
            retention=self._journal.retention,
            put=lambda conn, log: puts.put_batch(conn, self._configs, log, envelopes, now),
        )

    def once(
        self, message: Message, connection: Any, consumer: str | None = None
    ) -> contextlib.AbstractContextManager[bool]:
        """Record ``message`` for ``consumer`` in the app's SQLite database (``pmsq_once``).

        Raises:
            ConfigurationError: ``connection`` is not a ``sqlite3.Connection``.
        """
        return once_sqlite(message, connection, consumer)

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
        return self._claims.claim(queue, n, now=now, tenant=tenant, consumer=consumer)

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        if not settlements:
            return []
        return self._settle_batch(settlements, now)

    def _settle_batch(self, settlements: Sequence[Settlement], now: float) -> list[bool]:
        # One request of the group commit: a worker's finished handlers share
        # one transaction and one fsync, and concurrent callers join it too.
        return self._group.run(
            lambda conn: settle.settle_batch(
                conn,
                settlements,
                now=now,
                configs=self._configs,
                journal=self._journal,
                metrics=self._metrics,
                probes=self._probes,
            ),
            now,
        )

    def extend(self, receipt: Receipt, seconds: float, *, now: float) -> float | None:
        called = time.monotonic()
        expires = [now + seconds]

        def go(c: sqlite3.Connection) -> bool:
            expires[0] = after_wait(now, called) + seconds
            return settle.settle_extend(c, receipt.handle, receipt.token, expires[0])

        # A request of the group commit, like claims and settlements: a Worker's
        # keep-alive shares the fsync of whatever else is being written.
        return expires[0] if self._group.run(go, now) else None

    # -- operators ----------------------------------------------------------------
    def dead_letters(
        self,
        queue: str,
        *,
        tenant: str | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredDeadLetter]:
        return self._read(lambda c: admin.dead_letters(c, queue, tenant, ids, limit))

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
        checked = _check_retention(retention)
        with self._lock:
            self._journal.retention = checked

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
        return self._read(
            lambda c: journal.history(
                c,
                message_id=message_id,
                dedup_id=dedup_id,
                correlation_id=correlation_id,
                key=key,
                queue=queue,
                tenant=tenant,
                limit=limit,
            )
        )

    def record(self, events: Sequence[HistoryEvent]) -> None:
        def add(_: sqlite3.Connection) -> None:
            for e in events:
                detail = json.dumps(e.detail, separators=(",", ":")) if e.detail else None
                self._journal.add_row(
                    e.at, e.event, e.message_id, e.queue, e.tenant or "", e.key,
                    e.correlation_id, e.attempt, e.worker, detail,
                )  # fmt: skip

        if events and self._journal.enabled:
            self._write(add)

    def stats(self, queue: str | None = None, *, now: float, tenant: str | None = None) -> Stats:
        with self._lock:
            if self._metrics:
                # This process's own recent outcomes belong in its own snapshot,
                # but reading must not need the write lock (WAL): if another
                # process holds it, the counts stay buffered for a later write.
                with contextlib.suppress(StorageError):
                    self._write(lambda c: self._upkeep.flush_metrics(c, now, force=True))
            return self._read(lambda c: admin.stats(c, queue, now, tenant))

    def peek(
        self, queue: str, n: int, *, tenant: str | None = None
    ) -> list[tuple[Envelope, int, str]]:
        return self._read(lambda c: admin.peek(c, queue, n, tenant))

    # -- wake-ups ------------------------------------------------------------------------
    def wait_for_change(self, since: object | None, timeout: float) -> object:
        """``PRAGMA data_version`` of the probe connection: moves with every commit.

        An in-memory store has no other connection: only this process's own
        writes change it, and the broker hears of those directly, so its token
        never moves.
        """
        with self._probe.connection() as conn:
            token = wake.data_version(conn)
        if token != since or timeout <= 0:
            return token
        time.sleep(timeout)
        with self._probe.connection() as conn:
            return wake.data_version(conn)

    def ready_queues(self, queues: Sequence[str], *, now: float) -> Readiness:
        with self._probe.connection() as conn:
            return wake.readiness(conn, queues, now)

    def next_due(self, queue: str, *, now: float) -> float | None:
        return self._read(lambda c: claims.next_due(c, queue, now))

    def has_ready(self, queue: str, *, now: float, tenant: str | None = None) -> bool:
        return self._read(lambda c: claims.has_ready(c, queue, now, tenant))

    def change_token(self) -> object:
        return self._read(lambda c: c.execute("PRAGMA data_version").fetchone()[0])

    def check(self) -> list[str]:
        return self._read(admin.check)

    def get_meta(self, key: str) -> str | None:
        return self._read(lambda c: settings.get_meta(c, key))

    def set_meta(self, key: str, value: str | None) -> None:
        settings.check_meta_key(key)
        self._write(lambda c: settings.set_meta(c, key, value))

    # -- moving stores -------------------------------------------------------------
    def export_messages(
        self, queue: str, *, after: str | None = None, limit: int = 500
    ) -> tuple[list[StoredMessage], str | None]:
        return self._read(lambda c: transfer.export_messages(c, queue, after, limit))

    def import_messages(self, records: Sequence[StoredMessage], *, now: float) -> int:
        return self._write(lambda c: transfer.import_messages(c, self._configs, records, now))

    def export_dedup(self, queue: str, *, now: float) -> list[DedupRecord]:
        return self._read(lambda c: transfer.export_dedup(c, queue, now))

    def import_dedup(self, records: Sequence[DedupRecord]) -> int:
        return self._write(lambda c: transfer.import_dedup(c, records))

    def close(self) -> None:
        with self._lock:
            if self._store.closed:
                return
            if self._metrics:
                with contextlib.suppress(PmsqError):
                    self._write(lambda c: self._upkeep.flush_metrics(c, time.time(), force=True))
            self._store.close()
        self._probe.close()
