"""Reading the journal: ``Backend.history`` of the SQLite store.

A row that settles a delivery carries it (see :mod:`journal`): it reads as
two events, ``delivered`` at ``claimed_at`` by the claiming worker and
process, then the outcome. Each ``delivered`` event goes right after the
last row written before its claim (``claimed_after // RANKS``), where the row
of its own went when claims wrote one, so the events come back in the order
they did then. A message leased right now has no outcome row yet: its
delivery is read from its message row. Rows written before schema 8 (three
per message) read as they always did.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from pmsq.backends.sqlkit.states import IN_FLIGHT
from pmsq.backends.types import HistoryEvent

__all__ = ["RANKS", "history", "query", "resolve_dedup"]

# claimed_after = seq of the row before the claim * RANKS + the delivery's rank
# among those its process placed after that row (a 64-bit integer holds it
# for any seq below 2**43).
RANKS = 2**20

# journal.Event.PUT and .DELIVERED (journal.py imports this module, not the reverse).
_PUT = "put"
_DELIVERED = "delivered"

_COLUMNS = (
    "seq, at, message_id, queue, tenant, key, correlation_id, event, attempt, worker, "
    "process, detail, claimed_at, claimed_after, claimed_process"
)

# A row sorts by (its seq, -inf, 0, 0); a delivered event by (seq of the row
# before its claim, claimed_at, its rank there, seq of its outcome row): after
# that row and before the next, deliveries placed after the same row in the
# order of their times, and of their ranks (see Journal.place) where one
# process's times tie.
_Key = tuple[int, float, int, float]
_Keyed = tuple[_Key, HistoryEvent]
_FIRST = float("-inf")
_LAST = float("inf")


def _place(claimed_after: int | None, claimed_at: float, outcome_seq: float) -> _Key:
    after, rank = divmod(claimed_after or 0, RANKS)
    if after >= outcome_seq:
        # Only if the whole journal was pruned while the message was leased
        # (seq numbers start over then): right before the outcome.
        return (int(outcome_seq) - 1, _LAST, 0, outcome_seq)
    return (after, claimed_at, rank, outcome_seq)


_CHUNK = 500


def _expand(rows: Iterable[Sequence[Any]]) -> list[_Keyed]:
    out: list[_Keyed] = []
    for r in rows:
        seq, tenant, claimed_at = r[0], r[4] or None, r[12]
        if claimed_at is not None:
            delivered = HistoryEvent(
                at=claimed_at,
                message_id=r[2],
                queue=r[3],
                tenant=tenant,
                key=r[5],
                correlation_id=r[6],
                event=_DELIVERED,
                attempt=r[8],
                worker=r[9],
                process=r[14] or r[10],
                detail={},
            )
            out.append((_place(r[13], claimed_at, seq), delivered))
        out.append(
            (
                (seq, _FIRST, 0, 0),
                HistoryEvent(
                    at=r[1],
                    message_id=r[2],
                    queue=r[3],
                    tenant=tenant,
                    key=r[5],
                    correlation_id=r[6],
                    event=r[7],
                    attempt=r[8],
                    # A carried delivery's worker is the claimer; outcomes name none.
                    worker=None if claimed_at is not None else r[9],
                    process=r[10],
                    detail=json.loads(r[11]) if r[11] else {},
                ),
            )
        )
    return out


def _leased(
    conn: sqlite3.Connection, message_ids: Iterable[str], queue: str | None, tenant: str | None
) -> list[_Keyed]:
    """The ``delivered`` events of the messages of ``message_ids`` leased right now."""
    ids = list(dict.fromkeys(i for i in message_ids if i))
    out: list[_Keyed] = []
    for start in range(0, len(ids), _CHUNK):
        chunk: list[Any] = ids[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        sql = (
            "SELECT id, queue, tenant, key, correlation_id, attempt, claimed_at, claimed_after, "
            f"claimed_by, claimed_process FROM pmsq_messages WHERE id IN ({marks}) "
            f"AND state = {IN_FLIGHT:d} AND claimed_at IS NOT NULL"
        )
        for column, value in (("queue", queue), ("tenant", tenant)):
            if value is not None:
                sql += f" AND {column} = ?"
                chunk.append(value)
        for r in conn.execute(sql, chunk):
            delivered = HistoryEvent(
                at=r[6],
                message_id=r[0],
                queue=r[1],
                tenant=r[2] or None,
                key=r[3],
                correlation_id=r[4],
                event=_DELIVERED,
                attempt=r[5],
                worker=r[8],
                process=r[9],
                detail={},
            )
            out.append((_place(r[7], r[6], _LAST), delivered))
    return out


def resolve_dedup(conn: sqlite3.Connection, dedup_id: str) -> list[str]:
    """Message ids put with ``dedup_id`` (any queue), newest first."""
    ids = [
        str(r[0])
        for r in conn.execute(
            "SELECT message_id FROM pmsq_dedup WHERE dedup_id = ? ORDER BY expires_at DESC",
            (dedup_id,),
        )
    ]
    if ids:
        return ids
    # Past the dedup window the journal's put events still know it (a scan:
    # an operator's lookup, not a hot path).
    return [
        str(r[0])
        for r in conn.execute(
            f"SELECT DISTINCT message_id FROM pmsq_journal WHERE event = '{_PUT}' "
            "AND json_extract(detail, '$.dedup_id') = ? ORDER BY seq DESC",
            (dedup_id,),
        )
    ]


def query(
    conn: sqlite3.Connection,
    *,
    message_id: str | None = None,
    correlation_id: str | None = None,
    key: str | None = None,
    queue: str | None = None,
    tenant: str | None = None,
    limit: int = 1000,
) -> list[HistoryEvent]:
    """The newest ``limit`` events (returned oldest first) matching every filter given.

    ``correlation_id`` and ``key`` select messages by their ``put`` event
    (the only events indexed that way); every event of those messages is
    returned.
    """
    where: list[str] = []
    args: list[Any] = []
    if message_id is not None:
        where.append("message_id = ?")
        args.append(message_id)
    if correlation_id is not None or key is not None:
        # The literal event = 'put' lets SQLite use the partial indexes.
        puts, put_args = [f"event = '{_PUT}'"], []
        for column, value in (("key", key), ("queue", queue), ("tenant", tenant)):
            if value is not None:
                puts.append(f"{column} = ?")
                put_args.append(value)
        cond = " AND ".join(puts)
        if correlation_id is None:
            where.append(f"message_id IN (SELECT message_id FROM pmsq_journal WHERE {cond})")
            args.extend(put_args)
        else:
            # The chain's first message (its id is the chain's), then the others.
            where.append(
                f"message_id IN (SELECT message_id FROM pmsq_journal WHERE message_id = ? "
                f"AND correlation_id = ? AND {cond} UNION SELECT message_id FROM pmsq_journal "
                f"WHERE correlation_id = ? AND correlation_id != message_id AND {cond})"
            )
            args.extend([correlation_id, correlation_id, *put_args, correlation_id, *put_args])
    else:
        if queue is not None:
            where.append("queue = ?")
            args.append(queue)
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
    sql = f"SELECT {_COLUMNS} FROM pmsq_journal"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT ?"
    keyed = _expand(conn.execute(sql, [*args, limit]).fetchall())
    ids = [message_id] if message_id is not None else [e.message_id for _, e in keyed]
    keyed.extend(_leased(conn, ids, queue, tenant))
    keyed.sort(key=lambda k: k[0])
    if limit >= 0:
        # A row may read as two events: the newest ``limit`` events lie among
        # the newest ``limit`` rows and the deliveries they carry.
        keyed = keyed[-limit:] if limit else []
    return [e for _, e in keyed]


def history(
    conn: sqlite3.Connection,
    *,
    message_id: str | None,
    dedup_id: str | None,
    correlation_id: str | None,
    key: str | None,
    queue: str | None,
    tenant: str | None,
    limit: int,
) -> list[HistoryEvent]:
    """``Backend.history``: :func:`query` for each message a dedup id ever named."""
    ids = [message_id] if message_id is not None else [None]
    if dedup_id is not None:
        ids = [i for i in resolve_dedup(conn, dedup_id) if message_id in (None, i)]
    events: list[HistoryEvent] = []
    for mid in ids:
        events.extend(
            query(
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
