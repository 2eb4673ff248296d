"""The demo's history and its verification: pure functions over recorded facts.

The app records what it published (in publish order, with each event's
per-property sequence number and the queues it was routed to), what each
handler finished (in the order handlers finished, which for one property is
processing order since a key is never processed concurrently), what was
dead-lettered, and each property's final calendar. ``verify`` checks those
facts against each other; it knows nothing of the broker, so a test can hand
it a deliberately broken history and watch it fail.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "ORDERED_QUEUES",
    "Check",
    "Handled",
    "History",
    "Published",
    "ReminderFacts",
    "apply_event",
    "replay_calendar",
    "verify",
]

#: The channel manager's queue (down for maintenance for a while; a circuit breaker).
CHANNEL_QUEUE = "channel"
#: Queues fed by topic subscriptions in publish order (the fallback queue is fed by failures).
ORDERED_QUEUES = ("accounting", "calendar", "cleaning", "email", CHANNEL_QUEUE)
FALLBACK_QUEUE = "email.fallback"
CALENDAR_QUEUE = "calendar"
#: Guest reminders, put with each booking and withdrawn with its cancellation.
REMINDER_QUEUE = "reminders"

Calendar = dict[str, tuple[int, int]]  # booking id -> (first night, nights)


@attrs.frozen
class Published:
    """One published event.

    Attributes:
        event_id: Unique id of the event (in the payload of every copy).
        topic: Topic it was published on.
        tenant: Management company.
        prop: Property id within the tenant.
        seq: 1 for the property's first event, then 2, 3... in publish order.
        queues: Queues the publish routed copies to.
        payload: The event's payload.
    """

    event_id: str
    topic: str
    tenant: str
    prop: int
    seq: int
    queues: tuple[str, ...]
    payload: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def key(self) -> str:
        """The property's ordering key within its tenant."""
        return property_key(self.tenant, self.prop)


@attrs.frozen
class Handled:
    """A handler finished an event's copy successfully."""

    queue: str
    event_id: str
    tenant: str
    prop: int
    seq: int

    @property
    def key(self) -> str:
        """The property's ordering key within its tenant."""
        return property_key(self.tenant, self.prop)


@attrs.frozen
class ReminderFacts:
    """The guest reminders of the day, and what the store's journal says of each.

    Attributes:
        booking_of: Reminder message id -> its booking.
        sent: Reminder ids whose handler ran to the end (in finishing order).
        withdrawn: Booking -> how many reminders its cancellation withdrew.
        journal: Reminder id -> its journal events, oldest first.
    """

    booking_of: Mapping[str, int]
    sent: Sequence[str]
    withdrawn: Mapping[int, int]
    journal: Mapping[str, Sequence[str]]


@attrs.frozen
class History:
    """Everything the run recorded, for :func:`verify`.

    Attributes:
        published: Events in publish order.
        handled: Successful handler runs in the order they finished.
        dead: Event ids dead-lettered, by queue.
        calendars: Each property's final calendar as the calendar handler built it.
        reminders: The guest reminders, if the run recorded them.
        channel: ``(circuit seen open, still paused at the end, failed pushes)``
            of the channel manager's maintenance, if the run recorded it.
    """

    published: Sequence[Published]
    handled: Sequence[Handled]
    dead: Mapping[str, Sequence[str]]
    calendars: Mapping[str, Calendar]
    reminders: ReminderFacts | None = None
    channel: tuple[bool, bool, int] | None = None


@attrs.frozen
class Check:
    """One row of the verification.

    Attributes:
        name: What was checked.
        queue: Which queue.
        detail: The figures behind the verdict.
        ok: The verdict.
        problems: A few examples of what went wrong.
    """

    name: str
    queue: str
    detail: str
    ok: bool
    problems: tuple[str, ...] = ()


def property_key(tenant: str, prop: int) -> str:
    """``tenant/property:N``: how the demo names one property of one company."""
    return f"{tenant}/property:{prop}"


def apply_event(calendar: Calendar, topic: str, payload: Mapping[str, Any]) -> None:
    """Apply one booking event to a property's calendar (idempotent per event).

    An event arriving out of order leaves a visible trace: a modification or
    cancellation before its booking is ignored, so the booking then stays
    with the wrong dates or is never cancelled.
    """
    booking = str(payload.get("booking_id"))
    if topic == "booking.created":
        calendar[booking] = (int(payload["start"]), int(payload["nights"]))
    elif topic == "booking.modified":
        if booking in calendar:
            calendar[booking] = (int(payload["start"]), int(payload["nights"]))
    elif topic == "booking.cancelled":
        calendar.pop(booking, None)


def replay_calendar(
    published: Iterable[Published], skip: Iterable[str] = ()
) -> dict[str, Calendar]:
    """Each property's calendar from replaying its calendar events in publish order.

    Args:
        published: Events in publish order.
        skip: Event ids the calendar never applied (dead-lettered there).
    """
    skipped = set(skip)
    out: dict[str, Calendar] = {}
    for e in published:
        if CALENDAR_QUEUE in e.queues and e.event_id not in skipped:
            apply_event(out.setdefault(e.key, {}), e.topic, e.payload)
    return out


