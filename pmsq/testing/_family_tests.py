"""Conformance: the optional families, and the wake-up hints every backend answers.

A backend either implements a family (``pmsq.backends.families``) and its
test checks what the family promises, or it lacks it and the test checks that
using it raises ``ConfigurationError`` naming the capability: never a skip
that would hide a silent no-op. (``history``, ``transactional_put`` and
``transfer`` have their tests with the operators' and the migration's.)

``ready_queues`` and ``wait_for_change`` have defaults (every queue, "maybe
changed"), so every backend is held to what they may promise: never leave
out a queue that has work, never claim "unchanged" after another broker wrote.
"""

from __future__ import annotations

import pytest

from pmsq.backends.families import Inspect, Settings
from pmsq.broker import Broker
from pmsq.clock import ManualClock
from pmsq.testing._suite import SuiteBase

__all__ = ["FamilyTests"]


class FamilyTests(SuiteBase):
    """``once``, ``inspect``, ``settings``; ``ready_queues`` and ``wait_for_change``."""

    # -- once ------------------------------------------------------------------------------
    def test_once_records_with_the_app_or_is_refused_clearly(self, broker: Broker) -> None:
        q = broker.declare_queue("calendar")
        q.put({"booking": 1})
        q.put({"booking": 2})
        first_msg, second_msg = (d.message for d in self.claim(q))
        if self.lacks(broker, "once", lambda: broker.once(first_msg, connection=object())):
            return
        if self.app_transaction(broker, commit=True) is None:
            pytest.skip("no app_transaction hook for this backend")
        for message, commit, expect in (
            (first_msg, True, True),  # new: recorded with the app's commit
            (first_msg, True, False),  # seen: its effects are not applied twice
            (second_msg, False, True),  # rolled back with the app: nothing recorded ...
            (second_msg, True, True),  # ... so it is still new
        ):
            with (
                self.app_transaction(broker, commit=commit) as conn,
                broker.once(message, connection=conn) as first,
            ):
                assert first is expect, f"{message.payload}: first={first}, expected {expect}"

    # -- inspect -----------------------------------------------------------------------------
    def test_peek_reads_without_claiming_or_is_refused_clearly(self, broker: Broker) -> None:
        q = broker.declare_queue("email")
        ids = [q.put({"n": i}) for i in range(3)]
        if self.lacks(broker, "inspect", lambda: q.peek(10)):
            return
        assert isinstance(broker.backend, Inspect)
        seen = q.peek(10)
        assert sorted(m.id for m, _ in seen) == sorted(ids)
        assert [m.id for m, _ in q.peek(2)] == [m.id for m, _ in seen][:2]
        got = self.claim(q)
        assert sorted(self.ids(got)) == sorted(ids)
        assert all(d.message.attempt == 1 for d in got), "peeking counted a delivery"

    # -- settings ----------------------------------------------------------------------------
    def test_settings_are_stored_or_refused_clearly(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        backend = broker.backend
        if self.lacks(broker, "settings", lambda: Settings.of(backend).get_meta("app:x")):
            return
        settings = Settings.of(backend)
        assert settings.get_meta("app:colour") is None
        settings.set_meta("app:colour", "blue")
        settings.set_meta("app:size", "xl")
        settings.set_meta("app:size", None)
        if self.reopens:
            settings = Settings.of(self.reopen(broker, clock).backend)
        assert settings.get_meta("app:colour") == "blue"
        assert settings.get_meta("app:size") is None

    # -- wake-up hints -----------------------------------------------------------------------
    def test_ready_queues_never_leaves_out_a_queue_with_work(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        backend = broker.backend
        broker.declare_queue("leased", lease=5.0)
        broker.queue("ready").put(1)
        broker.queue("leased").put(2)
        broker.queue("empty")
        assert self.claim(broker.queue("leased"))
        names = ["ready", "leased", "empty"]
        r = backend.ready_queues(names, now=clock.time())
        assert "ready" in r.queues
        assert r.queues <= set(names)
        if "leased" not in r.queues:
            # Left out while its lease runs: the answer must say when to ask again.
            assert r.next_due is not None
            assert r.next_due <= clock.time() + 5.0
        clock.advance(6.0)
        assert "leased" in backend.ready_queues(names, now=clock.time()).queues

    def test_wait_for_change_sees_another_brokers_write(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        if not self.reopens:
            pytest.skip("this backend's store cannot be opened twice")
        backend = broker.backend
        broker.declare_queue("inbox")
        since = backend.wait_for_change(None, 0.0)
        other = self.make_broker(clock)
        self._open_brokers.append(other)
        other.queue("inbox").put("from another broker")
        # Bounded: a backend may need a probe interval to notice; it must not say "unchanged".
        assert backend.wait_for_change(since, 5.0) != since
