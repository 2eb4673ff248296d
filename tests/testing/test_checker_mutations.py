"""The checker catches deliberately broken queues: each mutation, its anomaly.

Each mutant is the real SQLite backend with one guarantee broken (a subclass
overriding one method, or one claim helper patched). A short real workload
runs through it in-process: a producer thread logging ``put_invoke`` /
``put_ok``, consumers logging deliveries, processing and settles, exactly as
the fault tests' role processes do. The same workload on the unbroken
backend must check clean, so each anomaly is the mutation's doing, and the
checker must name exactly the expected anomaly kinds, no more, no fewer.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

import pmsq
from pmsq.backends.base import Claimed, Envelope, Receipt, Settlement
from pmsq.backends.sqlite import SQLiteBackend, claims
from pmsq.backends.sqlite.rows import MESSAGE_COLUMNS
from pmsq.testing.checker import FinalState, History, check, read_histories

MAX_ATTEMPTS = 3
QUEUE = "q"


# -- the mutants ------------------------------------------------------------------------------
class AckRequeues(SQLiteBackend):
    """The first ack of each message puts it back (ready at once) instead of deleting it.

    Broken in ``settle``, the one verb every settlement (single or batched,
    and the ``ack`` convenience) goes through.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._requeued: set[str] = set()

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        changed = []
        for s in settlements:
            mid = s.receipt.message_id
            if s.action == "ack" and mid not in self._requeued:
                self._requeued.add(mid)
                s = attrs.evolve(s, action="retry", available_at=now)
            changed.append(s)
        return super().settle(changed, now=now)


class LosesPuts(SQLiteBackend):
    """Returns an id for every message but silently stores only four of every five."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._count = itertools.count()

    def put_many(self, envelopes: Sequence[Envelope], *, now: float) -> list[str]:
        keep = [e for e in envelopes if next(self._count) % 5 != 4]
        stored = super().put_many(keep, now=now) if keep else []
        by_env = dict(zip((e.id for e in keep), stored, strict=True))
        return [by_env.get(e.id, e.id) for e in envelopes]


class ForgetsDedup(SQLiteBackend):
    """Drops every ``dedup_id`` before storing: a retried put is stored twice."""

    def put_many(self, envelopes: Sequence[Envelope], *, now: float) -> list[str]:
        plain = [attrs.evolve(e, dedup_id=None) for e in envelopes]
        return super().put_many(plain, now=now)


class IgnoresTenantScope(SQLiteBackend):
    """A tenant-scoped claim leases any tenant's messages."""

    def claim(
        self, queue: str, n: int, *, now: float, tenant: str | None = None, **kw: Any
    ) -> list[Claimed]:
        return super().claim(queue, n, now=now, tenant=None, **kw)


class AcceptsStaleTokens(SQLiteBackend):
    """Acks with whatever lease token the message holds now, not the caller's."""

    def _current(self, r: Receipt) -> Receipt:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT lease_token FROM pmsq_messages WHERE seq = ?", (r.handle,)
            ).fetchone()
        return r if row is None or row[0] is None else attrs.evolve(r, token=row[0])

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        return super().settle(
            [
                attrs.evolve(s, receipt=self._current(s.receipt)) if s.action == "ack" else s
                for s in settlements
            ],
            now=now,
        )


class ReportsLongerLeases(SQLiteBackend):
    """Tells the consumer its lease lasts 5 s longer than the store keeps it."""

    def claim(
        self, queue: str, n: int, *, now: float, tenant: str | None = None, **kw: Any
    ) -> list[Claimed]:
        got = super().claim(queue, n, now=now, tenant=tenant, **kw)
        return [attrs.evolve(c, lease_expires=c.lease_expires + 5.0) for c in got]


class DeadLettersOnFirstFailure(SQLiteBackend):
    """A retry dead-letters the message at once, with attempts left."""

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        return super().settle(
            [
                attrs.evolve(s, action="dead", reason="gave up", error=None)
                if s.action == "retry"
                else s
                for s in settlements
            ],
            now=now,
        )


class CancelKeepsMessages(SQLiteBackend):
    """A cancel reports the unsettled messages it was given as removed, and removes none."""

    def cancel(self, queue: str, message_ids: Sequence[str], *, now: float, **kw: Any) -> list[str]:
        with self._reading() as conn:
            return [
                mid
                for mid in message_ids
                if conn.execute(
                    "SELECT 1 FROM pmsq_messages WHERE id = ? AND state != 2", (mid,)
                ).fetchone()
            ]


def _heads_ignoring_key_order(
    conn: Any, queue: str, tenant: str, limit: int
) -> list[Any]:  # pragma: no cover - replaced helper
    """Any ready message, newest first: key lines ignored."""
    return list(
        conn.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM pmsq_messages "
            "WHERE queue = ? AND tenant = ? AND state = 0 ORDER BY seq DESC LIMIT ?",
            (queue, tenant, limit),
        ).fetchall()
    )


