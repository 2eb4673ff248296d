"""Wake-up probes for idle consumers: one change counter and one readiness query per store.

An idle worker serving thousands of queues must not probe each of them every
poll interval. Instead it watches ``PRAGMA data_version`` (a counter SQLite
moves whenever another connection commits; reading it touches only the
shared-memory WAL index) and, when that moved or a due time passed, asks
:func:`readiness` which queues have work. The queries below walk each
partial index from one distinct queue to the next (a "loose index scan"), so
their cost grows with the number of queues holding messages in that state,
not with the backlog.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator

from pmsq.backends.sqlite.store import Store
from pmsq.backends.sqlkit.states import IN_FLIGHT, READY, SCHEDULED
from pmsq.backends.types import Readiness

__all__ = ["Probe", "data_version", "readiness"]

# Distinct queues with a ready key head (index pmsq_ix_ready).
_READY = (
    "WITH RECURSIVE r(q) AS ("
    f" SELECT (SELECT min(queue) FROM pmsq_messages WHERE state = {READY:d} AND head = 1)"
    " UNION ALL SELECT (SELECT min(queue) FROM pmsq_messages"
    f"  WHERE state = {READY:d} AND head = 1 AND queue > r.q) FROM r WHERE r.q IS NOT NULL"
    ") SELECT q FROM r WHERE q IS NOT NULL"
)
# Per queue, the earliest delayed message (index pmsq_ix_scheduled) or lease
# expiry (index pmsq_ix_leases).
_EARLIEST = (
    "WITH RECURSIVE r(q) AS ("
    " SELECT (SELECT min(queue) FROM pmsq_messages WHERE state = {state})"
    " UNION ALL SELECT (SELECT min(queue) FROM pmsq_messages"
    "  WHERE state = {state} AND queue > r.q) FROM r WHERE r.q IS NOT NULL"
    ") SELECT q, (SELECT min({column}) FROM pmsq_messages WHERE state = {state} AND queue = r.q)"
    " FROM r WHERE q IS NOT NULL"
)
_PAUSES = "SELECT queue, tenant, key, until FROM pmsq_pauses"
_SCHEDULED = _EARLIEST.format(state=f"{SCHEDULED:d}", column="available_at")
_LEASED = _EARLIEST.format(state=f"{IN_FLIGHT:d}", column="lease_expires")


def data_version(conn: sqlite3.Connection) -> int:
    """The connection's view of the store's commit counter (moves on others' commits)."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def readiness(conn: sqlite3.Connection, queues: Iterable[str], now: float) -> Readiness:
    """Which of ``queues`` have a ready head, a due delay or an expired lease at ``now``.

    ``next_due`` is the earliest later delay or lease expiry among them.
    Rate limits are not consulted: a rate-limited queue with ready messages
    is named, and its claim returns what the budget allows.
    """
    wanted = set(queues)
    ready = {q for (q,) in conn.execute(_READY) if q in wanted}
    later: list[float] = []
    lapsed: set[str] = set()  # queues with an expired lease: a claim must count it
    for sql in (_SCHEDULED, _LEASED):
        for q, due in conn.execute(sql):
            if q not in wanted or due is None:
                continue
            if due <= now:
                ready.add(q)
                if sql is _LEASED:
                    lapsed.add(q)
            else:
                later.append(float(due))
    # A queue held as a whole is not ready; the end of a timed pause (or an
    # open circuit's probe time) is when the answer changes without a write.
    for q, tenant, key, until in conn.execute(_PAUSES):
        if q not in wanted:
            continue
        if until is not None and until > now:
            later.append(float(until))
        if not tenant and not key and (until is None or until > now) and q not in lapsed:
            ready.discard(q)
    return Readiness(frozenset(ready), min(later) if later else None)


class Probe:
    """A second, read-only connection for wake-up probes.

    Its ``data_version`` moves on every commit (the store's own connection's
    too), and probing through it never waits for the write lock a group
    commit holds. An in-memory store has no other connection: the probe is
    its one connection, under its lock.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """The probe connection, opened on first use."""
        store = self._store
        if store.path == ":memory:":
            with store.reading() as conn:
                yield conn
            return
        with self._lock:
            store.check_open()
            try:
                if self._conn is None:
                    self._conn = sqlite3.connect(
                        store.path,
                        timeout=store.busy_timeout,
                        isolation_level=None,
                        check_same_thread=False,
                    )
                    self._conn.execute("PRAGMA query_only = 1")
                yield self._conn
            except sqlite3.Error as exc:
                raise store.translate(exc) from exc

    def close(self) -> None:
        """Close the probe connection, if it was opened."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            if self._conn is not None:
                self._conn.close()
