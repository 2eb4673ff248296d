"""The circuit breaker in the PostgreSQL store: counting failures, opening, probing, closing.

Failures are rows of ``failures`` per scope; a settlement that fails takes a
per-scope advisory lock, so concurrent workers count exactly and only one
of them opens the circuit. An open circuit is a ``pauses`` row with
``circuit`` set. Past its ``until`` it is half-open: a claim locks the row
(``SKIP LOCKED``: one claimer at a time), leases one message of the scope
and names it in ``probe``. A probe is only in progress while that message
is in flight; once it is not (retried without failing, released, expired,
cancelled) the next claim sends another. The probe's ack deletes the row
(closed); its failure sets a new ``until`` (open again).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pmsq.backends.sqlkit.rows import tenant_in
from pmsq.backends.sqlkit.states import IN_FLIGHT, READY
from pmsq.backends.types import PauseRecord
from pmsq.config import QueueConfig
from pmsq_postgres.pauses import Scope, covers, holds, scope_of, upsert_pause
from pmsq_postgres.tx import Tx

__all__ = ["closed_by", "failed", "last_error", "scope_for", "take_probes"]

_SCOPE = "queue = %(q)s AND tenant = %(pt)s AND keyed = %(pk)s AND key = %(pkey)s"

# The scope of pause ``p`` holds message row ``h`` (a parameterised ``pauses.covers``).
_IN_SCOPE = (
    "((NOT %(pk)s AND %(pt)s IN ('', h.tenant)) OR (%(pk)s AND h.tenant = %(pt)s "
    "AND h.key = %(pkey)s))"
)
_OTHERS = "x.tenant = {t} AND x.keyed = {k} AND x.key = {key}"
# A ready head the probe may take: in the scope, of the claim's tenant, held by no other pause.
_CANDIDATE = (
    f"h.queue = %(q)s AND h.state = {READY:d} AND h.head AND (%(t)s::text IS NULL "
    "OR h.tenant = %(t)s) AND {scope} AND NOT {held}"
)
# Statement 1: lock the half-open circuits with no probe in flight and a candidate
# (a claimer running alongside skips them; nothing is locked when nothing can go).
_HALF_OPEN = (
    "SELECT tenant, keyed, key, probe FROM {s}.pauses p WHERE queue = %(q)s AND circuit "
    "AND until <= %(now)s AND (%(t)s::text IS NULL OR tenant IN ('', %(t)s)) "
    f"AND NOT EXISTS (SELECT 1 FROM {{s}}.messages m WHERE m.id = p.probe "
    f"AND m.state = {IN_FLIGHT:d}) AND EXISTS (SELECT 1 FROM {{s}}.messages h WHERE "
    + _CANDIDATE.format(
        scope=covers("p", "h"),
        held=holds("h", but=_OTHERS.format(t="p.tenant", k="p.keyed", key="p.key")),
    )
    + ") ORDER BY tenant, keyed, key LIMIT %(n)s FOR UPDATE OF p SKIP LOCKED"
)
# Statement 2, a fresh snapshot under the circuit's lock: unless its last probe
# is still in flight, lease one candidate as the probe.
_LEASE_PROBE = (
    f"WITH busy AS (SELECT 1 FROM {{s}}.messages WHERE id = %(probe)s AND state = {IN_FLIGHT:d}), "
    "picked AS (SELECT seq FROM {s}.messages AS h WHERE NOT EXISTS (SELECT 1 FROM busy) AND "
    + _CANDIDATE.format(
        scope=_IN_SCOPE,
        held=holds("h", but=_OTHERS.format(t="%(pt)s", k="%(pk)s", key="%(pkey)s")),
    )
    + " ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED) "
    f"UPDATE {{s}}.messages AS m SET state = {IN_FLIGHT:d}, attempt = m.attempt + 1, "
    "lease_token = replace(gen_random_uuid()::text, '-', ''), lease_expires = %(exp)s "
    "FROM picked WHERE m.seq = picked.seq RETURNING m.*"
)


def last_error(error_type: str | None, error: str | None) -> str:
    """The failure as a circuit's reason shows it: the traceback's last line (``Type: message``)."""
    lines = [line for line in (error or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else (error_type or "handler failed")


def _scope_args(scope: Scope) -> dict[str, Any]:
    return {"q": scope[0], "pt": scope[1], "pk": scope[2], "pkey": scope[3]}


def take_probes(
    tx: Tx, queue: str, n: int, *, now: float, expires: float, tenant: str | None
) -> list[dict[str, Any]]:
    """Lease one probe for each half-open circuit of ``queue`` (at most ``n``); the rows leased.

    A claim of one tenant only probes circuits that cover that tenant. A
    probe is not charged to the queue's rate limit: it is one message per
    ``open_for``.
    """
    t = tenant_in(tenant) if tenant is not None else None
    scopes = tx.all(_HALF_OPEN, {"q": queue, "now": now, "t": t, "n": n})
    rows: list[dict[str, Any]] = []
    for p_tenant, keyed, key, probe in scopes:
        args = {
            **_scope_args((queue, p_tenant, keyed, key)),
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


def scope_for(cfg: QueueConfig, tenant: str, key: str | None) -> Scope | None:
    """The breaker scope a failure of a message of ``tenant`` and ``key`` counts in."""
    c = cfg.circuit
    if c is None:
        return None
    if c.scope == "queue":
        return scope_of(cfg.name, None, None)
    if c.scope == "tenant":
        return scope_of(cfg.name, tenant or None, None)
    return scope_of(cfg.name, tenant or None, key)


def failed(
    tx: Tx,
    cfg: QueueConfig,
    *,
    tenant: str,
    key: str | None,
    message_id: str,
    error: str,
    now: float,
) -> None:
    """Count a handler failure toward its scope's breaker; open (or reopen) it if due."""
    c = cfg.circuit
    scope = scope_for(cfg, tenant, key)
    if c is None or scope is None:
        return
    args = _scope_args(scope)
    # One failing settlement per scope at a time: the count and the opening are exact.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"pmsq-circuit:{tx.sql.schema}:{scope!r}",),
    )
    row = tx.one(f"SELECT circuit, probe FROM {{s}}.pauses WHERE {_SCOPE} FOR UPDATE", args)
    reason = f"circuit open: {error}"
    if row is not None and row[0]:
        if row[1] == message_id:
            # The probe failed: open again for a full period.
            tx.execute(
                f"UPDATE {{s}}.pauses SET until = %(until)s, since = %(now)s, reason = %(r)s, "
                f"probe = NULL WHERE {_SCOPE}",
                {**args, "until": now + c.open_for, "now": now, "r": reason},
            )
        # Failures of messages already in flight when it opened do not reopen it.
        return
    tx.execute(
        f"DELETE FROM {{s}}.failures WHERE {_SCOPE} AND at <= %(old)s",
        {**args, "old": now - c.within},
    )
    count = tx.one(
        "WITH f AS (INSERT INTO {s}.failures (queue, tenant, keyed, key, at) "
        "VALUES (%(q)s, %(pt)s, %(pk)s, %(pkey)s, %(now)s) RETURNING 1) "
        f"SELECT (SELECT count(*) FROM {{s}}.failures WHERE {_SCOPE}) + (SELECT count(*) FROM f)",
        {**args, "now": now},
    )[0]
    if count < c.failures:
        return
    queue, p_tenant, keyed, p_key = scope
    if row is None:
        upsert_pause(
            tx,
            PauseRecord(
                queue=queue,
                tenant=p_tenant or None,
                key=p_key if keyed else None,
                until=now + c.open_for,
                reason=reason,
                since=now,
                circuit=True,
            ),
        )
    tx.execute(f"DELETE FROM {{s}}.failures WHERE {_SCOPE}", args)


def closed_by(tx: Tx, acked: Iterable[tuple[str, str]]) -> None:
    """Close the circuits whose probe is among the acked ``(queue, message_id)``."""
    pairs = sorted(set(acked))
    if not pairs:
        return
    tx.execute(
        "WITH closed AS (DELETE FROM {s}.pauses p USING unnest(%s::text[], %s::text[]) "
        "AS a(queue, id) WHERE p.queue = a.queue AND p.circuit AND p.probe = a.id "
        "RETURNING p.queue, p.tenant, p.keyed, p.key) "
        "DELETE FROM {s}.failures f USING closed c WHERE f.queue = c.queue "
        "AND f.tenant = c.tenant AND f.keyed = c.keyed AND f.key = c.key",
        ([q for q, _ in pairs], [m for _, m in pairs]),
    )
