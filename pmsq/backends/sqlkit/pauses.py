"""Pauses and circuit breakers, decided the same way by every SQL backend.

A dialect stores pause rows (one per scope: ``queue``, ``tenant`` and
``key`` in their stored forms, ``''`` for none) and a log of handler
failures; what a set of pause rows holds at a claim, which failures open a
circuit, and the texts and journal details are decided here.

- :func:`holds` turns a queue's pause rows into a :class:`Holds`: what one
  claim must skip and which half-open circuits may let their probe through.
  A timed pause is in force while ``now < until``, read from the row at each
  claim: it is not deleted when it lapses, so a clock stepped back finds it
  in force again, as ``QueueModel`` says.
- :func:`circuit_scope` is the scope a failure counts in; :func:`opens`
  says whether the failures in the window open it; :func:`circuit_reason`
  is the pause's reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from pmsq.backends.types import PauseRecord
from pmsq.config import Circuit
from pmsq.stats import Stats

__all__ = [
    "Holds",
    "PauseRow",
    "Scope",
    "circuit_reason",
    "circuit_scope",
    "holds",
    "in_force",
    "opens",
    "record_from_row",
    "with_paused",
]

#: ``(tenant, key)`` in stored form (``''`` for none) within one queue.
Scope = tuple[str, str]

#: ``(tenant, key, until, circuit, probe)`` of a stored pause of one queue.
PauseRow = tuple[str, str, float | None, bool, str | None]

_MAX_ERROR = 300


def in_force(until: float | None, now: float) -> bool:
    """Whether a pause holds everything of its scope at ``now``.

    A timed pause lapses at ``until``; an open circuit past ``until`` is
    half-open (its probe may go), but is still listed until it closes.
    """
    return until is None or until > now


@attrs.define
class Holds:
    """What a queue's pauses hold for one claim at one instant.

    Attributes:
        queue: A queue-wide pause is in force: nothing is claimed.
        tenants: Stored tenants held as a whole.
        keys: ``(tenant, key)`` held.
        probes: Half-open circuit scopes (``('', '')``: the queue) whose probe
            may be claimed now: at most one message each.
    """

    queue: bool = False
    tenants: set[str] = attrs.field(factory=set)
    keys: set[Scope] = attrs.field(factory=set)
    probes: set[Scope] = attrs.field(factory=set)

    @property
    def any(self) -> bool:
        """Whether a claim must look at these holds at all."""
        return bool(self.queue or self.tenants or self.keys or self.probes)

    def limit(self, n: int) -> int:
        """How many messages the claim may take: one while the queue's own circuit probes."""
        if self.queue:
            return 0
        return min(n, 1) if ("", "") in self.probes else n

    def admit(self, fronts: Sequence[list[Mapping[str, Any]]]) -> None:
        """Drop held rows from per-tenant ``fronts`` in place (a tenant probing keeps one)."""
        for front in fronts:
            kept: list[Mapping[str, Any]] = []
            for row in front:
                tenant, key = row["tenant"], row["key"] or ""
                if tenant in self.tenants or (key and (tenant, key) in self.keys):
                    continue
                if (tenant, "") in self.probes and any(r["tenant"] == tenant for r in kept):
                    continue
                kept.append(row)
            front[:] = kept

    def probe_scope(self, row: Mapping[str, Any]) -> Scope | None:
        """The half-open scope a picked row probes for, if any (most specific first)."""
        tenant, key = row["tenant"], row["key"] or ""
        for scope in ((tenant, key), (tenant, ""), ("", "")):
            if scope in self.probes and (scope[1] == "" or key):
                return scope
        return None


def holds(rows: Iterable[PauseRow], now: float, probe_busy: Callable[[str], bool]) -> Holds:
    """What ``rows`` (one queue's pauses) hold at ``now``.

    Args:
        rows: The queue's pause rows.
        now: The claim's clock.
        probe_busy: Whether a half-open circuit's probe message is still in
            flight (then the circuit holds its scope until it settles).
    """
    out = Holds()
    for tenant, key, until, circuit, probe in rows:
        scope = (tenant, key)
        if not in_force(until, now):
            if not circuit:
                continue  # lapsed: no longer in force
            if probe is None or not probe_busy(probe):
                out.probes.add(scope)
                continue
        if key:
            out.keys.add(scope)
        elif tenant:
            out.tenants.add(tenant)
        else:
            out.queue = True
    return out


def circuit_scope(circuit: Circuit, tenant: str, key: str | None) -> Scope | None:
    """The scope (stored form) a failure of a message of ``tenant``'s ``key`` counts in.

    ``None`` when the message has no such scope: an unkeyed message under a
    per-key breaker, a tenantless one under a per-tenant breaker (pausing
    its whole tenant, or the whole queue, would hold healthy scopes).
    """
    if circuit.scope == "queue":
        return ("", "")
    if circuit.scope == "tenant":
        return (tenant, "") if tenant else None
    return (tenant, key) if key else None


def opens(circuit: Circuit, failures_in_window: int) -> bool:
    """Whether this many failures within ``circuit.within`` open the circuit."""
    return failures_in_window >= circuit.failures


def circuit_reason(error_type: str | None, error: str | None) -> str:
    """``circuit open: <last error>``: the last line of the traceback, or the error type."""
    lines = [line.strip() for line in (error or "").strip().splitlines() if line.strip()]
    last = lines[-1] if lines else (error_type or "handler failed")
    return f"circuit open: {last[:_MAX_ERROR]}"


def record_from_row(
    queue: str,
    tenant: str,
    key: str,
    until: float | None,
    reason: str,
    since: float,
    circuit: bool,
) -> PauseRecord:
    """A :class:`PauseRecord` from stored columns (``''`` back to ``None``)."""
    return PauseRecord(
        queue=queue,
        tenant=tenant or None,
        key=key or None,
        until=until,
        reason=reason,
        since=since,
        circuit=bool(circuit),
    )


def with_paused(stats: Stats, held: set[tuple[str, str]], tenant: str | None = None) -> Stats:
    """``stats`` with ``QueueStats.paused`` set where a pause holds a queue or a tenant.

    Args:
        stats: The snapshot.
        held: ``(queue, tenant)`` (stored form) of the queue-wide (``''``) and
            tenant pauses in force.
        tenant: The tenant the snapshot is of, if any: its queues are paused
            when the queue or that tenant is.
    """
    if not held:
        return stats
    mine = {"", tenant or ""}

    def mark(name: str, qs: Any) -> Any:
        paused = any((name, t) in held for t in mine) if tenant else (name, "") in held
        tenants = {
            t: attrs.evolve(ts, paused=True) if paused or (name, t) in held else ts
            for t, ts in qs.tenants.items()
        }
        return attrs.evolve(qs, paused=paused, tenants=tenants)

    return attrs.evolve(stats, queues={n: mark(n, qs) for n, qs in stats.queues.items()})
