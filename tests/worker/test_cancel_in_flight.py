"""A message cancelled while its handler runs, with real workers of every driver.

The worker learns it at the handler's next heartbeat (``extend`` raises
``LeaseLost``): an async handler is cancelled, a handler process killed, a
sync handler runs on and its outcome is discarded; nothing is settled, so the
cancellation is never a failure. The key's next message runs only once the
in-flight handler ended: the store let the key go at the cancel, but the
worker that still runs a handler of the key hands it back until then.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import pmsq
from pmsq.worker.gone import why_gone
from worker import process_handlers
from worker._support import Running, log_records, wait_for

# Short leases: a beat every 0.1 s, so the cancel is noticed quickly.
LEASE = 0.3
DEADLINE_S = 30.0


class Timeline:
    """What the handlers did, in order (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[str] = []

    def note(self, event: str) -> None:
        with self._lock:
            self.events.append(event)

    def has(self, event: str) -> bool:
        with self._lock:
            return event in self.events

    def index(self, event: str) -> int:
        with self._lock:
            return self.events.index(event)


def journal(broker: pmsq.Broker, mid: str) -> list[str]:
    return [e.event for e in broker.backend.history(message_id=mid)]  # type: ignore[attr-defined]


def test_an_async_handler_is_cancelled_and_the_key_moves_on_after_it(
    live: pmsq.Broker,
    start: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="pmsq.worker")
    q = live.declare_queue("ota", lease=LEASE, max_attempts=1)
    seen = Timeline()

    @live.handler("ota", concurrency=2)
    async def push(msg: pmsq.Message) -> None:
        n = msg.payload["n"]
        seen.note(f"start {n}")
        try:
            if n == 1:
                await anyio.sleep(60)  # an OTA call that hangs
        except anyio.get_cancelled_exc_class():
            seen.note("cancelled 1")
            raise
        finally:
            seen.note(f"end {n}")

    first = q.put({"n": 1}, key="property:1")
    second = q.put({"n": 2}, key="property:1")
    start(live, concurrency=4)
    wait_for(lambda: seen.has("start 1"), what="the first handler to start")
    assert q.cancel(first) is True
    wait_for(lambda: seen.has("end 2"), what="the key's next message to be handled")

    assert seen.has("cancelled 1")
    assert seen.index("end 1") < seen.index("start 2")
    # Nothing was settled for the cancelled message: no retry, no dead letter.
    assert journal(live, first)[-1] == "cancelled"
    assert live.dead_letters("ota").list() == []
    wait_for(lambda: journal(live, second)[-1] == "acked", what="the second ack")
    wait_for(lambda: log_records(caplog, "message_gone"), what="the message_gone line")
    [gone] = log_records(caplog, "message_gone")
    assert (gone["message_id"], gone["why"], gone["handler"]) == (first, "cancelled", "cancelled")
    [discarded] = log_records(caplog, "outcome_discarded")
    assert (discarded["message_id"], discarded["handler"]) == (first, "was cancelled")


def test_a_sync_handler_runs_on_its_outcome_is_discarded_and_the_key_waits_for_it(
    live: pmsq.Broker,
    start: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="pmsq.worker")
    q = live.declare_queue("cleaning", lease=LEASE)
    seen = Timeline()
    release = threading.Event()

    @live.handler("cleaning", concurrency=2)
    def book_crew(msg: pmsq.Message) -> None:
        n = msg.payload["n"]
        seen.note(f"start {n}")
        if n == 1:
            assert release.wait(30)  # a slow call to the cleaning company
        seen.note(f"end {n}")

    first = q.put({"n": 1}, key="property:7", tenant="acme")
    second = q.put({"n": 2}, key="property:7", tenant="acme")
    start(live, concurrency=4)
    wait_for(lambda: seen.has("start 1"), what="the first handler to start")
    assert live.tenant("acme").queue("cleaning").cancel(first) is True

    # The worker noticed, and it has claimed the key's next message (the store
    # let the key go at the cancel) and handed it back: still not started.
    wait_for(lambda: log_records(caplog, "message_gone"), what="the heartbeat to notice")
    wait_for(lambda: log_records(caplog, "key_held"), what="the next message to be held")
    assert not seen.has("start 2")
    release.set()
    wait_for(lambda: seen.has("end 2"), what="the key's next message")

    assert seen.index("end 1") < seen.index("start 2")
    [gone] = log_records(caplog, "message_gone")
    assert (gone["message_id"], gone["why"], gone["handler"]) == (first, "cancelled", "runs on")
    wait_for(lambda: log_records(caplog, "outcome_discarded"), what="the discard")
    [discarded] = log_records(caplog, "outcome_discarded")
    assert (discarded["message_id"], discarded["handler"]) == (first, "returned")
    events = journal(live, first)
    assert events[-1] == "cancelled"
    assert "acked" not in events
    wait_for(lambda: journal(live, second)[-1] == "acked", what="the second ack")
    # Handed back, not failed: the second message ran at its first attempt.
    assert [e.attempt for e in live.backend.history(message_id=second) if e.event == "acked"] == [1]  # type: ignore[attr-defined]


def test_a_handler_process_is_killed(
    live: pmsq.Broker,
    start: Callable[..., Running],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="pmsq.worker")
    q = live.declare_queue("pdf", lease=LEASE, max_attempts=1)
    live.handler("pdf", isolation="process")(process_handlers.behave)
    log = tmp_path / "children.log"
    mid = q.put({"do": "hang", "log": str(log)})
    start(live)
    wait_for(lambda: log.exists() and "start" in log.read_text(), what="the child to start")
    pid = int(log.read_text().split()[2])
    assert q.cancel(mid) is True
    wait_for(lambda: log_records(caplog, "outcome_discarded"), what="the discard")

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the child is gone
    wait_for(lambda: log_records(caplog, "message_gone"), what="the message_gone line")
    [gone] = log_records(caplog, "message_gone")
    assert (gone["why"], gone["handler"]) == ("cancelled", "killed")
    [discarded] = log_records(caplog, "outcome_discarded")
    assert discarded["handler"] == "raised HandlerProcessDied"
    assert journal(live, mid)[-1] == "cancelled"
    assert live.dead_letters("pdf").list() == []


def test_the_journal_tells_a_cancel_from_a_lease_lost_to_another_holder(db_path: Path) -> None:
    clock = pmsq.ManualClock(1_780_000_000.0)
    with pmsq.connect(str(db_path), clock=clock, durability="normal") as b:
        q = b.declare_queue("calendar", lease=10.0)
        q.put({"n": 1})
        q.put({"n": 2})
        stale = q.get(timeout=0)
        assert stale is not None
        clock.advance(11)  # the lease runs out; another consumer takes the message
        again = q.get(timeout=0)
        assert again is not None
        assert again.message.id == stale.message.id
        assert why_gone(b.backend, stale.message) == "lease lost"

        other = q.get(timeout=0)
        assert other is not None
        assert q.cancel(other.message.id) is True
        assert why_gone(b.backend, other.message) == "cancelled"
        assert why_gone(object(), other.message).startswith("lease lost or cancelled")


def test_a_handler_that_ends_before_any_heartbeat_noticed_is_discarded_not_lease_lost(
    live: pmsq.Broker,
    start: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="pmsq")
    q = live.declare_queue("email", lease=60.0)  # the first beat would come after 20 s
    release = threading.Event()
    ended = threading.Event()

    @live.handler("email")
    def send(msg: pmsq.Message) -> None:
        assert release.wait(30)
        ended.set()

    mid = q.put({"to": "guest"})
    start(live)
    wait_for(lambda: journal(live, mid)[-1] == "delivered", what="the delivery")
    assert q.cancel(mid) is True
    release.set()
    wait_for(lambda: log_records(caplog, "outcome_discarded"), what="the discard")

    [discarded] = log_records(caplog, "outcome_discarded")
    assert (discarded["message_id"], discarded["why"], discarded["handler"]) == (
        mid,
        "cancelled",
        "returned",
    )
    # Not reported as a lease lost to another consumer: nobody else has it.
    assert not [r for r in caplog.records if getattr(r, "pmsq", {}).get("event") == "lease_lost"]
    assert journal(live, mid)[-1] == "cancelled"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.timeout(30)
def test_a_stop_asked_before_the_async_handler_awaits_cancels_it_at_once(backend: str) -> None:
    """The window between the start and the handler's first await (the hooks run there)."""
    from pmsq.handlers import HandlerSpec
    from pmsq.worker.invoke import Invocation, MessageGone

    reached: list[str] = []

    async def handler(msg: pmsq.Message) -> None:
        reached.append("handler")
        await anyio.sleep(60)
        reached.append("after the sleep")

    message = pmsq.Message(id="m1", queue="q", payload=None)
    hows: list[str] = []
    inv = Invocation(
        HandlerSpec(queue="q", fn=handler),
        message,
        gate=lambda: True,
        before=lambda m: hows.append(inv.stop_work("cancelled")),  # on the loop's thread
    )
    anyio.run(inv.run_async, backend=backend)
    assert hows == ["cancelled"]
    assert reached == ["handler"]
    assert isinstance(inv.error, MessageGone)


def test_a_lease_lost_to_another_consumer_stops_the_async_handler_and_says_so(
    live: pmsq.Broker,
    start: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A starved worker whose lease ran out: another consumer has the message now."""
    import pmsq.worker.lifecycle as lifecycle

    caplog.set_level("INFO", logger="pmsq.worker")
    # Beats too late on purpose: the lease (0.4 s) runs out before the first one.
    monkeypatch.setattr(lifecycle, "beat_interval", lambda lease: lease * 3)
    q = live.declare_queue("ota", lease=0.4)
    seen = Timeline()

    @live.handler("ota")
    async def push(msg: pmsq.Message) -> None:
        seen.note("start")
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            seen.note("cancelled")
            raise

    mid = q.put({"push": "rates"})
    start(live, concurrency=1)  # its one slot is taken: it cannot claim the message back
    wait_for(lambda: seen.has("start"), what="the handler to start")
    other = q.get(timeout=DEADLINE_S)  # waits for the lease to run out, then takes it
    other.extend(30.0)  # and keeps it while the stale worker finds out
    assert other.message.id == mid
    assert other.message.attempt == 2
    wait_for(lambda: seen.has("cancelled"), what="the stale handler to be cancelled")
    other.ack()

    # Logged right after the handler was told to stop (it may note it first).
    wait_for(lambda: log_records(caplog, "lease_lost"), what="the lease_lost line")
    [lost] = log_records(caplog, "lease_lost")
    assert (lost["message_id"], lost["why"], lost["handler"]) == (mid, "lease lost", "cancelled")
    wait_for(lambda: log_records(caplog, "outcome_discarded"), what="the discard")
    assert journal(live, mid)[-1] == "acked"


def test_a_journal_that_cannot_be_read_never_breaks_the_worker(db_path: Path) -> None:
    """The journal is advisory: a failed read says "cannot tell" instead of raising
    (a raise here would kill the heartbeat or a settlement)."""
    from pmsq.backends.sqlite import SQLiteBackend

    class BrokenJournal(SQLiteBackend):
        def history(self, **filters: object) -> list[object]:  # type: ignore[override]
            raise OSError("disk I/O error")

    backend = BrokenJournal(str(db_path), durability="normal")
    try:
        message = pmsq.Message(id="m1", queue="q", payload=None)
        assert why_gone(backend, message) == (
            "lease lost or cancelled (the journal could not be read)"
        )
    finally:
        backend.close()
