"""The stateful test's message-control steps: cancel, reschedule, snooze, pause, resume.

Mixed into :class:`pmsq.testing.stateful.BrokerStateMachine`; each step runs
on the broker and on :class:`pmsq.testing.QueueModel` and the two must
agree. They run only against backends with the ``Control`` family (the
conformance suite checks the others refuse).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from pmsq.backends.control_family import Control
from pmsq.errors import LeaseLost
from pmsq.testing._stateful_setup import KEYS, QUEUES, TENANTS

if TYPE_CHECKING:
    from pmsq.broker import Broker
    from pmsq.clock import ManualClock
    from pmsq.queue import Queue
    from pmsq.testing.model import QueueModel

__all__ = ["ControlRules"]

_SCOPE_TENANTS = st.sampled_from((None, *TENANTS))
_SCOPE_KEYS = st.sampled_from((None, None, *KEYS))


class ControlRules:
    """Rules over the state the machine keeps (``broker``, ``model``, ``held``...)."""

    if TYPE_CHECKING:
        broker: Broker
        model: QueueModel
        clock: ManualClock
        known_ids: list[str]
        held: list[Any]  # the machine's _Held values: .delivery and .holder

        def _now(self) -> float: ...

    def _controls(self) -> bool:
        return isinstance(self.broker.backend, Control)

    def _pick(self, pick: int) -> tuple[str, str]:
        """A known message id (maybe gone by now) and its queue (any queue if gone)."""
        mid = self.known_ids[pick % len(self.known_ids)]
        m = self.model.messages.get(mid)
        return mid, m.queue if m is not None else QUEUES[pick % len(QUEUES)]

    @precondition(lambda self: self._controls() and self.known_ids)
    @rule(pick=st.integers(min_value=0), via=_SCOPE_TENANTS)
    def cancel(self, pick: int, via: str | None) -> None:
        """Cancel one message by id, from the broker or through a tenant handle."""
        mid, queue = self._pick(pick)
        handle: Queue = (
            self.broker.queue(queue) if via is None else self.broker.tenant(via).queue(queue)
        )
        got = handle.cancel(mid)
        want = self.model.cancel(queue, [mid], via)
        assert got == bool(want), f"cancel({mid}) on {queue!r} via {via!r}: {got}, model {want}"

    @precondition(lambda self: self._controls())
    @rule(queue=st.sampled_from(QUEUES), key=st.sampled_from(KEYS), tenant=_SCOPE_TENANTS)
    def cancel_key(self, queue: str, key: str, tenant: str | None) -> None:
        """Cancel every unacked message of one key (of one tenant, or tenantless)."""
        got = self.broker.queue(queue).cancel(key=key, tenant=tenant)
        want = self.model.cancel_key(queue, key, tenant)
        assert got == len(want), f"cancel(key={key!r}, tenant={tenant!r}): {got}, model {want}"

    @precondition(lambda self: self._controls() and self.known_ids)
    @rule(pick=st.integers(min_value=0), delay=st.sampled_from((0.0, 2.0, 15.0)))
    def reschedule(self, pick: int, delay: float) -> None:
        """Move one message's due time."""
        mid, queue = self._pick(pick)
        now = self._now()
        got = self.broker.queue(queue).reschedule(mid, delay=delay)
        want = self.model.reschedule(queue, mid, now + delay, now)
        assert got == want, f"reschedule({mid}) on {queue!r}: {got}, model {want}"

    @precondition(lambda self: self._controls() and self.held)
    @rule(pick=st.integers(min_value=0), delay=st.sampled_from((0.0, 3.0, 12.0)))
    def snooze(self, pick: int, delay: float) -> None:
        """A held delivery snoozes: a retry later that spends no attempt."""
        h = self.held[pick % len(self.held)]
        self.held.remove(h)
        mid, now = h.delivery.message.id, self._now()
        expect_ok = self.model.holds(mid, h.holder)
        try:
            h.delivery.snooze(delay)
            ok = True
        except LeaseLost:
            ok = False
        assert ok == expect_ok, f"snooze of {mid}: broker ok={ok}, model ok={expect_ok}"
        if ok:
            assert self.model.snooze(mid, h.holder, delay, now)

    @precondition(lambda self: self._controls())
    @rule(
        queue=st.sampled_from(QUEUES),
        tenant=_SCOPE_TENANTS,
        key=_SCOPE_KEYS,
        lasts=st.sampled_from((None, None, 5.0, 40.0)),
        via_tenant_handle=st.booleans(),
    )
    def pause(
        self,
        queue: str,
        tenant: str | None,
        key: str | None,
        lasts: float | None,
        via_tenant_handle: bool,
    ) -> None:
        """Pause a queue, a tenant or a key, for a while or until resumed."""
        until = None if lasts is None else self._now() + lasts
        if tenant is not None and via_tenant_handle:
            self.broker.tenant(tenant).pause(queue, key=key, until=until, reason="stateful")
        else:
            self.broker.pause(queue, tenant=tenant, key=key, until=until, reason="stateful")
        self.model.pause(queue, tenant, key, until)

    @precondition(lambda self: self._controls() and self.model.pauses)
    @rule(pick=st.integers(min_value=0))
    def resume(self, pick: int) -> None:
        """Resume one of the scopes paused so far (maybe lapsed already)."""
        scopes = sorted(self.model.pauses, key=str)
        queue, tenant, key = scopes[pick % len(scopes)]
        got = self.broker.resume(queue, tenant=tenant, key=key)
        want = self.model.resume(queue, tenant, key, self._now())
        assert got == want, f"resume({queue!r}, {tenant!r}, {key!r}): {got}, model {want}"

    @invariant()
    def pauses_agree(self) -> None:
        """The pauses in force, and ``QueueStats.paused``, are the model's."""
        if not self._controls():
            return
        now = self._now()
        got = {(p.queue, p.tenant, p.key) for p in self.broker.pauses()}
        want = {s for s in self.model.pauses if self.model.pause_in_force(s, now)}
        assert got == want, f"pauses {sorted(got, key=str)}, model {sorted(want, key=str)}"
        if want:
            for queue in QUEUES:
                paused = self.broker.stats(queue).paused
                assert paused == self.model.queue_paused(queue, now), (queue, paused)