_real_expire = claims._expire_leases


def _expiry_deletes(
    conn: Any, configs: Any, cfg: Any, queue: str, now: float, metrics: Any, *rest: Any
) -> Any:
    """An expired lease deletes the message instead of counting an attempt."""
    conn.execute(
        "DELETE FROM pmsq_messages WHERE queue = ? AND state = 1 AND lease_expires <= ?",
        (queue, now),
    )
    return _real_expire(conn, configs, cfg, queue, now, metrics, *rest)


# -- the workloads ----------------------------------------------------------------------------
class Consumer:
    """Gets one message at a time and logs every step in the checker's event vocabulary."""

    def __init__(self, queue: pmsq.Queue, hist: History, scope: str | None = None) -> None:
        self.queue, self.hist, self.scope = queue, hist, scope

    def get(self) -> pmsq.Delivery | None:
        batch = self.queue.get_many(1, timeout=0.05)
        if not batch:
            return None
        d = batch[0]
        m = d.message
        self.hist.log(
            "delivered",
            id=m.id,
            v=m.payload["v"],
            attempt=m.attempt,
            lease_expires=d.lease_expires,
            scope=self.scope,
            tenant=m.tenant,
            key=m.key,
        )
        return d

    def process(self, d: pmsq.Delivery, seconds: float = 0.0) -> None:
        self.hist.log("process_start", id=d.message.id, attempt=d.message.attempt)
        time.sleep(seconds)
        self.hist.log("process_done", id=d.message.id, attempt=d.message.attempt)

    def settle(self, d: pmsq.Delivery, how: str = "ack") -> None:
        m = d.message
        self.hist.log("settle_invoke", id=m.id, attempt=m.attempt, how=how)
        try:
            if how == "ack":
                d.ack()
            else:
                d.retry(delay=0)
        except pmsq.LeaseLost:
            self.hist.log("ack_rejected", id=m.id, attempt=m.attempt)
        else:
            if how == "ack":
                self.hist.log("ack_ok", id=m.id, attempt=m.attempt)

    def drain(self, deadline: float) -> None:
        """Until nothing of this consumer's scope is left; retries attempt 1 of every 4th value."""
        while time.monotonic() < deadline:
            d = self.get()
            if d is None:
                s = self.queue.stats()
                if s.ready == 0 and s.delayed == 0 and s.in_flight == 0:
                    return
                continue
            self.process(d)
            v = d.message.payload["v"]
            retry = d.message.attempt == 1 and int(v.split("-")[-1]) % 4 == 0
            self.settle(d, "retry" if retry else "ack")


def _put(q: pmsq.Queue, hist: History, v: str, **opts: Any) -> str:
    hist.log("put_invoke", v=v, key=opts.get("key"), tenant=opts.get("tenant"), **_dd(opts))
    mid = q.put({"v": v}, **opts)
    hist.log("put_ok", v=v, id=mid)
    return mid


def _dd(opts: dict[str, Any]) -> dict[str, Any]:
    return {"dedup_id": opts.get("dedup_id")}


