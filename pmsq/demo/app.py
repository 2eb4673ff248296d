"""The demo app: queues, handlers with injected failures, the publisher, the run.

What the day shows:

- fan-out: ``booking.*`` goes to calendar, email and cleaning; payments to
  accounting and email; cancellations also to accounting (refunds);
- per-property order (``key="property:N"`` within each tenant);
- a flaky email provider (about 20 % of sends fail) retried with backoff;
- a payment gateway timing out on some first attempts, retried;
- poison guest messages that always fail: dead-lettered after
  ``max_attempts``, each copied to ``email.fallback`` which "sends an SMS";
- alert rules stored with ``broker.alert`` and their callbacks firing;
- bookings kept in the app's own table, next to pmsq's: a new booking, its
  ``booking.created`` event and its guest reminders are written in one
  transaction; a cancellation updates the booking, withdraws its reminders
  (``cancel(key=..., connection=app)``) and publishes ``booking.cancelled``
  in one transaction too;
- the channel manager's API down for maintenance for a while: its queue's
  circuit breaker opens after a few failures, holds the channel's messages
  (no attempt spent), probes, and closes when the API is back.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable

import pmsq
from pmsq.backends.families import History as HistoryFamily
from pmsq.demo.model import (
    CHANNEL_QUEUE,
    FALLBACK_QUEUE,
    ORDERED_QUEUES,
    REMINDER_QUEUE,
    Calendar,
    Handled,
    History,
    Published,
    ReminderFacts,
    apply_event,
    property_key,
)
from pmsq.demo.scenario import Day, Event

__all__ = ["BINDINGS", "DemoRun"]

#: Topic pattern -> queue subscriptions of the demo.
BINDINGS: tuple[tuple[str, str], ...] = (
    ("booking.*", "calendar"),
    ("booking.*", "email"),
    ("booking.*", "cleaning"),
    ("guest.*", "email"),
    ("payment.received", "email"),
    ("payment.*", "accounting"),
    ("booking.cancelled", "accounting"),
    ("booking.*", CHANNEL_QUEUE),
)
EVENTS_PER_SECOND = 50.0
POISON_AT = (0.1, 0.25, 0.4)
#: Halfway through, one company's channel manager resyncs: a burst of this many events.
BURST_EVENTS = 400
BURST_TENANT = "coastal-cottages"
#: Reminders put with each booking: (name, share of the day's duration they wait).
REMINDERS = (("pre-arrival email", 0.15), ("check-in code", 0.3))
#: The channel manager's maintenance window, as shares of the day's duration.
MAINTENANCE = (0.3, 0.45)
#: Failures that open the channel queue's circuit (within CIRCUIT_WITHIN seconds).
CIRCUIT_FAILURES = 3
CIRCUIT_WITHIN = 10.0


class EmailProviderError(Exception):
    """The (simulated) email provider refused the send; worth retrying."""


class TemplateError(Exception):
    """The (simulated) template cannot render this message; never succeeds."""


class GatewayTimeout(Exception):
    """The (simulated) payment gateway did not answer in time."""


class ChannelDown(Exception):
    """The (simulated) channel manager's API is down for maintenance."""


