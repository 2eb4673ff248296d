"""The stateful conformance test: a real broker and ``QueueModel`` side by side.

A hypothesis ``RuleBasedStateMachine`` puts, claims, settles, advances a
``ManualClock``, redrives, purges and reopens the store, doing each step on
the real broker and on the model, and fails on the first disagreement: a
message handed out that the model does not allow (or one withheld that it
allows), a ``LeaseLost`` the model does not predict (or a missing one), dead
letters or counts that differ. At the end of every run it drains the queues
and checks that nothing was lost or duplicated.

Use :func:`make_state_machine` with a factory of scratch stores::

    Machine = make_state_machine(lambda: ScratchStore(open=my_opener))
    run_state_machine_as_test(Machine, settings=settings(max_examples=200, deadline=None))

``BrokerConformance`` does this for you with its ``make_broker`` hook.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pmsq.backends.base import Capabilities
from pmsq.backends.families import Inspect
from pmsq.clock import ManualClock
from pmsq.config import QueueConfig
from pmsq.delivery import Delivery
from pmsq.errors import LeaseLost, QueueFull
from pmsq.message import NewMessage, utc_from_epoch
from pmsq.queue import Queue
from pmsq.testing._stateful_control import ControlRules
from pmsq.testing._stateful_setup import (
    BACKOFF,
    CONSUMER_REASONS,
    FALLBACK,
    LEASE,
    PUT_OPTIONS,
    QUEUE_OPTIONS,
    QUEUES,
    SETTLE_ACTIONS,
    TENANT_SCOPES,
    TENANTS,
    ScratchStore,
)
from pmsq.testing.model import ModelMessage, ModelPut, QueueModel

__all__ = ["BrokerStateMachine", "ScratchStore", "make_state_machine"]


@attrs.define
class _Held:
    delivery: Delivery
    holder: int


class BrokerStateMachine(ControlRules, RuleBasedStateMachine):
    """Drives one broker and a ``QueueModel`` with the same steps; see the module docs.

    Subclasses set :attr:`new_store` (``make_state_machine`` does).
    """

    #: Returns a fresh scratch store per run.
    new_store: ClassVar[Callable[[], ScratchStore]]
    #: Whether the close-and-reopen step is run (false for in-memory stores).
    reopen_supported: ClassVar[bool] = True
    #: Check that within a tenant claims come exactly in priority-then-put order
    #: (otherwise only that no higher-priority message of the tenant was passed over).
    exact_order: ClassVar[bool] = True
    #: Options each queue is declared with (``lease`` and ``backoff`` are fixed).
    queue_options: ClassVar[st.SearchStrategy[dict[str, Any]]] = QUEUE_OPTIONS
    #: Whom claims are made for: ``None`` is the whole queue, a name a tenant handle.
    claim_scopes: ClassVar[tuple[str | None, ...]] = (None, None, *TENANTS)

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.store = type(self).new_store()
        self.broker = self.store.open(self.clock)
        caps: Capabilities = self.broker.backend.capabilities
        self.caps = caps
        self.model = QueueModel()
        self.held: list[_Held] = []
        self.known_ids: list[str] = []
        self.payloads = 0
        self.steps = self.reopened_at = 0

    # -- setup and teardown --------------------------------------------------------
    @initialize(data=st.data())
    def declare_queues(self, data: st.DataObject) -> None:
        """Declare each queue with options drawn from :attr:`queue_options`, on both sides."""
        for name in QUEUES:
            drawn = data.draw(self.queue_options, label=f"options of {name!r}")
            opts = {**drawn, "lease": LEASE, "backoff": BACKOFF}
            self.broker.declare_queue(name, **opts)
            self.model.declare(QueueConfig(name=name, **opts))
        self.broker.declare_queue(FALLBACK, backoff=BACKOFF)
        self.model.declare(QueueConfig(name=FALLBACK, backoff=BACKOFF))

    def teardown(self) -> None:
        """Drain and check (only if the run has not already failed), then drop the store."""
        try:
            if sys.exc_info()[0] is None:
                self._drain()
        finally:
            try:
                self.broker.close()
            finally:
                self.store.drop()

    def _drain(self) -> None:
        # Far in the future every lease, delay and backoff has run out: each
        # round claims what the model says is claimable and acks it, until
        # nothing moves. What is left must be exactly what the model keeps:
        # dead letters, fallback copies and messages behind blocked keys.
        self.held.clear()
        for _ in range(200):
            self.clock.advance(1000.0)
            moved = False
            for queue in QUEUES:
                for d, holder in self._checked_claim(queue, None, 50):
                    d.ack()
                    assert self.model.ack(d.message.id, holder)
                    moved = True
            if not moved:
                break
        else:
            raise AssertionError("drain did not finish: messages keep coming back")
        self.check_dead_letters()
        self.check_stats()

    # -- puts ---------------------------------------------------------------------
    def _put_args(self, drawn: dict[str, Any]) -> tuple[dict[str, Any], ModelPut]:
        """Turn drawn options into ``put`` arguments and the model's view of the put."""
        now = self.clock.time()
        self.payloads += 1
        caps = self.caps
        args: dict[str, Any] = {"key": drawn["key"], "tenant": drawn["tenant"]}
        available_at = now
        if caps.priorities:
            args["priority"] = drawn["priority"]
        if caps.delays:
            args["delay"] = drawn["delay"]
            available_at = now + drawn["delay"]
            if drawn["not_before"] == "epoch":
                args["not_before"] = now + 7.0
                available_at = max(available_at, now + 7.0)
            elif drawn["not_before"] == "datetime":
                args["not_before"] = utc_from_epoch(now + 4.0)
                available_at = max(available_at, args["not_before"].timestamp())
        if caps.dedup:
            args["dedup_id"] = drawn["dedup_id"]
        if drawn["headers"]:
            args["headers"] = {"trace": f"t{self.payloads}"}
        if caps.coalesce and drawn["key"] is not None:
            args["coalesce"] = drawn["coalesce"]
        payload = {"n": self.payloads}
        item = ModelPut(
            payload=payload,
            key=args["key"],
            tenant=args["tenant"],
            priority=args.get("priority", 0),
            available_at=available_at,
            dedup_id=args.get("dedup_id"),
            headers=args.get("headers"),
            coalesce=args.get("coalesce", False),
        )
        return {"payload": payload, **args}, item

    @rule(queue=st.sampled_from(QUEUES), options=PUT_OPTIONS, via_tenant_handle=st.booleans())
    def put(self, queue: str, options: dict[str, Any], via_tenant_handle: bool) -> None:
        """One put, sometimes through a tenant handle."""
        args, item = self._put_args(options)
        tenant = args.pop("tenant")
        payload = args.pop("payload")
        q: Queue
        if tenant is not None and via_tenant_handle:
            q = self.broker.tenant(tenant).queue(queue)
        else:
            q, args["tenant"] = self.broker.queue(queue), tenant
        try:
            got: str | None = q.put(payload, **args)
        except QueueFull:
            got = None
        self._apply_put([got], lambda ids: [self.model.put(queue, item, ids[0], self._now())])

    @rule(queue=st.sampled_from(QUEUES), batch=st.lists(PUT_OPTIONS, min_size=1, max_size=4))
    def put_many(self, queue: str, batch: list[dict[str, Any]]) -> None:
        """An atomic batch: all stored or, on ``QueueFull``, none."""
        drawn = [self._put_args(options) for options in batch]
        messages = [NewMessage(**args) for args, _ in drawn]
        try:
            got: list[str | None] = list(self.broker.queue(queue).put_many(messages))
        except QueueFull:
            got = [None] * len(batch)
        items = [item for _, item in drawn]
        self._apply_put(got, lambda ids: self.model.put_many(queue, items, ids, self._now()))

    def _apply_put(self, got: list[str | None], apply: Callable[[list[str]], list[str]]) -> None:
        full = got[0] is None
        try:
            expected = apply([g or f"<unstored {i}>" for i, g in enumerate(got)])
        except QueueFull:
            assert full, f"the model says QueueFull but the broker stored {got}"
            return
        assert not full, f"the broker raised QueueFull but the model stores {expected}"
        assert got == expected, f"put returned {got}, the model expects {expected}"
        self.known_ids.extend(i for i in expected if i not in self.known_ids)

    # -- claims ---------------------------------------------------------------------
    @rule(queue=st.sampled_from(QUEUES), scope_pick=st.integers(0, 3), n=st.integers(1, 4))
    def claim(self, queue: str, scope_pick: int, n: int) -> None:
        """``get_many(n, timeout=0)`` on the whole queue or through a tenant handle."""
        scope = self.claim_scopes[scope_pick % len(self.claim_scopes)]
        for d, holder in self._checked_claim(queue, scope, n):
            self.held.append(_Held(d, holder))

    def _checked_claim(self, queue: str, scope: str | None, n: int) -> list[tuple[Delivery, int]]:
        now = self._now()
        self.model.expire(queue, now)
        allowed = self.model.claimable(queue, now, scope, any_tenant=scope is None)
        handle = (
            self.broker.queue(queue) if scope is None else self.broker.tenant(scope).queue(queue)
        )
        got = handle.get_many(n, timeout=0)
        ids = [d.message.id for d in got]
        by_id = {m.id: m for m in allowed}
        unexpected = [i for i in ids if i not in by_id]
        assert not unexpected, (
            f"claim on {queue!r} (tenant {scope!r}) returned {unexpected}, which the model "
            f"does not allow now; allowed: {list(by_id)}"
        )
        assert len(set(ids)) == len(ids), f"one claim returned a message twice: {ids}"
        assert len(ids) == min(n, len(allowed)), (
            f"claim of {n} on {queue!r} (tenant {scope!r}) returned {len(ids)} messages, "
            f"the model allows {len(allowed)}: {list(by_id)}; got {ids}"
        )
        self._check_claim_order(ids, allowed)
        holders = self.model.claim(ids, now)
        for d in got:
            self._check_message(d, self.model.messages[d.message.id])
        return list(zip(got, holders, strict=True))

    def _check_claim_order(self, ids: list[str], allowed: list[ModelMessage]) -> None:
        for tenant in {m.tenant for m in allowed}:
            line = [m for m in allowed if m.tenant == tenant]
            got = [i for i in ids if any(m.id == i for m in line)]
            if self.exact_order:
                want = [m.id for m in line[: len(got)]]
                assert got == want, (
                    f"tenant {tenant!r}: claimed {got}, but priority-then-put order is {want}"
                )
            elif got:
                lowest = min(m.priority for m in line if m.id in got)
                passed = [m.id for m in line if m.id not in got and m.priority > lowest]
                assert not passed, f"tenant {tenant!r}: {passed} passed over by lower priority"

    def _check_message(self, d: Delivery, m: ModelMessage) -> None:
        msg = d.message
        assert msg.attempt == m.attempt, f"{m.id}: attempt {msg.attempt}, model {m.attempt}"
        assert (msg.queue, msg.payload, msg.key, msg.tenant) == (
            m.queue,
            m.payload,
            m.key,
            m.tenant,
        ), f"{m.id}: delivered {msg!r}, model {m!r}"
        assert msg.priority == m.priority
        assert msg.headers == m.headers, f"{m.id}: headers {msg.headers}, model {m.headers}"
        assert msg.dedup_id == m.dedup_id
        assert msg.enqueued_at == utc_from_epoch(m.enqueued_at)
        assert msg.correlation_id == m.id
        assert msg.causation_id is None

    @precondition(lambda self: self.held)
    @rule(
        pick=st.integers(min_value=0),
        n=st.integers(1, 4),
        wakes_up=st.one_of(st.none(), SETTLE_ACTIONS),
    )
    def worker_hangs_past_its_lease(
        self, pick: int, n: int, wakes_up: tuple[str, Any] | None
    ) -> None:
        """A held delivery's lease runs out and another consumer claims from its queue.

        The hung worker keeps its delivery and may wake up at once and settle
        it: that must raise ``LeaseLost`` if the message was claimed again,
        and succeed if not.
        """
        h = self.held[pick % len(self.held)]
        self.clock.advance(LEASE + 1.0)
        for d, holder in self._checked_claim(h.delivery.message.queue, None, n):
            self.held.append(_Held(d, holder))
        if wakes_up is not None:
            self._settle(h, wakes_up)

    # -- settling -----------------------------------------------------------------------
    @precondition(lambda self: self.held)
    @rule(pick=st.integers(min_value=0), action=SETTLE_ACTIONS)
    def settle(self, pick: int, action: tuple[str, Any]) -> None:
        """Ack, retry, dead-letter or extend a held delivery.

        The broker must raise ``LeaseLost`` exactly when the model says the
        lease is lost (someone else claimed the message since, or it is dead
        or gone), and then change nothing.
        """
        self._settle(self.held[pick % len(self.held)], action)

    def _settle(self, h: _Held, action: tuple[str, Any]) -> None:
        d, mid, now = h.delivery, h.delivery.message.id, self._now()
        verb, arg = action
        expect_ok = self.model.holds(mid, h.holder)
        if verb != "extend" or not expect_ok:
            self.held.remove(h)  # settled, or lost: the delivery is spent either way
        try:
            if verb == "ack":
                d.ack()
            elif verb == "retry":
                d.retry(arg)
            elif verb == "dead_letter":
                d.dead_letter(arg)
            else:
                d.extend(arg)
            ok = True
        except LeaseLost:
            ok = False
        assert ok == expect_ok, (
            f"{verb} of {mid}: the broker {'accepted it' if ok else 'raised LeaseLost'}, "
            f"the model {'accepts it' if expect_ok else 'says the lease is lost'}"
        )
        if not ok:
            return
        if verb == "ack":
            assert self.model.ack(mid, h.holder)
        elif verb == "retry":
            assert self.model.retry(mid, h.holder, arg, now)
        elif verb == "dead_letter":
            assert self.model.dead_letter(mid, h.holder, arg, now)
        else:
            assert self.model.extend(mid, h.holder, arg, now)

    # -- time and operators -----------------------------------------------------------------
    @rule(seconds=st.sampled_from((1.0, 3.0, 9.5, 10.0, 11.0, 31.0, 301.0)))
    def advance_clock(self, seconds: float) -> None:
        """Move time: past delays, backoffs, leases and dedup windows."""
        self.clock.advance(seconds)

    def _has_dead_letters(self) -> bool:
        return any(m.state == "dead" and m.queue in QUEUES for m in self.model.messages.values())

    def _dead_ids(self, queue: str, everything: bool, picks: list[int]) -> list[str] | None:
        if everything:
            return None
        # Dead letters, plus recent ids that may be alive (they must match nothing).
        # Ordered by the model, never by id: ids are random, and the same
        # choices must pick the same messages when hypothesis replays a run.
        dead = [m.id for m in self.model.dead_letters(queue)]
        pool = dead + [i for i in self.known_ids[-5:] if i not in dead]
        return list(dict.fromkeys(pool[i % len(pool)] for i in picks)) if pool else []

    @precondition(lambda self: self._has_dead_letters())
    @rule(
        queue=st.sampled_from(QUEUES),
        scope=TENANT_SCOPES,
        everything=st.booleans(),
        picks=st.lists(st.integers(min_value=0), max_size=3),
    )
    def redrive(self, queue: str, scope: str | None, everything: bool, picks: list[int]) -> None:
        """Redrive some or all dead letters, maybe through a tenant handle."""
        ids = self._dead_ids(queue, everything, picks)
        owner: Any = self.broker if scope is None else self.broker.tenant(scope)
        got = owner.dead_letters(queue).redrive(ids)
        want = self.model.redrive(queue, ids, self._now(), scope)
        assert got == want, f"redrive({ids}) on {queue!r} moved {got}, the model {want}"

    @precondition(lambda self: self._has_dead_letters())
    @rule(
        queue=st.sampled_from(QUEUES),
        scope=TENANT_SCOPES,
        everything=st.booleans(),
        picks=st.lists(st.integers(min_value=0), max_size=3),
    )
    def purge(self, queue: str, scope: str | None, everything: bool, picks: list[int]) -> None:
        """Purge some or all dead letters, maybe through a tenant handle."""
        ids = self._dead_ids(queue, everything, picks)
        owner: Any = self.broker if scope is None else self.broker.tenant(scope)
        got = owner.dead_letters(queue).purge(ids)
        want = self.model.purge(queue, ids, scope)
        assert got == want, f"purge({ids}) on {queue!r} deleted {got}, the model {want}"

    # Reopening abandons every held delivery: allowing it only now and then,
    # and while at most one is held, leaves the settle rule something to work on.
    @precondition(
        lambda self: (
            self.reopen_supported and len(self.held) <= 1 and self.steps - self.reopened_at >= 8
        )
    )
    @rule(downtime=st.sampled_from((0.0, 0.0, 11.0)))
    def close_and_reopen(self, downtime: float) -> None:
        """Close the broker, let time pass, open the same store again.

        Held deliveries are abandoned, as by a process that exits.
        """
        self.broker.close()
        self.held.clear()
        self.clock.advance(downtime)
        self.broker = self.store.open(self.clock)
        self.reopened_at = self.steps

    # -- invariants ---------------------------------------------------------------------
    @invariant()
    def agrees_with_model(self) -> None:
        """After every step: dead letters and counts are the model's."""
        self.steps += 1
        self.check_dead_letters()
        self.check_stats()

    def check_dead_letters(self) -> None:
        """Every queue's dead letters are the model's, with their attempts and reasons."""
        for queue in (*QUEUES, FALLBACK):
            real = self.broker.dead_letters(queue).list()
            want = self.model.dead_letters(queue)
            got_ids = [d.message.id for d in real]
            want_ids = [m.id for m in want]
            if self.exact_order:
                assert got_ids == want_ids, (
                    f"dead letters of {queue!r}: {got_ids}, model {want_ids}"
                )
            else:
                assert sorted(got_ids) == sorted(want_ids)
            by_id = {m.id: m for m in want}
            for d in real:
                m = by_id[d.message.id]
                assert d.attempts == m.attempt, f"{m.id}: {d.attempts} attempts, model {m.attempt}"
                assert d.message.payload == m.payload
                assert d.message.tenant == m.tenant
                assert d.reason, f"{m.id}: dead letter without a reason"
                if m.dead_reason in CONSUMER_REASONS:
                    assert d.reason == m.dead_reason, f"{m.id}: reason {d.reason!r}"
                if m.dead_error_type is not None:
                    assert d.error_type, f"{m.id}: lease-expiry dead letter without error_type"
                assert d.dead_at == utc_from_epoch(m.dead_at or 0.0)

    def check_stats(self) -> None:
        """Depth, dead and outcome totals per queue and tenant match the model."""
        if not self.caps.exact_stats:
            return
        snap = self.broker.stats()
        for queue in (*QUEUES, FALLBACK):
            qs = snap.queues[queue]
            for tenant, s in [(None, qs), *((t, qs.tenants.get(t)) for t in TENANTS)]:
                depth = 0 if s is None else s.depth
                dead = 0 if s is None else s.dead
                want_depth = self.model.depth(queue, tenant)
                want_dead = len(self.model.dead_letters(queue, tenant))
                assert (depth, dead) == (want_depth, want_dead), (
                    f"stats of {queue!r} tenant {tenant!r}: depth {depth}, dead {dead}; "
                    f"model {want_depth}, {want_dead}"
                )
                totals = self.model.totals(queue, tenant)
                got = {k: 0 if s is None else getattr(s, k) for k in totals}
                assert got == totals, (
                    f"totals of {queue!r} tenant {tenant!r}: {got}, model {totals}"
                )
        self._check_fallback()

    def _check_fallback(self) -> None:
        if not isinstance(self.broker.backend, Inspect):
            return  # the backend cannot peek; the depth check above still counts copies
        seen = self.broker.queue(FALLBACK).peek(10_000)
        got = Counter(
            (msg.headers.get("pmsq.dead_letter", {}).get("message_id"), msg.payload["n"])
            for msg, _ in seen
        )
        want = Counter(
            (m.source_id, m.payload["n"])
            for m in self.model.messages.values()
            if m.queue == FALLBACK
        )
        assert got == want, f"fallback copies {dict(got)}, model {dict(want)}"

    def _now(self) -> float:
        return self.clock.time()


def make_state_machine(
    new_store: Callable[[], ScratchStore],
    *,
    reopen: bool = True,
    exact_order: bool = True,
) -> type[BrokerStateMachine]:
    """Build the state machine for one backend.

    Args:
        new_store: Returns a fresh, empty scratch store for each run.
        reopen: Include the close-and-reopen step (false for stores that do
            not outlive their broker, such as ``:memory:``).
        exact_order: Check exact priority-then-put order within a tenant
            (false: only that no higher-priority message is passed over).

    Returns:
        A ``RuleBasedStateMachine`` subclass; run it with
        ``hypothesis.stateful.run_state_machine_as_test`` or its ``TestCase``.
    """
    return type(
        "BrokerStateMachineRun",
        (BrokerStateMachine,),
        {
            "new_store": staticmethod(new_store),
            "reopen_supported": reopen,
            "exact_order": exact_order,
        },
    )
