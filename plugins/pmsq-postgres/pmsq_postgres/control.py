"""Message control inside an open transaction: cancel (by id or key) and reschedule.

A cancel deletes the rows, so an in-flight holder's later ack, retry or
extend finds no row for its token and reports the lease lost. Cancelling a
key first locks the key's row in ``keys`` (like every change to a line,
see ``pmsq_postgres.schema``), so a put of that key racing with the cancel
is either cancelled with the rest or lands after it, never half-counted.
"""

from __future__ import annotations

from collections.abc import Sequence

from pmsq.backends.sqlkit.rows import tenant_in
from pmsq.backends.sqlkit.states import LIVE, WAITING, waiting_state
from pmsq_postgres.lines import leave_lines
from pmsq_postgres.tx import Tx

__all__ = ["cancel", "cancel_key", "reschedule"]


def cancel(tx: Tx, queue: str, message_ids: Sequence[str], tenant: str | None) -> list[str]:
    """Delete the unsettled messages among ``message_ids``; the ids deleted, in the order given."""
    if not message_ids:
        return []
    where = f"queue = %s AND id = ANY(%s) AND state IN {LIVE}"
    args: list[object] = [queue, list(message_ids)]
    if tenant is not None:
        where += " AND tenant = %s"
        args.append(tenant_in(tenant))
    rows = tx.all(f"DELETE FROM {{s}}.messages WHERE {where} RETURNING id, tenant, key, line", args)
    # A removed head moves its key's next message up (and wakes consumers for it).
    leave_lines(tx, [(queue, t, k) for _, t, k, line in rows if line])
    gone = {r[0] for r in rows}
    return [m for m in dict.fromkeys(message_ids) if m in gone]


def cancel_key(tx: Tx, queue: str, key: str, tenant: str | None) -> list[str]:
    """Delete every unsettled message of ``tenant``'s ``key``; their ids, in the key's order."""
    stored = tenant_in(tenant)
    # Lock the line first, then read it in a fresh statement (see the module docs).
    locked = tx.one(
        "SELECT live FROM {s}.keys WHERE queue = %s AND tenant = %s AND key = %s FOR UPDATE",
        (queue, stored, key),
    )
    if locked is None:
        return []
    rows = tx.all(
        "WITH gone AS (DELETE FROM {s}.messages WHERE queue = %s AND tenant = %s AND key = %s "
        f"AND state IN {LIVE} RETURNING id, kpos, line) SELECT id, line FROM gone ORDER BY kpos",
        (queue, stored, key),
    )
    leave_lines(tx, [(queue, stored, key) for _, line in rows if line])
    return [r[0] for r in rows]


def reschedule(
    tx: Tx, queue: str, message_id: str, available_at: float, tenant: str | None, now: float
) -> bool:
    """Move a waiting message's due time; False if it is gone, dead or in flight.

    The message keeps its place (``kpos``) in its key's line, so later
    messages of the key still wait. A ready message may still carry the
    token of a lease that expired unclaimed; moving it ends that lease, so
    its late holder's settle then finds the lease lost.
    """
    where = f"queue = %s AND id = %s AND state IN {WAITING}"
    args: list[object] = [waiting_state(available_at, now), available_at, queue, message_id]
    if tenant is not None:
        where += " AND tenant = %s"
        args.append(tenant_in(tenant))
    row = tx.one(
        f"UPDATE {{s}}.messages SET state = %s, available_at = %s, lease_token = NULL "
        f"WHERE {where} RETURNING 1",
        args,
    )
    if row is None:
        return False
    tx.notify.add(queue)
    return True
