"""The history checker names each anomaly in hand-written histories, and passes a clean run."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import pmsq
from pmsq.testing.checker import FinalState, History, check, read_histories


class H:
    """Builds a history with strictly increasing times."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.t = 100.0

    def __call__(self, op: str, proc: str = "p1", **fields: Any) -> H:
        self.t += 1.0
        self.events.append({"t": self.t, "proc": proc, "op": op, **fields})
        return self

    def put(self, v: int, mid: str, key: str | None = None, dedup: str | None = None) -> H:
        self("put_invoke", "prod", v=v, key=key, tenant=None, dedup_id=dedup)
        return self("put_ok", "prod", v=v, id=mid)

    def consume(self, mid: str, v: int, attempt: int = 1, proc: str = "c1", lease: float = 30) -> H:
        self("delivered", proc, id=mid, v=v, attempt=attempt, lease_expires=self.t + 1 + lease)
        self("process_start", proc, id=mid, attempt=attempt)
        self("process_done", proc, id=mid, attempt=attempt)
        self("settle_invoke", proc, id=mid, attempt=attempt, how="ack")
        return self("ack_ok", proc, id=mid, attempt=attempt)


def kinds(h: H, final: FinalState | None = None, **kw: Any) -> list[str]:
    return sorted(a.kind for a in check(h.events, final or FinalState(), max_attempts=3, **kw))


def test_a_clean_history_has_no_anomalies() -> None:
    h = H().put(1, "a", key="k").put(2, "b", key="k").consume("a", 1).consume("b", 2)
    assert kinds(h) == []


def test_lost_message_is_named() -> None:
    h = H().put(1, "a")
    assert kinds(h) == ["lost"]


def test_leftover_is_stuck_when_drained_and_fine_otherwise() -> None:
    h = H().put(1, "a")
    final = FinalState(waiting={"a": 1})
    assert kinds(h, final) == ["stuck"]
    assert kinds(h, final, expect_drained=False) == []


def test_unexpected_delivery_of_a_value_never_put() -> None:
    h = H().consume("zz", 99)
    assert "unexpected" in kinds(h)


def test_delivery_of_a_put_that_failed_is_unexpected() -> None:
    h = H()("put_invoke", "prod", v=1, key=None, tenant=None, dedup_id=None)
    h("put_fail", "prod", v=1)
    h.consume("a", 1)
    assert "unexpected" in kinds(h)


def test_duplicate_after_retried_dedup_id() -> None:
    h = H().put(1, "a", dedup="d").put(2, "b", dedup="d").consume("a", 1).consume("b", 2)
    assert kinds(h) == ["duplicate"]


def test_double_ack() -> None:
    h = H().put(1, "a").consume("a", 1)
    h("ack_ok", "c1", id="a", attempt=1)
    assert kinds(h) == ["double_ack"]


def test_acked_without_processing() -> None:
    h = H().put(1, "a")
    h("delivered", "c1", id="a", v=1, attempt=1, lease_expires=999)
    h("settle_invoke", "c1", id="a", attempt=1, how="ack")
    h("ack_ok", "c1", id="a", attempt=1)
    assert kinds(h) == ["acked_unprocessed"]


def test_stale_ack_accepted_and_overlapping_leases() -> None:
    h = H().put(1, "a")
    h("delivered", "c1", id="a", v=1, attempt=1, lease_expires=h.t + 100)
    h("process_start", "c1", id="a", attempt=1)
    # c2 gets attempt 2 while c1's lease is live, then c1's ack is accepted
    h.consume("a", 1, attempt=2, proc="c2")
    h("process_done", "c1", id="a", attempt=1)
    h("settle_invoke", "c1", id="a", attempt=1, how="ack")
    h("ack_ok", "c1", id="a", attempt=1)
    found = kinds(h)
    assert "stale_ack_accepted" in found
    assert "overlapping_leases" in found
    assert "double_ack" in found


