"""Conformance: pauses and circuit breakers (DESIGN.md, "Schedules, message control and pauses").

Pauses of a queue, of one tenant and of one key, with other scopes flowing;
``until=``; stats; leases that run out while paused; the circuit breaker
opening, holding without spending attempts, and its half-open probe closing
or re-opening it, per queue, tenant and key. A backend without ``Control``
must refuse (checked by :class:`ControlBase`).
"""

from __future__ import annotations

import datetime as dt

import pytest

from pmsq.broker import Broker
from pmsq.clock import ManualClock
from pmsq.config import Circuit
from pmsq.errors import ConfigurationError, Retry
from pmsq.testing._control_tests import NO_BACKOFF, ControlBase

__all__ = ["PauseTests"]


class PauseTests(ControlBase):
    """Pauses and circuit breakers."""

    # -- pauses -----------------------------------------------------------------------
    def test_a_queue_pause_holds_claims_and_accepts_puts(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q")
        flying = q.put("in flight")
        d = self._held(q)
        pause = broker.pause("q", reason="OTA maintenance")
        assert (pause.queue, pause.tenant, pause.key, pause.until) == ("q", None, None, None)
        assert pause.reason == "OTA maintenance"
        assert pause.since.tzinfo is not None
        waiting = q.put("put while paused")
        assert self.claim(q) == []
        assert broker.stats("q").paused is True
        assert [p.reason for p in broker.pauses()] == ["OTA maintenance"]
        d.ack()  # in flight finishes normally
        assert d.message.id == flying
        clock.advance(3600.0)
        assert self.claim(q) == []
        assert broker.resume("q") is True
        assert broker.resume("q") is False
        assert broker.stats("q").paused is False
        (d,) = self.claim(q)
        assert (d.message.id, d.message.attempt) == (waiting, 1), "the pause spent an attempt"

    def test_a_lease_that_runs_out_while_paused_still_counts(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q", max_attempts=1, lease=10.0)
        mid = q.put("m")
        self._held(q)  # its worker dies
        broker.pause("q")
        clock.advance(11.0)
        assert broker.backend.ready_queues(["q"], now=clock.time()).queues == {"q"}
        assert self.claim(q) == []
        assert [dl.message.id for dl in broker.dead_letters("q").list()] == [mid]

    def test_tenant_and_key_pauses_hold_only_their_scope(self, broker: Broker) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q")
        held_key = q.put("migrating", key="property:1", tenant="acme")
        free_key = q.put("fine", key="property:2", tenant="acme")
        held_tenant = q.put("expired creds", tenant="zen")
        bare = q.put("no tenant", key="property:1")
        broker.pause("q", tenant="acme", key="property:1", reason="migration")
        broker.tenant("zen").pause("q", reason="credentials expired")
        assert set(self.ids(self.claim(q))) == {free_key, bare}
        assert self.claim(broker.tenant("zen").queue("q")) == []
        scopes = {(p.tenant, p.key) for p in broker.pauses()}
        assert scopes == {("acme", "property:1"), ("zen", None)}
        assert [(p.tenant, p.key) for p in broker.tenant("zen").pauses()] == [("zen", None)]
        assert broker.stats("q").paused is False, "a tenant pause is not a queue pause"
        assert broker.tenant("zen").stats("q").paused is True
        assert broker.tenant("acme").stats("q").paused is False, "a key pause is no tenant's"
        if broker.backend.capabilities.exact_stats:
            assert broker.stats("q").tenants["zen"].paused is True
        assert broker.resume("q") is False, "resume(queue) lifted a narrower pause"
        assert broker.tenant("zen").resume("q") is True
        assert self.ids(self.claim(q)) == [held_tenant]
        assert broker.resume("q", tenant="acme", key="property:1") is True
        assert self.ids(self.claim(q)) == [held_key]
        with pytest.raises(ConfigurationError):
            broker.tenant("zen").pause("q", tenant="acme")

    def test_a_pause_with_until_resumes_by_itself(self, broker: Broker, clock: ManualClock) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue("q")
        mid = q.put("m")
        until = dt.datetime.fromtimestamp(clock.time() + 300.0, dt.UTC)
        pause = broker.pause("q", until=until, reason="window")
        assert pause.until == until
        clock.advance(299.0)
        assert self.claim(q) == []
        clock.advance(1.0)
        assert broker.pauses() == []
        assert self.ids(self.claim(q)) == [mid]
        with pytest.raises(ConfigurationError):
            broker.pause("q", until=clock.time() - 1.0)

    # -- circuit breaker ----------------------------------------------------------------
    def test_a_circuit_opens_holds_without_attempts_and_closes_after_a_probe(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue(
            "q", backoff=NO_BACKOFF, circuit=Circuit(failures=3, within=60.0, open_for=30.0)
        )
        mids = [q.put(i) for i in range(5)]
        for _ in range(2):
            self._fail(q)
        with pytest.raises(Retry), q.get(timeout=0):
            raise Retry(0)  # a Retry is no failure
        assert broker.pauses() == []
        self._fail(q, "HTTP 503")
        (p,) = broker.pauses()
        assert p.circuit
        assert p.reason == "circuit open: RuntimeError: HTTP 503"
        assert p.until == dt.datetime.fromtimestamp(clock.time() + 30.0, dt.UTC)
        assert broker.stats("q").paused is True
        clock.advance(29.0)
        assert self.claim(q) == []
        clock.advance(1.0)
        probe = self.claim(q)
        assert len(probe) == 1, "half-open must let exactly one message through"
        assert self.claim(q) == [], "the rest of the scope is held while the probe runs"
        probe[0].ack()
        assert broker.pauses() == []
        rest = self.claim(q)
        assert {d.message.id for d in rest} | {probe[0].message.id} == set(mids)
        held_attempts = {d.message.id: d.message.attempt for d in rest}
        assert max(held_attempts.values()) <= 2, "messages held by the circuit spent attempts"

    def test_a_failing_probe_opens_the_circuit_again(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue(
            "q", backoff=NO_BACKOFF, circuit=Circuit(failures=1, within=60.0, open_for=10.0)
        )
        q.put("a")
        q.put("b")
        self._fail(q)
        clock.advance(10.0)
        self._fail(q, "still down")
        (p,) = broker.pauses()
        assert p.reason == "circuit open: RuntimeError: still down"
        assert p.until == dt.datetime.fromtimestamp(clock.time() + 10.0, dt.UTC)
        assert self.claim(q) == []
        clock.advance(10.0)
        (probe,) = self.claim(q)
        probe.ack()
        assert broker.pauses() == []

    def test_a_key_circuit_holds_only_the_failing_key(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue(
            "q",
            backoff=NO_BACKOFF,
            circuit=Circuit(failures=1, within=60.0, open_for=30.0, scope="key"),
        )
        bad = q.put("bad", key="property:1", tenant="acme")
        good = q.put("good", key="property:2", tenant="acme")
        d = self._held(q)
        assert d.message.id == bad
        with pytest.raises(RuntimeError), d:
            raise RuntimeError("boom")
        assert [(p.tenant, p.key) for p in broker.pauses()] == [("acme", "property:1")]
        assert self.ids(self.claim(q)) == [good]
        assert broker.resume("q", tenant="acme", key="property:1") is True
        assert self.ids(self.claim(q)) == [bad]

    def test_a_tenant_circuit_holds_only_the_failing_tenant(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self._control_or_refused(broker):
            return
        q = broker.declare_queue(
            "q",
            backoff=NO_BACKOFF,
            circuit=Circuit(failures=2, within=60.0, open_for=30.0, scope="tenant"),
        )
        acme = broker.tenant("acme").queue("q")
        zen = broker.tenant("zen").queue("q")
        for _ in range(2):
            q.put("tenantless")
            self._fail(q)  # tenantless messages count toward no tenant's breaker
        assert broker.pauses() == []
        for _ in range(2):
            acme.put("expired credentials")
        for _ in range(2):
            self._fail(acme, "401 Unauthorized")
        assert [(p.tenant, p.key, p.circuit) for p in broker.pauses()] == [("acme", None, True)]
        ok = zen.put("fine")
        assert self.claim(acme) == []
        assert ok in self.ids(self.claim(q))
