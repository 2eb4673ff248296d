"""Conformance: message control (DESIGN.md, "Schedules, message control and pauses").

Cancel in every state and by key and tenant, in the app's transaction;
reschedule keeping key order; expiry; snooze; the journal's events (pauses
and circuit breakers: :mod:`pmsq.testing._pause_tests`). A backend without
the ``Control`` family must refuse every one of these with a
``ConfigurationError`` naming itself and ``control``, never do less silently.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from pmsq.backends.control_family import Control
from pmsq.backends.families import History
from pmsq.broker import Broker
from pmsq.clock import ManualClock
from pmsq.config import Backoff, Circuit
from pmsq.delivery import Delivery
from pmsq.errors import ConfigurationError, LeaseLost, Snooze
from pmsq.message import NewMessage
from pmsq.queue import Queue
from pmsq.testing._suite import SuiteBase

__all__ = ["NO_BACKOFF", "ControlBase", "ControlTests"]

#: Retries come back at once: tests move the clock only where time matters.
NO_BACKOFF = Backoff(base=0.0, jitter=False)


class ControlBase(SuiteBase):
    """What the control tests share: the refusal check and a few helpers."""

    def _control_or_refused(self, broker: Broker) -> bool:
        """True if the backend has ``Control``; otherwise check every use is refused clearly."""
        if isinstance(broker.backend, Control):
            return True
        q = broker.declare_queue("q")
        mid = q.put("x")
        uses: list[Callable[[], object]] = [
            lambda: q.cancel(mid),
            lambda: q.cancel(key="k"),
            lambda: q.reschedule(mid, delay=1.0),
            lambda: q.put("y", expires=60.0),
            lambda: q.put_many([NewMessage("y", expires_at=10**10)]),
            lambda: broker.pause("q"),
            lambda: broker.resume("q"),
            broker.pauses,
            lambda: broker.declare_queue("c", circuit=Circuit()),
            lambda: broker.tenant("t").pause("q"),
        ]
        for use in uses:
            with pytest.raises(ConfigurationError) as info:
                use()
            assert "control" in str(info.value), info.value
            assert broker.backend.name in str(info.value), info.value
        # A handler's Snooze fails the message (an attempt spent) with an error saying why.
        snoozy = broker.declare_queue("snoozy", max_attempts=1)
        snoozy.put("x")
        with pytest.raises(Snooze), snoozy.get(timeout=5.0) as d:
            raise Snooze(5.0)
        assert d.settled == "dead"
        (dl,) = broker.dead_letters("snoozy").list()
        assert "does not support control (Snooze)" in dl.reason, dl.reason
        return False

    @staticmethod
    def _held(q: Queue) -> Delivery:
        (d,) = q.get_many(1, timeout=0)
        return d

    def _fail(self, q: Queue, error: str = "channel API down") -> str:
        with pytest.raises(RuntimeError), q.get(timeout=0) as d:
            raise RuntimeError(error)
        return d.message.id


class ControlTests(ControlBase):
    """Cancel, reschedule, expiry, snooze and their journal events."""

    # -- cancel ---------------------------------------------------------------------
    def test_cancel_removes_a_message_in_every_unsettled_state(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q", backoff=Backoff(base=60.0, jitter=False))
        retrying = q.put("retrying")
        self._held(q).retry()  # waiting to retry for 60 s
        flying = q.put("flying")
        holder = self._held(q)
        assert holder.message.id == flying
        waiting = q.put("waiting")
        delayed = q.put("delayed", delay=600.0)
        for mid in (waiting, delayed, retrying, flying):
            assert q.cancel(mid) is True, mid
        assert q.cancel(flying) is False, "a second cancel found something"
        with pytest.raises(LeaseLost):
            holder.ack()
        clock.advance(3600.0)
        assert self.claim(q) == [], "a cancelled message was delivered"
        assert self.depth(broker, "q") == 0
        assert broker.dead_letters("q").list() == []
        if broker.backend.capabilities.history:
            events = History.of(broker.backend).history(message_id=retrying)
            assert events[-1].event == "cancelled"
            assert events[-1].detail.get("state") == "scheduled"

    def test_a_cancelled_holder_cannot_retry_or_extend(self, broker: Broker) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q")
        a, b = q.put("a"), q.put("b")
        da, db = self.claim(q)
        assert q.cancel([a, b, "no-such-id"]) == 2
        with pytest.raises(LeaseLost):
            da.retry(0)
        with pytest.raises(LeaseLost):
            db.extend(30.0)
        assert self.claim(q) == []
        assert self.depth(broker, "q") == 0

    def test_cancel_by_key_is_scoped_per_tenant_and_spares_dead_letters(
        self, broker: Broker
    ) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q", max_attempts=1, on_key_failure="block")
        dead = q.put("dies", key="booking:1", tenant="acme")
        with pytest.raises(RuntimeError), q.get(timeout=0):
            raise RuntimeError("no")
        mine = [q.put(i, key="booking:1", tenant="acme") for i in range(3)]
        theirs = q.put("other tenant", key="booking:1", tenant="zen")
        bare = q.put("no tenant", key="booking:1")
        other_key = q.put("other key", key="booking:2", tenant="acme")
        assert q.cancel(key="booking:1", tenant="acme") == 3
        assert q.cancel(key="booking:1") == 1  # the tenantless key only
        assert [dl.message.id for dl in broker.dead_letters("q").list()] == [dead]
        left = {d.message.id for d in self.claim(q)}
        assert left == {theirs, other_key}
        assert not left & {*mine, bare}
        # Through a tenant handle: its own tenant's key, nobody else's.
        acme = broker.tenant("acme").queue("q")
        again = acme.put("again", key="booking:3")
        q.put("zen's", key="booking:3", tenant="zen")
        assert acme.cancel(key="booking:3") == 1
        assert acme.cancel(theirs) is False, "a tenant handle cancelled another tenant's message"
        with pytest.raises(ConfigurationError):
            acme.cancel(key="booking:3", tenant="zen")
        assert again not in {d.message.id for d in self.claim(q)}

    def test_a_cancelled_key_head_releases_its_key(self, broker: Broker) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q")
        first = q.put("first", key="k")
        second = q.put("second", key="k")
        assert self.ids(self.claim(q)) == [first]  # in flight: the key is held
        assert self.claim(q) == []
        assert q.cancel(first) is True
        assert self.ids(self.claim(q)) == [second]
        # A waiting head too.
        third, fourth = q.put("third", key="j"), q.put("fourth", key="j")
        assert q.cancel(third) is True
        assert self.ids(self.claim(q)) == [fourth]

    def test_cancel_joins_the_apps_transaction(self, broker: Broker) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q")
        mids = [q.put(i, key="booking:9") for i in range(2)]
        tx = self.app_transaction(broker, commit=False)
        if tx is None:
            pytest.skip("the backend's app_transaction hook is not provided")
        with tx as conn:
            assert q.cancel(key="booking:9", connection=conn) == 2
        assert self.depth(broker, "q") == 2, "a rolled-back cancel removed messages"
        with self.app_transaction(broker, commit=True) as conn:
            assert q.cancel(mids[0], connection=conn) is True
        assert self.ids(self.claim(q)) == [mids[1]]

    # -- reschedule -------------------------------------------------------------------
    def test_reschedule_moves_the_due_time_and_keeps_key_order(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q")
        early = q.put("early", key="k", delay=10.0)
        late = q.put("late", key="k")
        assert q.reschedule(early, delay=100.0) is True
        clock.advance(50.0)
        assert self.claim(q) == [], "a later message of the key overtook the rescheduled one"
        at = dt.datetime.fromtimestamp(clock.time() + 5.0, dt.UTC)
        assert q.reschedule(early, not_before=at) is True
        clock.advance(5.0)
        assert self.drain_ids(q) == [early, late]
        unkeyed = q.put("u", delay=1000.0)
        assert q.reschedule(unkeyed, delay=0) is True
        (d,) = self.claim(q)
        assert d.message.id == unkeyed
        assert q.reschedule(unkeyed, delay=5.0) is False, "an in-flight message was moved"
        d.ack()
        assert q.reschedule(unkeyed, delay=5.0) is False, "a gone message was moved"
        with pytest.raises(ConfigurationError):
            q.reschedule(unkeyed, delay=1.0, not_before=clock.time())
        with pytest.raises(ConfigurationError):
            q.reschedule(unkeyed)

    # -- expiry ---------------------------------------------------------------------
    def test_a_coalescing_put_brings_its_own_expiry(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        if not broker.backend.capabilities.coalesce:
            pytest.skip(f"the {broker.backend.name} backend does not coalesce")
        q = broker.declare_queue("q")
        mid = q.put({"rate": 100}, key="room:1", delay=30.0, expires=10.0)
        assert q.put({"rate": 120}, key="room:1", coalesce=True, expires=100.0) == mid
        clock.advance(30.0)
        (d,) = self.claim(q)
        assert (d.message.id, d.message.payload) == (mid, {"rate": 120})

    def test_an_expired_message_never_blocks_its_key(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q", on_key_failure="block")
        stale = q.put("room ready", key="guest:7", expires=60.0)
        fresh = q.put("welcome back", key="guest:7")
        clock.advance(60.0)
        assert self.ids(self.claim(q)) == [fresh], "expiry is no failure: the key must flow"
        assert [dl.message.id for dl in broker.dead_letters("q").list()] == [stale]

    def test_an_expired_message_becomes_a_dead_letter_not_a_delivery(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q")
        gone = q.put("room ready", key="k", expires=60.0)
        behind = q.put("next", key="k")
        at = q.put_many([NewMessage("at", expires_at=clock.time() + 30.0)])[0]
        fresh = q.put("fresh", expires=600.0)
        clock.advance(61.0)
        got = self.claim(q)
        assert set(self.ids(got)) == {behind, fresh}
        dead = {dl.message.id: dl for dl in broker.dead_letters("q").list()}
        assert set(dead) == {gone, at}
        assert {(dl.reason, dl.error_type) for dl in dead.values()} == {("expired", "Expired")}
        # A redriven expired message is delivered: the operator wants it.
        for d in got:
            d.ack()
        assert broker.dead_letters("q").redrive([gone]) == 1
        assert self.ids(self.claim(q)) == [gone]
        with pytest.raises(ConfigurationError):
            q.put("x", expires=1.0, expires_at=clock.time() + 1)
        with pytest.raises(ConfigurationError):
            q.put("x", expires=-1.0)
        with pytest.raises(ConfigurationError):
            q.put("x", expires_at=dt.datetime(2030, 1, 1))  # naive

    # -- snooze ---------------------------------------------------------------------
    def test_snooze_comes_back_later_without_spending_an_attempt(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q", max_attempts=2)
        mid = q.put("payment", key="psp")
        behind = q.put("next", key="psp")
        for _ in range(4):  # more snoozes than max_attempts: none counts
            d = self._held(q)
            assert d.message.attempt == 1
            with pytest.raises(Snooze), d:
                raise Snooze(600.0)
            assert self.claim(q) == [], "snoozed too early, or its key let the next one go"
            clock.advance(600.0)
        d = self._held(q)
        assert (d.message.id, d.message.attempt) == (mid, 1)
        d.snooze(1.0)
        assert d.settled == "snoozed"
        clock.advance(1.0)
        assert self.drain_ids(q) == [mid, behind]
        assert broker.dead_letters("q").list() == []
        assert broker.stats("q").failed == 0

    # -- the journal -------------------------------------------------------------------
    def test_the_journal_records_every_control_event_with_its_details(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        if not broker.backend.capabilities.history:
            pytest.skip(f"the {broker.backend.name} backend keeps no journal")
        journal = History.of(broker.backend)
        q = broker.declare_queue(
            "q", backoff=NO_BACKOFF, circuit=Circuit(failures=1, within=60.0, open_for=5.0)
        )
        cancelled = q.put("c")
        q.cancel(cancelled)
        moved = q.put("r", delay=50.0)
        q.reschedule(moved, delay=10.0)
        expired = q.put("e", expires=1.0)
        clock.advance(11.0)
        snoozed = q.put("s", priority=9) if broker.backend.capabilities.priorities else q.put("s")
        for d in self.claim(q):
            if d.message.id == snoozed:
                d.snooze(1.0)
            else:
                d.ack()
        assert q.cancel(expired) is False, "an expired message is a dead letter, not cancellable"
        until = clock.time() + 60.0
        broker.pause("q", tenant="acme", reason="credentials expired", until=until)
        broker.resume("q", tenant="acme")
        q.put("fails")
        clock.advance(1.0)
        for d in self.claim(q):
            if d.message.id == snoozed:
                with pytest.raises(RuntimeError), d:
                    raise RuntimeError("API down")
            else:
                d.ack()
        clock.advance(5.0)
        for d in self.claim(q):
            d.ack()

        def events(mid: str) -> list[str]:
            return [e.event for e in journal.history(message_id=mid)]

        assert events(cancelled)[-1] == "cancelled"
        assert "rescheduled" in events(moved)
        assert "expired" in events(expired)
        assert "snoozed" in events(snoozed)
        scoped = [e for e in journal.history(queue="q") if e.message_id == ""]
        assert [e.event for e in scoped] == [
            "paused",
            "resumed",
            "circuit_opened",
            "circuit_closed",
        ]
        paused, _, opened, _ = scoped
        assert paused.tenant == "acme"
        assert paused.detail["reason"] == "credentials expired"
        assert paused.detail["until"] == until
        assert opened.detail["reason"] == "circuit open: RuntimeError: API down"