def test_redelivery_after_lease_expiry_is_fine() -> None:
    h = H().put(1, "a")
    h("delivered", "c1", id="a", v=1, attempt=1, lease_expires=h.t + 1.5)
    h.t += 5
    h.consume("a", 1, attempt=2, proc="c2")
    h("ack_rejected", "c1", id="a", attempt=1)
    assert kinds(h) == []


def test_per_key_order_violation() -> None:
    h = H().put(1, "a", key="k").put(2, "b", key="k")
    h.consume("b", 2).consume("a", 1)
    assert kinds(h) == ["order"]


def test_delivery_behind_a_still_waiting_head_is_an_order_violation() -> None:
    h = H().put(1, "a", key="k").put(2, "b", key="k").consume("b", 2)
    assert kinds(h, FinalState(waiting={"a": 1}), expect_drained=False) == ["order"]


def test_dead_letter_frees_its_key_and_early_dead_letter_is_bad() -> None:
    h = H().put(1, "a", key="k").put(2, "b", key="k").consume("b", 2)
    assert kinds(h, FinalState(dead={"a": (1, 3, "failed 3 of 3")})) == []
    assert kinds(h, FinalState(dead={"a": (1, 1, "lost patience")})) == ["bad_dead_letter"]
    assert kinds(h, FinalState(dead={"a": (1, 1, "pmsq.Reject: bad card")})) == []


def test_tenant_leak() -> None:
    h = H().put(1, "a")
    h("delivered", "c1", id="a", v=1, attempt=1, lease_expires=999, scope="acme", tenant="globex")
    h("process_start", "c1", id="a", attempt=1)
    h("process_done", "c1", id="a", attempt=1)
    h("ack_ok", "c1", id="a", attempt=1)
    assert "tenant_leak" in kinds(h)


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    hist = History(path, "p")
    hist.log("put_invoke", v=1, key=None, tenant=None, dedup_id=None)
    hist.close()
    with open(path, "a") as fh:
        fh.write('{"t": 1, "op": "put_o')  # a writer killed mid-line
    assert [e["op"] for e in read_histories([path])] == ["put_invoke"]


@pytest.mark.parametrize("consumers", [1, 3])
def test_a_real_run_on_sqlite_is_valid(tmp_path: Path, consumers: int) -> None:
    """Producer and consumer threads on a real store log a history the checker accepts."""
    broker = pmsq.connect(str(tmp_path / "q.db"), durability="normal")
    q = broker.declare_queue("q", max_attempts=3, lease=30)
    prod = History(tmp_path / "prod.jsonl", "prod")
    for v in range(60):
        key = f"k{v % 4}" if v % 3 else None
        prod.log("put_invoke", v=v, key=key, tenant=None, dedup_id=None)
        prod.log("put_ok", v=v, id=q.put({"v": v}, key=key))
    prod.close()

    def consume(i: int) -> None:
        hist = History(tmp_path / f"c{i}.jsonl", f"c{i}")
        while True:
            batch = q.get_many(1, timeout=0.3)
            if not batch:
                break
            d = batch[0]
            m = d.message
            hist.log(
                "delivered",
                id=m.id,
                v=m.payload["v"],
                attempt=m.attempt,
                lease_expires=d.lease_expires,
            )
            hist.log("process_start", id=m.id, attempt=m.attempt)
            hist.log("process_done", id=m.id, attempt=m.attempt)
            hist.log("settle_invoke", id=m.id, attempt=m.attempt, how="ack")
            d.ack()
            hist.log("ack_ok", id=m.id, attempt=m.attempt)
        hist.close()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = read_histories(sorted(tmp_path.glob("*.jsonl")))
    assert check(events, FinalState(), max_attempts=3) == []
    assert sum(1 for e in events if e["op"] == "ack_ok") == 60
    broker.close()


def test_delivery_after_the_ack_returned() -> None:
    h = H().put(1, "a").consume("a", 1).consume("a", 1, attempt=2, proc="c2")
    assert kinds(h) == ["delivered_after_ack", "double_ack"]


