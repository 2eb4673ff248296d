"""The compact journal tells the story a simple model expects.

Random sequences of puts, claims (one or several messages, by two workers),
acks, retries, dead letters, releases, snoozes, cancels and expired leases
run against a real store; the history read back (one message at a time and
the whole queue in order) must be the event sequence the model wrote down as
the operations happened: a ``delivered`` event for every claim, at the
claim's time, by its worker, followed later by exactly one outcome.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pmsq
from pmsq.leases import get_many

LEASE = 30.0
MAX_ATTEMPTS = 3

# (event, message id, attempt, worker or None); worker only for deliveries.
Seen = tuple[str, str, int | None, str | None]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from([None, "k1", "k2"])),
        st.tuples(st.just("claim"), st.integers(1, 3), st.sampled_from(["w1", "w2"])),
        st.tuples(
            st.sampled_from(["ack", "retry", "dead", "release", "snooze", "cancel"]),
            st.integers(0, 50),
        ),
        st.tuples(st.just("expire")),
        st.tuples(st.just("tick")),
    ),
    max_size=30,
)


@dataclass
class Held:
    delivery: pmsq.Delivery
    attempt: int
    lease_expires: float
    seq: int  # the message's put order


@dataclass
class Model:
    events: list[Seen] = field(default_factory=list)
    order: dict[str, int] = field(default_factory=dict)  # put order of each message
    held: dict[str, Held] = field(default_factory=dict)  # valid leases, in flight or lapsed
    lapsed: set[str] = field(default_factory=set)  # leases told as expired, still settleable
    live: set[str] = field(default_factory=set)  # not yet acked, dead or cancelled


def _run(steps: list[tuple[object, ...]], db: Path) -> None:
    clock = pmsq.ManualClock()
    with pmsq.connect(str(db), clock=clock, durability="normal") as b:
        q = b.declare_queue(
            "q",
            lease=LEASE,
            max_attempts=MAX_ATTEMPTS,
            backoff=pmsq.Backoff(base=0.0, factor=1.0, cap=0.0, jitter=False),
        )
        m = Model()
        for step in steps:
            _apply(step, b, q, clock, m)
        for mid in m.order:
            got = [
                (e.event, e.message_id, e.attempt, e.worker if e.event == "delivered" else None)
                for e in b.backend.history(message_id=mid)
            ]
            assert got == [e for e in m.events if e[1] == mid]
        every = [(e.event, e.message_id, e.attempt) for e in b.backend.history(queue="q")]
        assert every == [e[:3] for e in m.events]
        for mid in m.order:
            delivered = [e for e in b.backend.history(message_id=mid) if e.event == "delivered"]
            # Each delivery is told at its claim's time, by this process.
            assert all(e.process == b.backend._journal.process for e in delivered)  # type: ignore[attr-defined]


def _apply(
    step: tuple[object, ...], b: pmsq.Broker, q: pmsq.Queue, clock: pmsq.ManualClock, m: Model
) -> None:
    kind = step[0]
    if kind == "put":
        key = step[1]
        assert key is None or isinstance(key, str)
        mid = q.put("x", key=key)
        m.order[mid] = len(m.order)
        m.live.add(mid)
        m.events.append(("put", mid, None, None))
    elif kind == "claim":
        n, worker = step[1], step[2]
        assert isinstance(n, int)
        assert isinstance(worker, str)
        now = clock.time()
        # A claim first ends the leases that ran out, oldest expiry first.
        for mid in sorted(
            (mid for mid, h in m.held.items() if mid not in m.lapsed and h.lease_expires <= now),
            key=lambda mid: (m.held[mid].lease_expires, m.held[mid].seq),
        ):
            h = m.held[mid]
            m.events.append(("lease_expired", mid, h.attempt, None))
            if h.attempt >= MAX_ATTEMPTS:
                m.events.append(("dead_lettered", mid, h.attempt, None))
                del m.held[mid]
                m.live.discard(mid)
            else:
                m.lapsed.add(mid)
        for d in get_many(b.runtime, "q", n, 0, consumer=worker):
            mid = d.message.id
            m.held[mid] = Held(d, d.message.attempt, now + LEASE, m.order[mid])
            m.lapsed.discard(mid)
            m.events.append(("delivered", mid, d.message.attempt, worker))
    elif kind in ("expire", "tick"):
        clock.advance(LEASE + 1 if kind == "expire" else 1.0)
    else:
        index = step[1]
        assert isinstance(index, int)
        if kind == "cancel":
            if not m.live:
                return
            mid = sorted(m.live, key=m.order.__getitem__)[index % len(m.live)]
            assert q.cancel(mid)
            h = m.held.pop(mid, None)
            attempt = h.attempt if h is not None else _attempts(m, mid)
            m.events.append(("cancelled", mid, attempt or None, None))
            m.live.discard(mid)
            m.lapsed.discard(mid)
            return
        if not m.held:
            return
        mid = sorted(m.held, key=m.order.__getitem__)[index % len(m.held)]
        h = m.held.pop(mid)
        was_lapsed = mid in m.lapsed
        m.lapsed.discard(mid)
        d = h.delivery
        if kind == "ack":
            d.ack()
            m.events.append(("acked", mid, h.attempt, None))
            m.live.discard(mid)
        elif kind == "retry":
            d.retry(delay=0)
            if h.attempt >= MAX_ATTEMPTS:  # the last attempt: a dead letter instead
                m.events.append(("dead_lettered", mid, h.attempt, None))
                m.live.discard(mid)
            else:
                m.events.append(("retried", mid, h.attempt, None))
        elif kind == "dead":
            d.dead_letter("no")
            m.events.append(("dead_lettered", mid, h.attempt, None))
            m.live.discard(mid)
        elif kind == "release":
            d.release()
            if not was_lapsed:  # a lapsed lease is not handed back: a no-op
                m.events.append(("released", mid, h.attempt, None))
        elif kind == "snooze":
            d.snooze(5.0)
            m.events.append(("snoozed", mid, h.attempt, None))


def _attempts(m: Model, mid: str) -> int:
    """Attempts a waiting message has spent: deliveries not given back (release, snooze)."""
    spent = 0
    for event, e_mid, attempt, _ in m.events:
        if e_mid == mid and event == "delivered":
            spent = attempt or 0
        elif e_mid == mid and event in ("released", "snoozed"):
            spent = (attempt or 1) - 1
    return spent


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps=ops)
def test_the_history_read_back_is_the_models(steps: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _run(steps, Path(tmp) / "q.db")
