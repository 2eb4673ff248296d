"""Export and import of stored messages and dedup ids (``pmsq migrate``).

Export order: ``seq`` is put order across the queue, but two producers of
one key can commit their ``seq`` values out of order; a key's delivery order
is ``kpos``. So each key's line is exported in ``kpos`` order, its messages
taking the key's ``seq`` values in ascending order as their sort position:
the positions of a key stay the same set, handed out in line order. Keys
whose two orders differ are rare (concurrent producers of one key); the
first page finds them in one pass over the queue's line rows and the cursor
carries their few remapped positions, so every page is an index range scan.

Import keeps ids (one already stored is skipped) and appends each keyed
message to its key's line through the key row, as a put does, so ``kpos``
follows the order given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pmsq.backends.sqlkit.rows import stored_from_row, tenant_in, tenant_out
from pmsq.backends.sqlkit.states import DEAD, waiting_state
from pmsq.backends.types import DedupRecord, StoredMessage
from pmsq_postgres.lines import JOIN_KEY_CTE
from pmsq_postgres.puts import COLUMNS, ConfigReader
from pmsq_postgres.tx import Tx

__all__ = ["export_dedup", "export_messages", "import_dedup", "import_messages"]

_SELECT = f"SELECT {COLUMNS} FROM {{s}}.messages "

# Keys whose line (kpos) order differs from their seq order: one window pass.
_INVERTED_KEYS = (
    "SELECT DISTINCT tenant, key FROM (SELECT tenant, key, seq, "
    "lag(seq) OVER (PARTITION BY tenant, key ORDER BY kpos) AS prev FROM {s}.messages "
    "WHERE queue = %s AND line AND key IS NOT NULL) AS w WHERE prev > seq"
)

_COLUMNS = (
    "id, queue, tenant, key, kpos, priority, state, head, line, available_at, attempt, "
    "enqueued_at, format, payload, headers, dedup_id, topic, correlation_id, causation_id, "
    "error_type, error, dead_reason, dead_at, expires_at"
)
_VALUES = (
    "%(id)s, %(queue)s, %(tenant)s, %(key)s, {kpos}, %(priority)s, %(state)s, {head}, {line}, "
    "%(available_at)s, %(attempt)s, %(enqueued_at)s, %(format)s, %(payload)s, %(headers)s, "
    "%(dedup_id)s, %(topic)s, %(correlation_id)s, %(causation_id)s, %(error_type)s, "
    "%(error)s, %(dead_reason)s, %(dead_at)s, %(expires_at)s"
)
# Outside any key line: unkeyed messages, and dead letters that released their key.
_INSERT_LOOSE = (
    f"INSERT INTO {{s}}.messages ({_COLUMNS}) VALUES ("
    + _VALUES.format(kpos="NULL", head="%(head)s", line="false")
    + ")"
)
# Joins the key's line at its tail (the key row is locked first, as for a put).
_INSERT_LINE = (
    JOIN_KEY_CTE
    + f"INSERT INTO {{s}}.messages ({_COLUMNS}) SELECT "
    + _VALUES.format(kpos="k.tail", head="k.live = 1", line="true")
    + " FROM k"
)


def _remap(tx: Tx, queue: str) -> dict[int, int]:
    """Sort positions of the rows of keys whose seq order differs from their line order.

    Each such key's rows take the key's seq values in ascending order, in
    line (kpos) order; rows whose position equals their seq are left out.
    """
    out: dict[int, int] = {}
    for tenant, key in tx.all(_INVERTED_KEYS, (queue,)):
        in_line = [
            r[0]
            for r in tx.all(
                "SELECT seq FROM {s}.messages WHERE queue = %s AND tenant = %s AND key = %s "
                "AND line ORDER BY kpos",
                (queue, tenant, key),
            )
        ]
        for seq, pos in zip(in_line, sorted(in_line), strict=True):
            if seq != pos:
                out[seq] = pos
    return out


def export_messages(
    tx: Tx, queue: str, after: str | None, limit: int
) -> tuple[list[StoredMessage], str | None]:
    """One page of ``queue``'s messages in put order (keys in line order), and the next cursor.

    The cursor carries the last position and the remapped rows found by the
    first page (usually none), so later pages are plain index range scans.
    """
    if after:
        state = json.loads(after)
        start, remap = int(state["after"]), {int(k): int(v) for k, v in state["remap"]}
    else:
        start, remap = 0, _remap(tx, queue)
    moved = list(remap)
    rows = [
        (r["seq"], r)
        for r in tx.dicts(
            _SELECT + "WHERE queue = %s AND seq > %s AND NOT (seq = ANY(%s)) ORDER BY seq LIMIT %s",
            (queue, start, moved, limit),
        )
    ]
    due = [seq for seq, pos in remap.items() if pos > start]
    if due:
        rows.extend((remap[r["seq"]], r) for r in tx.dicts(_SELECT + "WHERE seq = ANY(%s)", (due,)))
        rows.sort(key=lambda pr: pr[0])
        rows = rows[:limit]
    out = [stored_from_row(r) for _, r in rows]
    if len(rows) < limit:
        return out, None
    return out, json.dumps({"after": rows[-1][0], "remap": sorted(remap.items())})


def _params(rec: StoredMessage, now: float) -> dict[str, Any]:
    env = rec.envelope
    dead = rec.state == "dead"
    state = DEAD if dead else waiting_state(env.available_at, now)
    return {
        "id": env.id,
        "queue": env.queue,
        "tenant": tenant_in(env.tenant),
        "key": env.key,
        "priority": env.priority,
        "state": state,
        "head": not dead,
        "available_at": env.available_at,
        "attempt": rec.attempts,
        "enqueued_at": env.enqueued_at,
        "format": env.format,
        "payload": env.data,
        "headers": env.headers,
        "dedup_id": env.dedup_id,
        "topic": env.topic,
        "correlation_id": env.correlation_id,
        "causation_id": env.causation_id,
        "error_type": rec.error_type,
        "error": rec.error,
        "dead_reason": rec.dead_reason if dead else None,
        "dead_at": rec.dead_at if dead else None,
        "expires_at": env.expires_at,
    }


def import_messages(
    tx: Tx, configs: ConfigReader, records: Sequence[StoredMessage], now: float
) -> int:
    """Insert the records whose ids are new, in order; return how many were inserted."""
    if not records:
        return 0
    present = {
        r[0]
        for r in tx.all(
            "SELECT id FROM {s}.messages WHERE id = ANY(%s)", ([r.envelope.id for r in records],)
        )
    }
    for queue in sorted({r.envelope.queue for r in records}):
        configs.get(tx, queue)  # declares the queue with defaults if it is new
    run: list[dict[str, Any]] = []
    run_line = False
    inserted = 0

    def flush() -> None:
        if run:
            tx.many(_INSERT_LINE if run_line else _INSERT_LOOSE, run)
            run.clear()

    for rec in records:
        env = rec.envelope
        if env.id in present:
            continue
        present.add(env.id)
        # A dead letter occupies its key's line only while it blocks the key.
        in_line = env.key is not None and (rec.state != "dead" or rec.holds_key)
        if run and in_line != run_line:
            flush()
        run_line = in_line
        run.append(_params(rec, now))
        if rec.state != "dead":
            tx.notify.add(env.queue)
        inserted += 1
    flush()
    return inserted


def export_dedup(tx: Tx, queue: str, now: float) -> list[DedupRecord]:
    """The dedup ids of ``queue`` still remembered at ``now``."""
    rows = tx.all(
        "SELECT tenant, dedup_id, message_id, expires_at FROM {s}.dedup WHERE queue = %s "
        "AND (expires_at IS NULL OR expires_at > %s) ORDER BY tenant, dedup_id",
        (queue, now),
    )
    return [DedupRecord(queue, tenant_out(r[0]), r[1], r[2], r[3]) for r in rows]


def import_dedup(tx: Tx, records: Sequence[DedupRecord]) -> int:
    """Remember dedup ids not yet remembered; return how many were new."""
    new = 0
    for r in records:
        row = tx.one(
            "INSERT INTO {s}.dedup (queue, tenant, dedup_id, message_id, expires_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
            (r.queue, tenant_in(r.tenant), r.dedup_id, r.message_id, r.expires_at),
        )
        new += row is not None
    return new