def test_a_put_retried_with_its_dedup_id_is_one_message_in_its_key() -> None:
    """The retry returns the first put's id; it is not a later message of the key."""
    h = H().put(1, "a", key="k", dedup="d").put(2, "a", key="k", dedup="d").consume("a", 1)
    assert kinds(h, clock_skew=0.0) == []


def test_an_ack_whose_answer_was_never_logged_may_have_deleted_the_message() -> None:
    """Killed between the ack's commit and its log line: gone is not lost."""
    h = H().put(1, "a")
    h("delivered", "c1", id="a", v=1, attempt=1, lease_expires=h.t + 30)
    h("process_start", "c1", id="a", attempt=1)
    h("process_done", "c1", id="a", attempt=1)
    h("settle_invoke", "c1", id="a", attempt=1, how="ack")
    assert kinds(h) == []
    h("ack_rejected", "c1", id="a", attempt=1)
    assert kinds(h) == ["lost"]


def test_a_delivery_logged_late_pairs_up_in_attempt_order() -> None:
    """A consumer stopped between its claim and its log line logs attempt 1 after
    attempt 2: deliveries pair up by attempt, so that is no overlap."""
    h = H().put(1, "a")
    claimed = h.t + 0.5
    h.t += 10  # attempt 1's holder was frozen; its lease ran out; c2 claimed attempt 2
    h.consume("a", 1, attempt=2, proc="c2")
    h("delivered", "c1", id="a", v=1, attempt=1, lease_expires=claimed + 1)
    h("process_start", "c1", id="a", attempt=1)
    h("process_done", "c1", id="a", attempt=1)
    h("settle_invoke", "c1", id="a", attempt=1, how="ack")
    h("ack_rejected", "c1", id="a", attempt=1)
    assert kinds(h) == []


# -- cancellations ------------------------------------------------------------------------
def test_a_cancelled_message_is_not_lost() -> None:
    h = H().put(1, "a").put(2, "b")
    h("cancel_invoke", "app", ids=["a"])("cancel_ok", "app", ids=["a"])
    assert kinds(h.consume("b", 2)) == []


def test_a_cancel_without_an_answer_may_have_removed_its_message() -> None:
    h = H().put(1, "a")("cancel_invoke", "app", ids=["a"])
    assert kinds(h) == []
    assert kinds(h, FinalState(waiting={"a": 1}), expect_drained=False) == []


def test_a_cancel_that_said_nothing_was_removed_does_not_excuse_a_loss() -> None:
    h = H().put(1, "a")("cancel_invoke", "app", ids=["b"])("cancel_ok", "app", ids=[])
    assert kinds(h) == ["lost"]


def test_a_delivery_after_the_cancel_returned_is_named() -> None:
    h = H().put(1, "a")("cancel_invoke", "app", ids=["a"])("cancel_ok", "app", ids=["a"])
    h("delivered", "c1", id="a", v=1, attempt=1, lease_expires=h.t + 30)
    h("settle_invoke", "c1", id="a", attempt=1, how="ack")
    h("ack_rejected", "c1", id="a", attempt=1)
    assert kinds(h) == ["delivered_after_cancel"]


def test_a_handler_started_before_the_cancel_may_finish_but_its_ack_must_fail() -> None:
    def history(answer: str) -> H:
        h = H().put(1, "a")
        h("delivered", "c1", id="a", v=1, attempt=1, lease_expires=h.t + 30)
        h("process_start", "c1", id="a", attempt=1)
        h("cancel_invoke", "app", ids=["a"])("cancel_ok", "app", ids=["a"])
        h("process_done", "c1", id="a", attempt=1)
        h("settle_invoke", "c1", id="a", attempt=1, how="ack")
        return h(answer, "c1", id="a", attempt=1)

    assert kinds(history("ack_rejected")) == []
    assert kinds(history("ack_ok")) == ["acked_after_cancel"]


def test_a_message_still_stored_after_its_cancel_is_uncancelled() -> None:
    h = H().put(1, "a")("cancel_invoke", "app", ids=["a"])("cancel_ok", "app", ids=["a"])
    assert kinds(h, FinalState(waiting={"a": 1}), expect_drained=False) == ["uncancelled"]
