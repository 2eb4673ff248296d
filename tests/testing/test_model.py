"""The model of ``pmsq.testing`` on its own: the rules the stateful test holds backends to."""

from __future__ import annotations

import pytest

import pmsq
from pmsq.testing import ModelPut, QueueModel

NOW = 1_000.0


def model(**options: object) -> QueueModel:
    return QueueModel(
        [pmsq.QueueConfig(name="q", backoff=pmsq.Backoff(base=2.0, jitter=False), **options)]  # type: ignore[arg-type]
    )


def claimable(m: QueueModel, now: float = NOW) -> list[str]:
    m.expire("q", now)
    return [x.id for x in m.claimable("q", now)]


def test_only_the_head_of_a_key_line_is_claimable_and_acks_move_it_on() -> None:
    m = model()
    for mid, key in (("a", "k"), ("b", "k"), ("c", None), ("d", "j")):
        m.put("q", ModelPut(mid, key=key), mid, NOW)
    assert claimable(m) == ["a", "c", "d"]
    [holder] = m.claim(["a"], NOW)
    assert claimable(m) == ["c", "d"]
    assert m.ack("a", holder)
    assert claimable(m) == ["b", "c", "d"]


def test_priority_orders_within_a_tenant_but_never_overrides_the_key() -> None:
    m = model()
    m.put("q", ModelPut(1, key="k"), "low-head", NOW)
    m.put("q", ModelPut(2, key="k", priority=9), "high-behind", NOW)
    m.put("q", ModelPut(3, priority=5), "high", NOW)
    assert claimable(m) == ["high", "low-head"]


def test_an_expired_lease_keeps_its_holder_until_someone_else_claims() -> None:
    m = model(lease=10.0, max_attempts=3)
    m.put("q", ModelPut(1), "a", NOW)
    [first] = m.claim(["a"], NOW)
    m.expire("q", NOW + 11)
    assert m.holds("a", first), "expired but unclaimed: the late holder may still settle"
    [second] = m.claim(["a"], NOW + 11)
    assert not m.holds("a", first)
    assert not m.ack("a", first)
    assert m.messages["a"].attempt == 2
    assert m.ack("a", second)


def test_lease_expiry_on_the_last_attempt_dead_letters_and_loses_the_lease() -> None:
    m = model(lease=10.0, max_attempts=1, fallback="fb")
    m.put("q", ModelPut({"x": 1}, key="k"), "a", NOW)
    [holder] = m.claim(["a"], NOW)
    m.expire("q", NOW + 11)
    assert [d.id for d in m.dead_letters("q")] == ["a"]
    assert not m.holds("a", holder)
    [copy] = [x for x in m.messages.values() if x.queue == "fb"]
    assert copy.source_id == "a"
    assert copy.headers["pmsq.dead_letter"]["message_id"] == "a"
    assert m.totals("q") == {"processed": 0, "failed": 1, "retried": 0, "dead_lettered": 1}


def test_block_keeps_the_key_until_redrive_returns_the_dead_letter_to_the_head() -> None:
    m = model(on_key_failure="block")
    m.put("q", ModelPut(1, key="k"), "a", NOW)
    m.put("q", ModelPut(2, key="k"), "b", NOW)
    [holder] = m.claim(["a"], NOW)
    assert m.dead_letter("a", holder, "bad", NOW)
    assert claimable(m) == []
    assert m.redrive("q", None, NOW) == 1
    assert claimable(m) == ["a"]
    assert m.messages["a"].attempt == 0


def test_continue_redrive_rejoins_the_key_at_its_tail() -> None:
    m = model()
    m.put("q", ModelPut(1, key="k"), "a", NOW)
    m.put("q", ModelPut(2, key="k"), "b", NOW)
    [holder] = m.claim(["a"], NOW)
    m.dead_letter("a", holder, "bad", NOW)
    assert claimable(m) == ["b"]
    m.redrive("q", ["a"], NOW)
    assert claimable(m) == ["b"]
    [hb] = m.claim(["b"], NOW)
    m.ack("b", hb)
    assert claimable(m) == ["a"]