class Reminders:
    """Records the reminders put, sent and withdrawn (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._booking_of: dict[str, int] = {}
        self._sent: list[str] = []
        self._withdrawn: dict[int, int] = {}

    def put(self, mid: str, booking: int) -> None:
        with self._lock:
            self._booking_of[mid] = booking

    def sent(self, mid: str) -> None:
        with self._lock:
            self._sent.append(mid)

    def withdrawn(self, booking: int, count: int) -> None:
        with self._lock:
            self._withdrawn[booking] = self._withdrawn.get(booking, 0) + count

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._booking_of)

    def counts(self) -> tuple[int, int, int]:
        """``(put, sent, withdrawn)`` so far."""
        with self._lock:
            return len(self._booking_of), len(self._sent), sum(self._withdrawn.values())

    def with_journal(self, journal: dict[str, list[str]]) -> ReminderFacts:
        with self._lock:
            return ReminderFacts(
                booking_of=dict(self._booking_of),
                sent=list(self._sent),
                withdrawn=dict(self._withdrawn),
                journal=journal,
            )


class DemoRun:
    """One demo day on the store at ``path``.

    Args:
        path: The SQLite file (must not exist yet).
        duration: Seconds of publishing; draining follows.
        seed: Seed of the day and the injected failures.
        rate: Events published per second.
        routes: ``pmsq.connect`` routes (``pmsq demo --payments-db``).
    """

    def __init__(
        self,
        path: str,
        *,
        duration: float,
        seed: int | None = None,
        rate: float | None = None,
        routes: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self.duration = duration
        self.rate = rate or EVENTS_PER_SECOND
        self.rng = random.Random(seed)
        self.day = Day(random.Random(self.rng.random()))
        self.lock = threading.Lock()
        self.published: list[Published] = []
        self.handled: list[Handled] = []
        self.calendars: dict[str, Calendar] = {}
        self.alerts_fired: list[pmsq.Alert] = []
        self.alerts_fired_at: list[float] = []  # seconds into the day, as ``elapsed()``
        self.sms_sent = 0
        self.started = 0.0
        self.publishing_done = threading.Event()
        self.drained = threading.Event()
        self.stop = threading.Event()
        self.routes = routes
        self.broker = pmsq.connect(path, durability="normal", routes=routes)
        # The app's own connection to the same file, for its bookings table and
        # for the puts and cancels that must commit with it (publisher thread only).
        self.app = sqlite3.connect(path, check_same_thread=False)
        self._seq: dict[str, int] = {}
        self.reminders = Reminders()
        self.channel_failures = 0
        self.circuit_seen = False

    # -- setup -----------------------------------------------------------------
    def setup(self) -> None:
        """Declare the queues, bind the topics, store alert rules, register handlers."""
        b = self.broker
        fast = pmsq.Backoff(base=0.1, factor=2.0, cap=1.0, jitter=True)
        b.declare_queue("calendar", max_attempts=5, backoff=fast)
        b.declare_queue("cleaning", max_attempts=5, backoff=fast)
        b.declare_queue("accounting", max_attempts=6, backoff=fast)
        b.declare_queue("email", max_attempts=5, backoff=fast, fallback=FALLBACK_QUEUE)
        b.declare_queue(FALLBACK_QUEUE, max_attempts=3, backoff=fast)
        b.declare_queue(REMINDER_QUEUE, max_attempts=5, backoff=fast)
        b.declare_queue(
            CHANNEL_QUEUE,
            # The probes of an open circuit spend attempts; the held messages do not.
            max_attempts=20,
            backoff=fast,
            circuit=pmsq.Circuit(
                failures=CIRCUIT_FAILURES,
                within=CIRCUIT_WITHIN,
                open_for=max(0.3, self.duration * 0.04),
                scope="queue",
            ),
        )
        with self.app:
            self.app.execute(
                "CREATE TABLE IF NOT EXISTS demo_bookings (id INTEGER PRIMARY KEY, "
                "tenant TEXT, property INTEGER, status TEXT)"
            )
        for pattern, queue in BINDINGS:
            b.subscribe(pattern, queue=queue)
        b.alert("email", max_failure_rate=0.35, max_age=10, callback=self._on_alert)
        b.alert("accounting", max_depth=500, callback=self._on_alert)
        b.alert("calendar", max_age=5, callback=self._on_alert)
        b.handler("calendar", concurrency=2)(self.update_calendar)
        b.handler("email", concurrency=3)(self.send_email)
        b.handler(FALLBACK_QUEUE, concurrency=1)(self.send_sms)
        b.handler("cleaning", concurrency=1)(self.schedule_cleaning)
        b.handler("accounting", concurrency=2)(self.post_payment)
        b.handler(REMINDER_QUEUE, concurrency=2)(self.send_reminder)
        b.handler(CHANNEL_QUEUE, concurrency=2)(self.push_channel)

    def _on_alert(self, alert: pmsq.Alert) -> None:
        with self.lock:
            self.alerts_fired.append(alert)
            self.alerts_fired_at.append(self.elapsed())

    # -- handlers --------------------------------------------------------------
    def _record(self, msg: pmsq.Message) -> None:
        p = msg.payload
        with self.lock:
            self.handled.append(
                Handled(msg.queue, p["event_id"], p["tenant"], int(p["property"]), int(p["seq"]))
            )

    def _work(self, low_ms: float, high_ms: float) -> None:
        time.sleep(self.rng.uniform(low_ms, high_ms) / 1000.0)

    def update_calendar(self, msg: pmsq.Message) -> None:
        """Apply a booking event to the property's calendar."""
        self._work(1, 4)
        p = msg.payload
        key = property_key(p["tenant"], int(p["property"]))
        with self.lock:
            apply_event(self.calendars.setdefault(key, {}), str(msg.topic), p)
        self._record(msg)

    def send_email(self, msg: pmsq.Message) -> None:
        """Send the guest or owner email; the provider is flaky, some messages are poison."""
        if msg.payload.get("poison"):
            raise TemplateError("guest message has no text to render")
        self._work(3, 12)
        if self.rng.random() < 0.2:
            raise EmailProviderError("SMTP 421: provider busy, try again later")
        self._record(msg)

    def send_sms(self, msg: pmsq.Message) -> None:
        """The fallback path: an SMS for each email that was dead-lettered."""
        self._work(1, 3)
        with self.lock:
            self.sms_sent += 1
        self._record(msg)

    def schedule_cleaning(self, msg: pmsq.Message) -> None:
        """Book or cancel the cleaning crew for the stay."""
        self._work(1, 3)
        self._record(msg)

    def post_payment(self, msg: pmsq.Message) -> None:
        """Post a payment (or refund); the gateway times out on some first attempts."""
        self._work(2, 6)
        event_id = str(msg.payload["event_id"])
        flaky = zlib.crc32(event_id.encode()) % 100 < 15  # the same payments, every run
        if msg.topic == "payment.received" and msg.attempt == 1 and flaky:
            raise GatewayTimeout("payment gateway did not answer within 5s")
        self._record(msg)

    def send_reminder(self, msg: pmsq.Message) -> None:
        """Send a guest reminder (withdrawn if the booking is cancelled first)."""
        self._work(1, 3)
        self.reminders.sent(msg.id)

    def in_maintenance(self) -> bool:
        """The channel manager's API is down: the window, and until the circuit has opened."""
        start, end = (self.duration * f for f in MAINTENANCE)
        elapsed = self.elapsed()
        return start <= elapsed and (elapsed < end or self.channel_failures < CIRCUIT_FAILURES)

    def push_channel(self, msg: pmsq.Message) -> None:
        """Push the booking's availability to the channel manager (down for a while)."""
        if self.in_maintenance():
            with self.lock:
                self.channel_failures += 1
            raise ChannelDown("503 Service Unavailable: scheduled maintenance")
        self._work(1, 3)
        self._record(msg)

    # -- publishing ------------------------------------------------------------
    def _publish_booking(self, event: Event, payload: dict[str, object], key: str) -> list[str]:
        """Write the booking row, its event and its reminders (or their withdrawal) at once."""
        booking = int(event.payload["booking_id"])
        b = self.broker
        with self.app:  # one transaction: commit on success, roll back on error
            if event.topic == "booking.created":
                self.app.execute(
                    "INSERT INTO demo_bookings VALUES (?, ?, ?, 'confirmed')",
                    (booking, event.tenant, event.prop),
                )
            elif event.topic == "booking.cancelled":
                self.app.execute(
                    "UPDATE demo_bookings SET status = 'cancelled' WHERE id = ?", (booking,)
                )
                withdrawn = (
                    b.tenant(event.tenant)
                    .queue(REMINDER_QUEUE)
                    .cancel(key=f"booking:{booking}", connection=self.app)
                )
            ids = []
            if not self.routes:
                ids = b.publish(
                    event.topic, payload, key=key, tenant=event.tenant, connection=self.app
                )
            made = []
            if event.topic == "booking.created":
                reminders = b.tenant(event.tenant).queue(REMINDER_QUEUE)
                for name, wait in REMINDERS:
                    made.append(
                        reminders.put(
                            {"booking_id": booking, "reminder": name},
                            key=f"booking:{booking}",
                            delay=self.duration * wait * self.rng.uniform(0.5, 1.5),
                            connection=self.app,
                        )
                    )
        if self.routes:
            # With payments in a store of their own, the event's copies span two
            # databases, which no one transaction of the app's covers: publish it
            # right after the booking commits, with a dedup id, so a retry after a
            # failure completes it without duplicates (docs/several-stores.md).
            ids = b.publish(
                event.topic,
                payload,
                key=key,
                tenant=event.tenant,
                dedup_id=f"{event.topic}:{payload['event_id']}",
            )
        # Recorded once committed (a rolled-back transaction leaves nothing).
        if event.topic == "booking.cancelled":
            self.reminders.withdrawn(booking, withdrawn)
        for mid in made:
            self.reminders.put(mid, booking)
        return ids

    def publish(self, event: Event) -> None:
        """Publish one event with the next sequence number of its property."""
        key = property_key(event.tenant, event.prop)
        seq = self._seq.get(key, 0) + 1
        self._seq[key] = seq
        event_id = f"{event.tenant}/{event.prop}/{seq}"
        payload = {
            **event.payload,
            "event_id": event_id,
            "tenant": event.tenant,
            "property": event.prop,
            "seq": seq,
        }
        queues = self.broker.route(event.topic)
        key = f"property:{event.prop}"
        if event.topic in ("booking.created", "booking.cancelled"):
            self._publish_booking(event, payload, key)
        else:
            self.broker.publish(event.topic, payload, key=key, tenant=event.tenant)
        with self.lock:
            self.published.append(
                Published(
                    event_id, event.topic, event.tenant, event.prop, seq, tuple(queues), payload
                )
            )

    def _publisher(self) -> None:
        try:
            poisons = sorted(self.duration * f for f in POISON_AT)
            burst_at: float | None = self.duration * 0.5
            interval = 1.0 / self.rate
            due = time.monotonic()
            while not self.stop.is_set():
                elapsed = time.monotonic() - self.started
                if elapsed >= self.duration:
                    break
                if poisons and elapsed >= poisons[0]:
                    poisons.pop(0)
                    self.publish(self.day.poison())
                if burst_at is not None and elapsed >= burst_at:
                    # A backlog for the monitor to show; other companies keep flowing.
                    burst_at = None
                    for _ in range(BURST_EVENTS):
                        self.publish(self.day.next_event(BURST_TENANT))
                self.publish(self.day.next_event())
                due += interval
                pause = due - time.monotonic()
                if pause > 0:
                    self.stop.wait(pause)
            for _ in poisons:
                if not self.stop.is_set():
                    self.publish(self.day.poison())
        finally:
            self.publishing_done.set()

    def _supervisor(self, deadline: float) -> None:
        # Evaluate alerts (firing callbacks) and notice when every queue is empty.
        while not self.stop.wait(0.25):
            self.broker.check_alerts()
            if any(p.circuit and p.queue == CHANNEL_QUEUE for p in self.broker.pauses()):
                self.circuit_seen = True
            if not self.publishing_done.is_set():
                continue
            snap = self.broker.stats()
            if all(q.depth == 0 for q in snap.queues.values()) or time.monotonic() > deadline:
                self.drained.set()
                return

    # -- the run ------------------------------------------------------------------
    def start(self) -> Callable[[], None]:
        """Start consumers, publisher and supervisor; return a function stopping them."""
        self.setup()
        consumers = start_consumers(self.broker)
        self.started = time.monotonic()
        threads = [
            threading.Thread(target=self._publisher, name="pmsq-demo-publisher", daemon=True),
            threading.Thread(
                target=self._supervisor,
                args=(self.started + self.duration + max(30.0, self.duration),),
                name="pmsq-demo-supervisor",
                daemon=True,
            ),
        ]
        for t in threads:
            t.start()

        def stop() -> None:
            self.stop.set()
            for t in threads:
                t.join(timeout=10)
            consumers.stop(timeout=10)

        return stop

    def elapsed(self) -> float:
        """Seconds since publishing started."""
        return time.monotonic() - self.started if self.started else 0.0

    def history(self) -> History:
        """The recorded facts plus the store's dead letters (call after stopping)."""
        dead: dict[str, list[str]] = {}
        for queue in (*ORDERED_QUEUES, FALLBACK_QUEUE):
            dead[queue] = [
                str(d.message.payload.get("event_id"))
                for d in self.broker.dead_letters(queue).list()
            ]
        dead[REMINDER_QUEUE] = [
            d.message.id for d in self.broker.dead_letters(REMINDER_QUEUE).list()
        ]
        journal = self.broker.backend
        assert isinstance(journal, HistoryFamily)
        reminders = self.reminders.with_journal(
            {
                mid: [e.event for e in journal.history(message_id=mid)]
                for mid in self.reminders.ids()
            }
        )
        with self.lock:
            return History(
                published=list(self.published),
                handled=list(self.handled),
                dead=dead,
                calendars={k: dict(v) for k, v in self.calendars.items()},
                reminders=reminders,
                channel=(
                    self.circuit_seen,
                    any(p.queue == CHANNEL_QUEUE for p in self.broker.pauses()),
                    self.channel_failures,
                ),
            )

    def close(self) -> None:
        """Close the demo's broker and the app's connection."""
        self.app.close()
        self.broker.close()


def start_consumers(broker: pmsq.Broker) -> pmsq.Worker:
    """Run the registered handlers on a started ``pmsq.Worker`` thread pool."""
    worker = pmsq.Worker(broker, concurrency=8)
    worker.start()
    return worker