def standard(broker: pmsq.Broker, tmp: Path) -> None:
    """30 puts (keys, two tenants, some retried with their dedup id), then two consumers
    drain: one scoped to tenant acme, one unscoped."""
    broker.declare_queue(QUEUE, max_attempts=MAX_ATTEMPTS, lease=30.0)
    q = broker.queue(QUEUE)
    prod = History(tmp / "prod.jsonl", "prod")
    for i in range(30):
        opts: dict[str, Any] = {
            "key": f"k{i % 3}" if i % 3 else None,
            "tenant": "acme" if i % 2 else None,
        }
        if i % 5 == 0:
            opts["dedup_id"] = f"d{i}"
        _put(q, prod, f"v-{i}", **opts)
        if i % 10 == 0:  # the producer retries a put whose outcome it did not learn
            _put(q, prod, f"retry-{i}", **opts)
    prod.close()
    deadline = time.monotonic() + 5.0
    workers = [
        Consumer(broker.tenant("acme").queue(QUEUE), History(tmp / "acme.jsonl", "acme"), "acme"),
        Consumer(q, History(tmp / "any.jsonl", "any")),
    ]
    threads = [threading.Thread(target=w.drain, args=(deadline,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in workers:
        w.hist.close()


def slow_consumer(broker: pmsq.Broker, tmp: Path) -> None:
    """Consumer A outlives its 0.3 s lease; B gets the message again and acks it; A's late
    ack comes last. B then drains the queue."""
    broker.declare_queue(QUEUE, max_attempts=MAX_ATTEMPTS, lease=0.3)
    q = broker.queue(QUEUE)
    prod = History(tmp / "prod.jsonl", "prod")
    for i in range(3):
        _put(q, prod, f"v-{i}")
    prod.close()
    a = Consumer(q, History(tmp / "a.jsonl", "a"))
    b = Consumer(q, History(tmp / "b.jsonl", "b"))
    da = a.get()
    assert da is not None
    a.process(da, 0.5)  # past the lease
    db = b.get()
    assert db is not None
    b.process(db, 0.1)
    a.settle(da)  # late: a stale token
    b.settle(db)
    b.drain(time.monotonic() + 5.0)
    a.hist.close()
    b.hist.close()


def cancelling(broker: pmsq.Broker, tmp: Path) -> None:
    """12 puts (some keyed); a consumer holds one and starts it; the app cancels it and every
    third message; the holder finishes and acks (refused); then the queue drains."""
    broker.declare_queue(QUEUE, max_attempts=MAX_ATTEMPTS, lease=30.0)
    q = broker.queue(QUEUE)
    prod = History(tmp / "prod.jsonl", "prod")
    ids = [_put(q, prod, f"v-{i}", key=f"k{i % 2}" if i % 3 else None) for i in range(12)]
    prod.close()
    holder = Consumer(q, History(tmp / "holder.jsonl", "holder"))
    held = holder.get()
    assert held is not None
    holder.hist.log("process_start", id=held.message.id, attempt=held.message.attempt)
    app = History(tmp / "app.jsonl", "app")
    for mid in [held.message.id, *ids[::3]]:
        app.log("cancel_invoke", ids=[mid])
        if q.cancel(mid):
            app.log("cancel_ok", ids=[mid])
    app.close()
    holder.hist.log("process_done", id=held.message.id, attempt=held.message.attempt)
    holder.settle(held)
    holder.drain(time.monotonic() + 5.0)
    holder.hist.close()


# -- running one -------------------------------------------------------------------------------
Workload = Callable[[pmsq.Broker, Path], None]


def final_state(path: Path) -> FinalState:
    with pmsq.connect(str(path)) as broker:
        dead = {
            dl.message.id: (dl.message.payload["v"], dl.attempts, dl.reason)
            for dl in broker.dead_letters(QUEUE).list()
        }
        rows = broker.backend._conn.execute(  # type: ignore[attr-defined]
            "SELECT id, payload FROM pmsq_messages WHERE state != 2"
        ).fetchall()
    return FinalState(waiting={r[0]: json.loads(r[1])["v"] for r in rows}, dead=dead)


def run(tmp: Path, backend_cls: type[SQLiteBackend], workload: Workload) -> list[str]:
    path = tmp / "q.db"
    with pmsq.Broker(backend_cls(str(path), durability="normal")) as broker:
        workload(broker, tmp)
    events = read_histories(sorted(tmp.glob("*.jsonl")))
    assert not [e for e in events if e["op"] == "error"]
    # One process, one clock: no slack is needed between the logs' times.
    found = check(events, final_state(path), max_attempts=MAX_ATTEMPTS, clock_skew=0.0)
    return sorted({a.kind for a in found})


@pytest.mark.parametrize("workload", [standard, slow_consumer, cancelling])
def test_the_workloads_check_clean_on_the_real_backend(tmp_path: Path, workload: Workload) -> None:
    assert run(tmp_path, SQLiteBackend, workload) == []


@pytest.mark.parametrize(
    ("backend_cls", "workload", "expected"),
    [
        pytest.param(AckRequeues, standard, ["delivered_after_ack", "double_ack"], id="ack"),
        pytest.param(LosesPuts, standard, ["lost"], id="lost-put"),
        pytest.param(ForgetsDedup, standard, ["duplicate"], id="dedup"),
        pytest.param(IgnoresTenantScope, standard, ["tenant_leak"], id="tenant"),
        pytest.param(DeadLettersOnFirstFailure, standard, ["bad_dead_letter"], id="early-dead"),
        pytest.param(AcceptsStaleTokens, slow_consumer, ["stale_ack_accepted"], id="stale"),
        pytest.param(ReportsLongerLeases, slow_consumer, ["overlapping_leases"], id="lease"),
        pytest.param(
            CancelKeepsMessages,
            cancelling,
            ["acked_after_cancel", "delivered_after_cancel"],
            id="cancel",
        ),
    ],
)
def test_each_broken_backend_is_caught(
    tmp_path: Path, backend_cls: type[SQLiteBackend], workload: Workload, expected: list[str]
) -> None:
    assert run(tmp_path, backend_cls, workload) == expected


def test_claims_that_ignore_key_order_are_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claims, "_heads", _heads_ignoring_key_order)
    assert run(tmp_path, SQLiteBackend, standard) == ["order"]


def test_expired_leases_that_delete_the_message_are_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claims, "_expire_leases", _expiry_deletes)
    assert run(tmp_path, SQLiteBackend, slow_consumer) == ["lost"]