def test_purge_releases_a_blocked_key() -> None:
    m = model(on_key_failure="block")
    m.put("q", ModelPut(1, key="k"), "a", NOW)
    m.put("q", ModelPut(2, key="k"), "b", NOW)
    [holder] = m.claim(["a"], NOW)
    m.dead_letter("a", holder, "bad", NOW)
    assert m.purge("q", ["a"]) == 1
    assert claimable(m) == ["b"]


def test_retry_uses_backoff_and_dead_letters_on_the_last_attempt() -> None:
    m = model(max_attempts=2)
    m.put("q", ModelPut(1), "a", NOW)
    [h1] = m.claim(["a"], NOW)
    assert m.retry("a", h1, None, NOW)
    assert claimable(m, NOW + 1.5) == []
    assert claimable(m, NOW + 2.0) == ["a"]
    [h2] = m.claim(["a"], NOW + 2.0)
    assert m.retry("a", h2, 0.0, NOW + 2.0)
    assert m.dead_letters("q")[0].dead_reason == "retried 2 of 2 attempts"


def test_dedup_window_per_tenant_and_forever() -> None:
    m = model(dedup_window=30.0)
    assert m.put("q", ModelPut(1, dedup_id="d"), "a", NOW) == "a"
    assert m.put("q", ModelPut(2, dedup_id="d"), "x", NOW + 29) == "a"
    assert m.put("q", ModelPut(3, dedup_id="d", tenant="t"), "b", NOW + 29) == "b"
    assert m.put("q", ModelPut(4, dedup_id="d"), "c", NOW + 30) == "c"
    forever = model(dedup_window=None)
    forever.put("q", ModelPut(1, dedup_id="d"), "a", NOW)
    assert forever.put("q", ModelPut(1, dedup_id="d"), "b", NOW + 1e9) == "a"


def test_coalesce_replaces_only_a_never_delivered_newest_message() -> None:
    m = model()
    m.put("q", ModelPut(1, key="k"), "a", NOW)
    assert m.put("q", ModelPut(2, key="k", coalesce=True), "x", NOW) == "a"
    assert m.messages["a"].payload == 2
    [holder] = m.claim(["a"], NOW)
    m.retry("a", holder, 0.0, NOW)
    assert m.put("q", ModelPut(3, key="k", coalesce=True), "b", NOW) == "b"


def test_put_many_is_all_or_nothing() -> None:
    m = model(max_depth=2)
    m.put("q", ModelPut(0, dedup_id="d0"), "a", NOW)
    with pytest.raises(pmsq.QueueFull):
        m.put_many("q", [ModelPut(1, dedup_id="d1"), ModelPut(2)], ["b", "c"], NOW)
    assert list(m.messages) == ["a"]
    assert ("q", None, "d1") not in m.dedup


def test_the_model_refuses_jittered_backoff() -> None:
    with pytest.raises(ValueError, match="jitter"):
        QueueModel([pmsq.QueueConfig(name="q")])


def test_ready_stays_ready_when_the_clock_steps_back_and_delays_hold_until_claimed() -> None:
    """As the SQLite backend does: a claim makes due messages ready for good."""
    m = model()
    m.put("q", ModelPut(1), "now", NOW)
    m.put("q", ModelPut(2, available_at=NOW + 5), "later", NOW)
    assert claimable(m, NOW - 1) == ["now"]  # the clock stepped back: still ready
    assert claimable(m, NOW + 5) == ["now", "later"]  # this claim makes "later" ready
    assert claimable(m, NOW) == ["now", "later"]
    [holder] = m.claim(["now"], NOW)
    assert m.retry("now", holder, 3.0, NOW)
    assert claimable(m, NOW + 1) == ["later"]  # retried with a delay: held back again
    assert claimable(m, NOW - 10) == ["later"]
