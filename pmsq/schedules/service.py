"""What ``Broker.schedule`` and friends do: validate, store, and fire due slots.

The broker's methods are thin: they call these functions with its Runtime.
Time logic is in :mod:`pmsq.schedules.slots`, storage behind
:class:`pmsq.backends.schedule_family.ScheduleStore`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pmsq.backends.base import Envelope
from pmsq.backends.control_family import Control
from pmsq.backends.schedule_family import (
    Firing,
    StoredSchedule,
    schedule_store,
)
from pmsq.codec import BYTES_FORMAT, decode_headers, encode_headers
from pmsq.config import check_key, check_queue_name, check_tenant
from pmsq.errors import ConfigurationError, PayloadTooLarge, PmsqError
from pmsq.ids import new_message_id
from pmsq.message import utc_from_epoch
from pmsq.schedules.schedule import Schedule
from pmsq.schedules.slots import (
    Timing,
    check_catch_up,
    check_cron,
    check_every,
    check_zone,
    plan,
    slot_iso,
)
from pmsq.schedules.timer import poke_timers

if TYPE_CHECKING:
    from pmsq.runtime import Runtime

__all__ = ["HEADER", "check_schedule_name", "declare", "list_schedules", "remove", "run_due"]

log = logging.getLogger("pmsq.schedules")

#: The header naming the schedule and slot of each message a schedule makes.
HEADER = "pmsq.schedule"
_MAX_NAME = 200


def check_schedule_name(name: object) -> str:
    """Return ``name`` if it is a valid schedule name.

    Raises:
        ConfigurationError: not a printable string of 1-200 characters.
    """
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME or not name.isprintable():
        raise ConfigurationError(
            f"invalid schedule name {name!r}: use 1-{_MAX_NAME} printable characters "
            "(no control characters such as newlines or tabs)"
        )
    return name


def declare(
    runtime: Runtime,
    name: str,
    *,
    queue: str,
    cron: str | None = None,
    every: float | None = None,
    tz: str = "UTC",
    payload: Any = None,
    key: str | None = None,
    tenant: str | None = None,
    priority: int = 0,
    headers: dict[str, Any] | None = None,
    catch_up: str = "latest",
) -> Schedule:
    """Validate a schedule and store it (see ``Broker.schedule``); nothing is stored on error."""
    store = schedule_store(runtime.backend)
    check_schedule_name(name)
    check_queue_name(queue)
    if (cron is None) == (every is None):
        raise ConfigurationError(
            f"schedule {name!r} needs exactly one of cron= or every= "
            f"(got {'both' if cron is not None else 'neither'})"
        )
    cron = None if cron is None else check_cron(cron)
    period = None if every is None else check_every(every)
    check_zone(tz)
    policy = check_catch_up(catch_up)
    key = check_key(key)
    tenant = check_tenant(tenant)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) >= 2**31:
        raise ConfigurationError(f"priority must be an int, got {priority!r}")
    if priority:
        runtime.backend.capabilities.require(runtime.backend.name, "priorities")
    if runtime.backend.queue_config(queue) is None:
        raise ConfigurationError(
            f"schedule {name!r} names unknown queue {queue!r}: declare it first "
            "(broker.declare_queue) so a typo cannot create a queue nobody serves"
        )
    if isinstance(payload, (bytes, bytearray, memoryview)):
        data, fmt = bytes(payload), BYTES_FORMAT
    else:
        data, fmt = runtime.codec.encode(payload), runtime.codec.format
    if len(data) > runtime.max_payload_bytes:
        raise PayloadTooLarge(
            f"schedule {name!r}: payload is {len(data):,} bytes encoded, over "
            f"max_payload_bytes={runtime.max_payload_bytes:,}"
        )
    now = runtime.clock.time()
    timing = Timing(cron, period, tz, anchor=now)
    first = timing.next_after(now)
    if first is None:
        raise ConfigurationError(f"cron expression {cron!r} never matches a date")
    stored = store.save_schedule(
        StoredSchedule(
            name=name,
            tenant=tenant,
            queue=queue,
            cron=cron,
            every=period,
            tz=tz,
            anchor=now,
            catch_up=policy,
            data=data,
            format=fmt,
            key=key,
            priority=priority,
            headers=encode_headers(headers),
            created_at=now,
            next_at=first,
        ),
        now=now,
    )
    poke_timers(runtime)  # a worker's timer here may sleep past the new first slot
    return _public(runtime, stored, _held_scopes(runtime))


def list_schedules(runtime: Runtime, *, tenant: str | None, all_tenants: bool) -> list[Schedule]:
    """Stored schedules as ``Schedule`` values: all, or one tenant's."""
    rows = schedule_store(runtime.backend).list_schedules()
    held = _held_scopes(runtime)
    return [_public(runtime, s, held) for s in rows if all_tenants or s.tenant == tenant]


