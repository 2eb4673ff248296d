"""Message control for the facade: cancel, reschedule, pauses, and ``pmsq.Pause``.

``Queue.cancel``/``reschedule``, ``Broker.pause``/``resume``/``pauses`` and
their tenant-handle twins check their arguments here and call the backend's
``Control`` family (:mod:`pmsq.backends.control_family`); a backend without
it refuses with a ``ConfigurationError`` naming itself and ``control``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs

from pmsq.alerts import Alert
from pmsq.backends.control_family import Control
from pmsq.backends.types import PauseRecord
from pmsq.config import check_key, check_queue_name, check_tenant
from pmsq.connections import app_connection
from pmsq.errors import ConfigurationError
from pmsq.message import to_epoch, utc_from_epoch

if TYPE_CHECKING:
    from pmsq.runtime import Runtime

__all__ = [
    "Pause",
    "cancel_ids",
    "cancel_key",
    "pause",
    "pause_alerts",
    "pauses",
    "reschedule",
    "resume",
]

_MAX_REASON = 500


@attrs.frozen
class Pause:
    """A pause in force: what it holds, until when, and why.

    Attributes:
        queue: The paused queue.
        tenant: The paused tenant (``None``: every tenant, or the tenantless key).
        key: The paused key (``None``: the whole queue or tenant).
        until: When it lifts by itself (aware UTC), or ``None`` until resumed.
        reason: Why it was paused (``circuit open: <error>`` for a circuit).
        since: When it was set (aware UTC).
        circuit: True when the circuit breaker opened it.
    """

    queue: str
    tenant: str | None
    key: str | None
    until: dt.datetime | None
    reason: str
    since: dt.datetime
    circuit: bool = False


def _pause(record: PauseRecord) -> Pause:
    return Pause(
        queue=record.queue,
        tenant=record.tenant,
        key=record.key,
        until=None if record.until is None else utc_from_epoch(record.until),
        reason=record.reason,
        since=utc_from_epoch(record.since),
        circuit=record.circuit,
    )


def _control(runtime: Runtime, use: str) -> Control:
    return Control.of(runtime.backend, use)


def cancel_ids(
    runtime: Runtime,
    queue: str,
    ids: Sequence[str],
    *,
    tenant: str | None,
    connection: Any = None,
) -> list[str]:
    """Cancel messages of ``queue`` by id (only ``tenant``'s unless None); the ids removed.

    Raises:
        ConfigurationError: an id is not a string, ``connection`` is unusable,
            or the backend has no ``control`` capability.
    """
    for mid in ids:
        if not isinstance(mid, str) or not mid:
            raise ConfigurationError(f"cancel takes message ids (strings), got {mid!r}")
    control = _control(runtime, "cancel")
    now = runtime.clock.time()
    if connection is None:
        removed = control.cancel(queue, list(ids), tenant=tenant, now=now)
    else:
        with app_connection(connection) as raw:
            removed = control.cancel(queue, list(ids), tenant=tenant, now=now, connection=raw)
    if removed and connection is None:
        runtime.wakeups.notify(queue)  # a removed key head lets the next one go
    return removed


def cancel_key(
    runtime: Runtime, queue: str, key: str, *, tenant: str | None, connection: Any = None
) -> list[str]:
    """Cancel every unsettled message of ``tenant``'s ``key``; the ids removed.

    Raises:
        ConfigurationError: invalid key or tenant, unusable ``connection``, or
            a backend without the ``control`` capability.
    """
    checked = check_key(key)
    if checked is None:
        raise ConfigurationError("cancel needs a message id or key=")
    tenant = check_tenant(tenant)
    control = _control(runtime, "cancel")
    now = runtime.clock.time()
    if connection is not None:
        with app_connection(connection) as raw:
            return control.cancel_key(queue, checked, tenant=tenant, now=now, connection=raw)
    removed = control.cancel_key(queue, checked, tenant=tenant, now=now)
    if removed:
        runtime.wakeups.notify(queue)  # the key's line is free for a new put
    return removed


def reschedule(
    runtime: Runtime,
    queue: str,
    message_id: str,
    *,
    tenant: str | None,
    delay: float | None,
    not_before: dt.datetime | float | None,
) -> bool:
    """Move a waiting message's due time; whether it was moved.

    Raises:
        ConfigurationError: not exactly one of ``delay``/``not_before``, a bad
            value, or a backend without the ``control`` capability.
    """
    if not isinstance(message_id, str) or not message_id:
        raise ConfigurationError(f"reschedule takes a message id, got {message_id!r}")
    if (delay is None) == (not_before is None):
        raise ConfigurationError("reschedule takes delay= (seconds) or not_before= (a time)")
    now = runtime.clock.time()
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 1e10:
            raise ConfigurationError(
                f"delay must be a finite number of seconds >= 0, got {delay!r}"
            )
        at = now + float(delay)
    else:
        at = to_epoch(not_before)  # type: ignore[arg-type]
    moved = _control(runtime, "reschedule").reschedule(
        queue, message_id, at, tenant=tenant, now=now
    )
    if moved:
        runtime.wakeups.notify(queue)
    return moved


def _until(until: object, now: float) -> float | None:
    if until is None:
        return None
    at = to_epoch(until, "until")  # type: ignore[arg-type]
    if at <= now:
        raise ConfigurationError(
            f"until must be in the future (it is {utc_from_epoch(at).isoformat()}, "
            f"now is {utc_from_epoch(now).isoformat()}); resume() lifts a pause"
        )
    return at


def pause(
    runtime: Runtime,
    queue: str,
    *,
    tenant: str | None,
    key: str | None,
    until: dt.datetime | float | None,
    reason: str,
) -> Pause:
    """Store a pause of a queue, a tenant of it or a key; the pause as stored.

    Raises:
        ConfigurationError: invalid name, tenant, key, ``until`` or reason, or
            a backend without the ``control`` capability.
    """
    check_queue_name(queue)
    tenant, key = check_tenant(tenant), check_key(key)
    if not isinstance(reason, str) or len(reason) > _MAX_REASON:
        raise ConfigurationError(
            f"reason must be a string of at most {_MAX_REASON} characters, got {reason!r}"
        )
    control = _control(runtime, "pause")
    now = runtime.clock.time()
    record = PauseRecord(
        queue=queue, tenant=tenant, key=key, until=_until(until, now), reason=reason, since=now
    )
    control.pause(record, now=now)
    return _pause(record)


def resume(runtime: Runtime, queue: str, *, tenant: str | None, key: str | None) -> bool:
    """Lift the pause of exactly this scope; whether one was in force.

    Raises:
        ConfigurationError: invalid arguments or a backend without ``control``.
    """
    check_queue_name(queue)
    tenant, key = check_tenant(tenant), check_key(key)
    lifted = _control(runtime, "resume").resume(queue, tenant, key, now=runtime.clock.time())
    if lifted:
        runtime.wakeups.notify(queue)
    return lifted


def pauses(runtime: Runtime, *, tenant: str | None = None) -> list[Pause]:
    """The pauses in force, by queue, tenant and key.

    With ``tenant`` only that tenant's pauses (of the tenant and of its
    keys) are listed: what a tenant handle may see.

    Raises:
        ConfigurationError: a backend without the ``control`` capability.
    """
    records = _control(runtime, "pauses").pauses(now=runtime.clock.time())
    if tenant is not None:
        records = [r for r in records if r.tenant == tenant]
    return [_pause(r) for r in records]


def pause_alerts(runtime: Runtime) -> list[Alert]:
    """One alert per pause in force: a warning, or critical for an open circuit.

    A backend without the ``control`` capability has no pauses: no alerts.
    """
    if not isinstance(runtime.backend, Control):
        return []
    now = runtime.clock.time()
    out = []
    for p in pauses(runtime):
        kind = "circuit" if p.circuit else "paused"
        metric = f"{kind}:{p.key}" if p.key is not None else kind
        age = max(0.0, now - p.since.timestamp())
        level: Literal["warning", "critical"] = "critical" if p.circuit else "warning"
        out.append(Alert(p.queue, p.tenant, metric, level, age, 0.0))
    return out
