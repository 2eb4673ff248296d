"""Topic fan-out: pattern matching (checked against an independent reference) and routing."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pmsq
from pmsq.clock import ManualClock
from pmsq.topics import matches

from ._support import raw_rows


def reference_match(pattern: str, topic: str) -> bool:
    """An independent matcher: every word is written with a trailing dot, then a regex.

    ``*`` becomes exactly one word, ``#`` any number of whole words (including none).
    """
    parts = []
    for word in pattern.split("."):
        if word == "*":
            parts.append(r"[^.]+\.")
        elif word == "#":
            parts.append(r"(?:[^.]+\.)*")
        else:
            parts.append(re.escape(word) + r"\.")
    return re.fullmatch("".join(parts), topic + ".") is not None


topic_words = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=6)
pattern_words = st.lists(st.sampled_from(["a", "b", "*", "#"]), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None)
@given(pattern=pattern_words, topic=topic_words)
def test_matches_agrees_with_reference(pattern: list[str], topic: list[str]) -> None:
    p, t = ".".join(pattern), ".".join(topic)
    assert matches(p, t) == reference_match(p, t), (p, t)


long_topics = st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=14)
hashy_patterns = st.lists(st.sampled_from(["a", "*", "#", "#", "#"]), min_size=1, max_size=14)


@settings(max_examples=300, deadline=None)
@given(pattern=hashy_patterns, topic=long_topics)
def test_matches_agrees_with_reference_on_runs_of_hashes(
    pattern: list[str], topic: list[str]
) -> None:
    p, t = ".".join(pattern), ".".join(topic)
    assert matches(p, t) == reference_match(p, t), (p, t)


@settings(max_examples=200, deadline=None)
@given(pattern=hashy_patterns, topic=long_topics, at=st.integers(min_value=0))
def test_doubling_a_hash_changes_nothing(pattern: list[str], topic: list[str], at: int) -> None:
    hashes = [i for i, w in enumerate(pattern) if w == "#"]
    if not hashes:
        pattern = [*pattern, "#"]
        hashes = [len(pattern) - 1]
    i = hashes[at % len(hashes)]
    doubled = [*pattern[: i + 1], "#", *pattern[i + 1 :]]
    t = ".".join(topic)
    assert matches(".".join(doubled), t) == matches(".".join(pattern), t)


def _python_calls(fn: Any, *args: Any) -> int:
    """How many Python-level function calls ``fn(*args)`` makes: work, without a stopwatch."""
    calls = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profile)
    try:
        fn(*args)
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("hashes", [10, 40])
def test_matching_work_is_bounded_for_many_hashes(hashes: int) -> None:
    # Many "#" against a longer topic that fails at its last word: a backtracking
    # matcher tries every split (126 "#" and 127 words once took 2.2 s per topic).
    pattern = ".".join(["#"] * hashes + ["z"])
    words = [f"w{hashes}"] + ["a"] * hashes
    calls = _python_calls(matches, pattern, ".".join(words))
    assert matches(pattern, ".".join(words)) is False
    assert calls <= 3 * (len(words) + hashes) + 10, calls


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("#", "booking", True),
        ("#", "booking.created.v2", True),
        ("booking.*", "booking.created", True),
        ("booking.*", "booking", False),
        ("booking.*", "booking.created.v2", False),
        ("booking.#", "booking", True),
        ("booking.#", "booking.created.v2", True),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a", False),
        ("a.#.b", "a.b.c", False),
        ("#.#", "a", True),
        ("#.#", "a.b.c", True),
        ("*.*", "a", False),
        ("*.*", "a.b", True),
        ("*", "a.b", False),
        ("#.created", "created", True),
        ("#.created", "booking.created", True),
        ("*.#", "a", True),
        ("*.*.#", "a", False),
        ("#.*.#", "a", True),
        ("#.*.#", "a.b.c", True),
        ("#.#.a.#.#", "a", True),
        ("#.#.a.#.#", "b.b", False),
        ("a.#.#.*", "a", False),
        ("a.#.#.*", "a.b", True),
    ],
)
def test_pattern_edge_cases(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected
    assert reference_match(pattern, topic) is expected  # the reference agrees with the spec


def _count(db: Path) -> int:
    return int(raw_rows(db, "SELECT COUNT(*) FROM pmsq_messages")[0][0])


def test_one_copy_per_bound_queue_even_when_several_patterns_match(
    broker: pmsq.Broker, db_path: Path
) -> None:
    broker.subscribe("booking.*", queue="calendar")
    broker.subscribe("booking.created", queue="calendar")
    broker.subscribe("#", queue="audit")
    broker.subscribe("booking.#", queue="email")
    broker.subscribe("payment.*", queue="accounting")
    ids = broker.publish("booking.created", {"booking": 1}, key="property:4521", tenant="acme")
    assert len(set(ids)) == 3
    assert _count(db_path) == 3
    got = {}
    for name in ("audit", "calendar", "email"):
        with broker.queue(name).get(timeout=0) as d:
            got[name] = d.message
        with pytest.raises(pmsq.Empty):
            broker.queue(name).get(timeout=0)
    with pytest.raises(pmsq.Empty):
        broker.queue("accounting").get(timeout=0)
    # Ids come back in queue-name order, one per queue.
    assert [got[n].id for n in ("audit", "calendar", "email")] == ids
    for m in got.values():
        assert m.topic == "booking.created"
        assert m.payload == {"booking": 1}
        assert (m.key, m.tenant) == ("property:4521", "acme")
    # The copies are one event: they share a correlation id (the first copy's id).
    assert {m.correlation_id for m in got.values()} == {ids[0]}
    assert all(m.causation_id is None for m in got.values())


def test_publish_inside_a_handler_continues_the_chain(broker: pmsq.Broker) -> None:
    broker.subscribe("booking.created", queue="calendar")
    broker.subscribe("calendar.updated", queue="email")
    broker.subscribe("calendar.updated", queue="cleaning")
    (root,) = broker.publish("booking.created", {"booking": 1})
    with broker.queue("calendar").get(timeout=0) as d:
        children = broker.publish("calendar.updated", {"booking": 1})
    for name, cid in zip(("cleaning", "email"), children, strict=True):
        with broker.queue(name).get(timeout=0) as child:
            assert child.message.id == cid
            assert child.message.correlation_id == d.message.correlation_id == root
            assert child.message.causation_id == root


def test_unroutable_stores_nothing(broker: pmsq.Broker, db_path: Path) -> None:
    with pytest.raises(pmsq.Unroutable):
        broker.publish("booking.created", {"x": 1})
    broker.subscribe("booking.*", queue="calendar")
    with pytest.raises(pmsq.Unroutable):
        broker.publish("payment.failed", {"x": 1})
    with pytest.raises(pmsq.Unroutable):
        broker.publish("booking.created.v2", {"x": 1})  # * is exactly one word
    assert _count(db_path) == 0


def test_fan_out_is_atomic(broker: pmsq.Broker, db_path: Path) -> None:
    broker.declare_queue("email", max_depth=1)
    broker.subscribe("booking.*", queue="calendar")
    broker.subscribe("booking.*", queue="email")
    broker.publish("booking.created", {"n": 1})
    with pytest.raises(pmsq.QueueFull):
        broker.publish("booking.created", {"n": 2})
    # The calendar copy of the second event was not stored either.
    assert _count(db_path) == 2
    assert [m.payload for m, _ in broker.queue("calendar").peek()] == [{"n": 1}]


def test_unsubscribe(broker: pmsq.Broker) -> None:
    broker.subscribe("booking.*", queue="calendar")
    broker.subscribe("booking.*", queue="email")
    assert broker.unsubscribe("booking.*", queue="email") is True
    assert broker.unsubscribe("booking.*", queue="email") is False
    assert broker.bindings() == [("booking.*", "calendar")]
    assert broker.route("booking.created") == ["calendar"]
    broker.publish("booking.created", {})
    assert broker.queue("email").peek() == []
    assert broker.unsubscribe("booking.*", queue="calendar") is True
    with pytest.raises(pmsq.Unroutable):
        broker.publish("booking.created", {})


def test_subscribe_is_idempotent_and_validated(broker: pmsq.Broker) -> None:
    broker.subscribe("booking.*", queue="calendar")
    broker.subscribe("booking.*", queue="calendar")
    assert broker.bindings() == [("booking.*", "calendar")]
    # A trailing newline once slipped through: "$" matches before a final "\n".
    for bad in ("", "booking..created", "booking.*x", "a b", "booking.*\n", "booking\n.*"):
        with pytest.raises(pmsq.ConfigurationError, match="invalid topic pattern"):
            broker.subscribe(bad, queue="calendar")
    for bad_topic in ("booking.*", "booking.#", "", "a..b", "booking.created\n", "a\n.b"):
        with pytest.raises(pmsq.ConfigurationError, match="invalid topic"):
            broker.publish(bad_topic, {})
        with pytest.raises(pmsq.ConfigurationError, match="invalid topic"):
            broker.route(bad_topic)
    assert broker.bindings() == [("booking.*", "calendar")]


def test_bindings_are_persisted_for_other_brokers(
    broker: pmsq.Broker, db_path: Path, clock: ManualClock
) -> None:
    broker.subscribe("booking.*", queue="calendar")
    broker.subscribe("booking.#", queue="email")
    broker.subscribe("#.cancelled", queue="cleaning")
    with pmsq.connect(str(db_path), clock=clock, durability="normal") as other:
        assert other.bindings() == broker.bindings()
        for topic in ("booking.created", "booking.cancelled", "booking", "guest.cancelled"):
            assert other.route(topic) == broker.route(topic), topic
        ids = other.publish("booking.cancelled", {"booking": 7})
    assert len(ids) == 3
    for name in ("calendar", "email", "cleaning"):
        with broker.queue(name).get(timeout=0) as d:
            assert d.message.topic == "booking.cancelled"