def _held_scopes(runtime: Runtime) -> set[tuple[str, str | None, str | None]]:
    """The (queue, tenant, key) scopes a pause in force holds; none without ``control``."""
    if not isinstance(runtime.backend, Control):
        return set()
    records = runtime.backend.pauses(now=runtime.clock.time())
    return {(p.queue, p.tenant, p.key) for p in records}


def _is_held(s: StoredSchedule, held: set[tuple[str, str | None, str | None]]) -> bool:
    # What the schedule makes is held by its queue's pause, its tenant's, or its key's.
    scopes: list[tuple[str, str | None, str | None]] = [(s.queue, None, None)]
    if s.tenant is not None:
        scopes.append((s.queue, s.tenant, None))
    if s.key is not None:
        scopes.append((s.queue, s.tenant, s.key))
    return any(scope in held for scope in scopes)


def remove(runtime: Runtime, name: str, *, tenant: str | None) -> bool:
    """Delete a schedule; whether it existed."""
    return schedule_store(runtime.backend).delete_schedule(
        check_tenant(tenant), check_schedule_name(name)
    )


def run_due(runtime: Runtime) -> int:
    """Fire every due slot of the store now; how many messages were made.

    A plan that another broker committed first makes nothing here; a firing
    that failed (a full queue...) is logged and tried again at the next run.
    """
    store = schedule_store(runtime.backend)
    now = runtime.clock.time()
    due = store.due_schedules(now)
    if not due:
        return 0
    firings = [_firing(runtime, s, now) for s in due]
    results = store.fire_schedules(firings, now=now)
    made = 0
    for f, result in zip(firings, results, strict=True):
        if isinstance(result, PmsqError):
            log.warning(
                "schedule %r could not fire: %s; it is tried again at the next run",
                f.name,
                result,
                extra={"pmsq": {"event": "schedule_failed", "schedule": f.name}},
            )
            continue
        made += result
        if result:
            runtime.wakeups.notify(f.envelopes[0].queue)
    return made


def _firing(runtime: Runtime, s: StoredSchedule, now: float) -> Firing:
    assert s.next_at is not None
    timing = Timing(s.cron, s.every, s.tz, anchor=s.anchor)
    p = plan(timing, s.next_at, now, check_catch_up(s.catch_up))
    envelopes = tuple(_envelope(runtime, s, slot, now) for slot in p.slots)
    return Firing(
        name=s.name,
        tenant=s.tenant,
        version=s.version,
        next_at=p.next_at,
        last_at=p.slots[-1] if p.slots else s.last_at,
        fired_at=now if p.slots else s.fired_at,
        envelopes=envelopes,
    )


def _envelope(runtime: Runtime, s: StoredSchedule, slot: float, now: float) -> Envelope:
    iso = slot_iso(slot)
    headers = decode_headers(s.headers)
    headers[HEADER] = {"name": s.name, "slot": iso}
    mid = new_message_id(now)
    for hook in runtime.put_hooks:
        hook(s.queue, mid, None, headers)
    return Envelope(
        id=mid,
        queue=s.queue,
        data=s.data,
        format=s.format,
        key=s.key,
        tenant=s.tenant,
        priority=s.priority,
        available_at=now,
        enqueued_at=now,
        headers=encode_headers(headers),
        dedup_id=f"schedule:{s.name}:{iso}",
        topic=None,
        # A schedule starts a chain of its own, whoever runs it (even a handler).
        correlation_id=mid,
        causation_id=None,
    )


def _public(
    runtime: Runtime, s: StoredSchedule, held: set[tuple[str, str | None, str | None]]
) -> Schedule:
    if s.format == BYTES_FORMAT:
        payload: Any = s.data
    else:
        try:
            payload = runtime.codec.decode(s.data)
        except PmsqError:
            payload = s.data  # another codec's payload: shown as stored
    return Schedule(
        name=s.name,
        queue=s.queue,
        cron=s.cron,
        every=s.every,
        tz=s.tz,
        next_at=None if s.next_at is None else utc_from_epoch(s.next_at),
        last_at=None if s.last_at is None else utc_from_epoch(s.last_at),
        payload=payload,
        key=s.key,
        tenant=s.tenant,
        priority=s.priority,
        headers=decode_headers(s.headers),
        catch_up=s.catch_up,
        fired_at=None if s.fired_at is None else utc_from_epoch(s.fired_at),
        paused=_is_held(s, held),
    )
