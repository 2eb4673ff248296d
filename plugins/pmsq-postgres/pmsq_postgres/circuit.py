"""The circuit breaker in the PostgreSQL store: counting failures, opening, probing, closing.

When a circuit opens, which failures count and its reason are decided by
:mod:`pmsq.backends.sqlkit.pauses` (shared with SQLite); here is how the
rows change under concurrent workers. Failures are rows of ``failures``
per scope; a failing settlement takes a per-scope advisory lock, so
concurrent workers count exactly and only one of them opens the circuit. An
open circuit is a ``pauses`` row with ``circuit`` set. Past its ``until`` it
is half-open: a claim locks the row (``SKIP LOCKED``: one claimer at a
time), leases one message of the scope and names it in ``probe``. A probe is
in progress only while that message is in flight; once it is not (retried
without failing, released, expired, cancelled) a later claim sends another.
The probe's ack deletes the row (closed); its failure sets a new ``until``
(open again).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pmsq.backends.sqlkit import pauses as kit
from pmsq.backends.sqlkit.rows import tenant_in
from pmsq.backends.sqlkit.states import IN_FLIGHT, READY
from pmsq.backends.types import PauseRecord
from pmsq.config import Circuit
from pmsq_postgres.pauses import Scope, covers, forget_failures, holds, upsert_pause
from pmsq_postgres.tx import Tx

__all__ = ["closed_by", "failed", "take_probes"]

_SCOPE = "queue = %(q)s AND tenant = %(pt)s AND key = %(pk)s"
# Message row ``h`` is in the scope %(pt)s, %(pk)s (a parameterised ``pauses.covers``).
_IN_SCOPE = "((%(pk)s = '' AND %(pt)s IN ('', h.tenant)) OR (h.tenant = %(pt)s AND h.key = %(pk)s))"
_OTHERS = "x.tenant = {t} AND x.key = {k}"
# A ready head the probe may take: in the scope, of the claim's tenant, held by no other pause.
_CANDIDATE = (
    f"h.queue = %(q)s AND h.state = {READY:d} AND h.head AND (%(t)s::text IS NULL "
    "OR h.tenant = %(t)s) AND {scope} AND NOT {held}"
)
# Statement 1: lock the half-open circuits with no probe in flight and a candidate
# (a claimer running alongside skips them; nothing is locked when nothing can go).
_HALF_OPEN = (
    "SELECT tenant, key, probe FROM {s}.pauses p WHERE queue = %(q)s AND circuit "
    "AND until <= %(now)s AND (%(t)s::text IS NULL OR tenant IN ('', %(t)s)) "
    f"AND NOT EXISTS (SELECT 1 FROM {{s}}.messages m WHERE m.id = p.probe "
    f"AND m.state = {IN_FLIGHT:d}) AND EXISTS (SELECT 1 FROM {{s}}.messages h WHERE "
    + _CANDIDATE.format(
        scope=covers("p", "h"), held=holds("h", but=_OTHERS.format(t="p.tenant", k="p.key"))
    )
    + ") ORDER BY tenant, key LIMIT %(n)s FOR UPDATE OF p SKIP LOCKED"
)
# Statement 2, a fresh snapshot under the circuit's lock: unless its last probe
# is still in flight, lease one candidate as the probe.
_LEASE_PROBE = (
    f"WITH busy AS (SELECT 1 FROM {{s}}.messages WHERE id = %(probe)s AND state = {IN_FLIGHT:d}), "
    "picked AS (SELECT seq FROM {s}.messages AS h WHERE NOT EXISTS (SELECT 1 FROM busy) AND "
    + _CANDIDATE.format(
        scope=_IN_SCOPE, held=holds("h", but=_OTHERS.format(t="%(pt)s", k="%(pk)s"))
    )
    + " ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED) "
    f"UPDATE {{s}}.messages AS m SET state = {IN_FLIGHT:d}, attempt = m.attempt + 1, "
    "lease_token = replace(gen_random_uuid()::text, '-', ''), lease_expires = %(exp)s "
    "FROM picked WHERE m.seq = picked.seq RETURNING m.*"
)


def take_probes(
    tx: Tx, queue: str, n: int, *, now: float, expires: float, tenant: str | None
) -> list[dict[str, Any]]:
    """Lease one probe for each half-open circuit of ``queue`` (at most ``n``); the rows leased.

    A claim of one tenant only probes circuits that cover that tenant. A
    probe is not charged to the queue's rate limit: it is one message per
    ``open_for``.
    """
    t = tenant_in(tenant) if tenant is not None else None
    rows: list[dict[str, Any]] = []
    for p_tenant, p_key, probe in tx.all(_HALF_OPEN, {"q": queue, "now": now, "t": t, "n": n}):
        args = {
            "q": queue,
            "pt": p_tenant,
            "pk": p_key,
            "t": t,
            "now": now,
            "exp": expires,
            "probe": probe,
        }
        got = tx.dicts(_LEASE_PROBE, args)
        if got:
            args["id"] = got[0]["id"]
            tx.execute(f"UPDATE {{s}}.pauses SET probe = %(id)s WHERE {_SCOPE}", args)
            rows += got
    return rows


def failed(
    tx: Tx,
    circuit: Circuit,
    *,
    queue: str,
    tenant: str,
    key: str | None,
    message_id: str,
    error_type: str | None,
    error: str | None,
    now: float,
) -> None:
    """Count a handler failure toward ``circuit``; open (or re-open) it when due.

    A failing probe opens its circuit again for ``open_for``. A scope held
    already (an open circuit, or an operator's pause) counts nothing more.
    """
    found = kit.circuit_scope(circuit, tenant, key)
    if found is None:
        return
    scope: Scope = (queue, *found)
    args = {"q": queue, "pt": scope[1], "pk": scope[2]}
    # One failing settlement per scope at a time: the count and the opening are exact.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"pmsq-circuit:{tx.sql.schema}:{scope!r}",),
    )
    held = tx.one(f"SELECT circuit, probe FROM {{s}}.pauses WHERE {_SCOPE} FOR UPDATE", args)
    reason = kit.circuit_reason(error_type, error)
    until = now + circuit.open_for
    if held is not None:
        if held[0] and held[1] == message_id:
            tx.execute(
                f"UPDATE {{s}}.pauses SET until = %(until)s, since = %(now)s, reason = %(r)s, "
                f"probe = NULL WHERE {_SCOPE}",
                {**args, "until": until, "now": now, "r": reason},
            )
        return
    tx.execute(
        f"DELETE FROM {{s}}.failures WHERE {_SCOPE} AND at <= %(old)s",
        {**args, "old": now - circuit.within},
    )
    tx.execute(
        "INSERT INTO {s}.failures (queue, tenant, key, at) VALUES (%(q)s, %(pt)s, %(pk)s, %(now)s)",
        {**args, "now": now},
    )
    count = tx.one(f"SELECT count(*) FROM {{s}}.failures WHERE {_SCOPE}", args)[0]
    if kit.opens(circuit, int(count)):
        upsert_pause(
            tx,
            PauseRecord(
                queue=queue,
                tenant=scope[1] or None,
                key=scope[2] or None,
                until=until,
                reason=reason,
                since=now,
                circuit=True,
            ),
        )
        forget_failures(tx, scope)


def closed_by(tx: Tx, acked: Iterable[tuple[str, str]]) -> None:
    """Close the circuits whose probe is among the acked ``(queue, message_id)``."""
    pairs = sorted(set(acked))
    if not pairs:
        return
    tx.execute(
        "WITH closed AS (DELETE FROM {s}.pauses p USING unnest(%s::text[], %s::text[]) "
        "AS a(queue, id) WHERE p.queue = a.queue AND p.circuit AND p.probe = a.id "
        "RETURNING p.queue, p.tenant, p.key) "
        "DELETE FROM {s}.failures f USING closed c WHERE f.queue = c.queue "
        "AND f.tenant = c.tenant AND f.key = c.key",
        ([q for q, _ in pairs], [m for _, m in pairs]),
    )