def _accounted(history: History, queue: str, expected: set[str]) -> Check:
    done = {h.event_id for h in history.handled if h.queue == queue}
    dead = set(history.dead.get(queue, ()))
    missing = expected - done - dead
    unknown = (done | dead) - expected
    problems = [f"{e} never processed nor dead-lettered" for e in sorted(missing)[:3]]
    problems += [f"{e} processed but never sent here" for e in sorted(unknown)[:3]]
    detail = f"{len(expected):,} sent: {len(done & expected):,} processed, {len(dead):,} dead"
    if missing:
        detail += f", {len(missing):,} missing"
    if unknown:
        detail += f", {len(unknown):,} unexpected"
    return Check("nothing lost", queue, detail, not missing and not unknown, tuple(problems))


def _ordered(history: History, queue: str) -> Check:
    runs: dict[str, list[int]] = {}
    for h in history.handled:
        if h.queue != queue:
            continue
        seqs = runs.setdefault(h.key, [])
        # At-least-once: a redelivery right after its own first run is allowed;
        # anything else going backwards is an ordering failure.
        if not seqs or seqs[-1] != h.seq:
            seqs.append(h.seq)
    problems = []
    for key, seqs in sorted(runs.items()):
        for before, after in itertools.pairwise(seqs):
            if after <= before:
                problems.append(f"{key}: event #{after} handled after #{before}")
                break
    detail = f"{len(runs)} properties, {len(problems)} out of order"
    return Check("property order", queue, detail, not problems, tuple(problems[:3]))


def _calendars(history: History) -> Check:
    expected = replay_calendar(history.published, history.dead.get(CALENDAR_QUEUE, ()))
    keys = set(expected) | set(history.calendars)
    problems = []
    for key in sorted(keys):
        want = expected.get(key, {})
        got = dict(history.calendars.get(key, {}))
        if want != got:
            diff = sorted(set(want.items()) ^ set(got.items()))[:2]
            problems.append(f"{key}: differs on {diff}")
    detail = f"{len(keys)} properties, {len(problems)} differ"
    return Check("calendar = replay", CALENDAR_QUEUE, detail, not problems, tuple(problems[:3]))


def _reminders(facts: ReminderFacts, dead: Sequence[str]) -> Check:
    """Every reminder was sent or withdrawn, never delivered after its withdrawal."""
    problems = []
    sent = set(facts.sent)
    acked = cancelled = in_flight = 0
    for mid, events in sorted(facts.journal.items()):
        last = events[-1] if events else None
        if last == "acked":
            acked += 1
        elif last == "cancelled":
            cancelled += 1
            cut = list(events).index("cancelled")
            if "delivered" in events[cut:]:
                problems.append(f"reminder {mid} was delivered after it was withdrawn")
            if mid in sent:
                # Its handler had started before the cancel (in flight): allowed,
                # and its outcome was discarded, never acked.
                in_flight += 1
                if "delivered" not in events[:cut]:
                    problems.append(f"reminder {mid} was sent but never delivered")
        elif mid not in dead:
            problems.append(f"reminder {mid} was neither sent nor withdrawn ({last})")
    expected = sum(facts.withdrawn.values())
    if cancelled != expected:
        problems.append(f"{expected} withdrawn by cancellations, but {cancelled} journaled")
    missing = set(facts.booking_of) - set(facts.journal)
    problems += [f"reminder {mid} has no journal" for mid in sorted(missing)[:3]]
    bookings = sum(1 for n in facts.withdrawn.values() if n)
    detail = (
        f"{len(facts.booking_of):,} put: {acked:,} sent, {cancelled:,} withdrawn "
        f"by {bookings:,} cancellations"
    )
    if in_flight:
        detail += f" ({in_flight} in flight, outcome discarded)"
    return Check("cancel withdraws", REMINDER_QUEUE, detail, not problems, tuple(problems[:3]))


def _channel(channel: tuple[bool, bool, int], dead: Sequence[str]) -> Check:
    """The maintenance opened the channel's circuit, which closed again; nothing died of it."""
    opened, still_paused, failures = channel
    problems = []
    if not opened:
        problems.append("the circuit never opened during the maintenance")
    if still_paused:
        problems.append("the queue is still paused at the end of the day")
    if dead:
        problems.append(f"{len(dead)} pushes dead-lettered by the maintenance")
    detail = (
        f"API down: {failures} failed pushes, circuit "
        f"{'opened and closed' if opened and not still_paused else 'did not open and close'}, "
        f"{len(dead)} dead"
    )
    return Check("maintenance held", CHANNEL_QUEUE, detail, not problems, tuple(problems))


def verify(history: History) -> list[Check]:
    """Check the run: nothing lost, per-property order, calendars consistent.

    Returns:
        One ``Check`` per queue and property; the run passed if all are ok.
    """
    checks = []
    for queue in ORDERED_QUEUES:
        expected = {e.event_id for e in history.published if queue in e.queues}
        checks.append(_accounted(history, queue, expected))
    checks.append(_accounted(history, FALLBACK_QUEUE, set(history.dead.get("email", ()))))
    checks.extend(_ordered(history, q) for q in ORDERED_QUEUES)
    checks.append(_calendars(history))
    if history.reminders is not None:
        checks.append(_reminders(history.reminders, history.dead.get(REMINDER_QUEUE, ())))
    if history.channel is not None:
        checks.append(_channel(history.channel, history.dead.get(CHANNEL_QUEUE, ())))
    return checks
