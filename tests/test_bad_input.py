"""Hostile and mistaken input: each gets a clear pmsq error, and the store stays as it was.

"As it was" is checked with ``StoreSnapshot``: after a TRUNCATE checkpoint
the WAL is empty, so any committed write shows as WAL bytes, then as main-file
bytes after the next checkpoint, and as rows in a logical dump of every table.
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faults._support import StoreSnapshot, table_rows

import pmsq
from pmsq.codec import MAX_DEPTH

SQL_NAME = "x'; DROP TABLE pmsq_messages; --"


@pytest.fixture
def store(broker: pmsq.Broker, db_path: Path) -> Iterator[pmsq.Queue]:
    """A queue with a few messages (keyed, tenanted, delayed, deduped) and one in flight."""
    q = broker.declare_queue("orders", max_attempts=3, lease=30.0)
    q.put({"n": 1}, key="property:1", tenant="acme", dedup_id="d-1")
    q.put({"n": 2}, key="property:1", tenant="acme")
    q.put({"n": 3}, delay=60)
    q.put(b"\x00raw", priority=5)
    q.get(timeout=0)  # leave one in flight
    return q


@pytest.fixture
def unchanged(store: pmsq.Queue, db_path: Path) -> Iterator[None]:
    snap = StoreSnapshot(db_path)
    yield
    snap.assert_unchanged()


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


class _Custom:
    pass


PAYLOADS = {
    "object": (object(), "object is not JSON serializable"),
    "custom-class": (_Custom(), "_Custom is not JSON serializable"),
    "set": ({1, 2}, "set is not JSON serializable"),
    "nan": ({"rate": math.nan}, "Out of range float"),
    "inf": ([math.inf], "Out of range float"),
    "-inf": (-math.inf, "Out of range float"),
    "non-str-key-tuple": ({(1, 2): "x"}, "keys must be str"),
    "too-deep": (_deep(100_000), "nested too deeply"),
    "deep-990": (_deep(990), "200 levels"),
    "one-past-the-depth-limit": (_deep(MAX_DEPTH + 1), "pmsq.codec.MAX_DEPTH"),
    "deep-in-a-dict": ({"a": [{"b": _deep(MAX_DEPTH)}]}, "nested too deeply"),
    # JSON turns these keys into strings: {1: "int", "1": "str"} came back as {"1": "str"}.
    "int-key-beside-its-string": ({1: "int", "1": "str"}, "got the int key 1"),
    "int-key": ({1: "x"}, "keys must be str"),
    "none-key": ({None: "x"}, "delivered as the string 'null'"),
    "bool-key": ({True: "x"}, "delivered as the string 'true'"),
    "float-key": ({1.5: "x"}, "float key 1.5"),
    "nested-int-key": ([{"ok": {2: "x"}}], "keys must be str"),
    "nested-object-in-list": ([1, {"a": [dt.date(2024, 1, 1)]}], "date is not JSON serializable"),
    # JSON can carry a lone surrogate, UTF-8 cannot: it used to escape as UnicodeEncodeError.
    "lone-surrogate": ("caf\ud800", "surrogates not allowed"),
    "surrogate-in-dict-key": ({"\udc00": 1}, "surrogates not allowed"),
    "huge-int": (10**5000, "Exceeds the limit"),
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("name", list(PAYLOADS))
def test_unserialisable_payload(store: pmsq.Queue, name: str) -> None:
    payload, problem = PAYLOADS[name]
    with pytest.raises(pmsq.SerializationError, match=r"not JSON-serialisable|nested too deeply"):
        store.put(payload)
    with pytest.raises(pmsq.SerializationError) as info:
        store.put_many([{"ok": 1}, payload])
    assert problem in str(info.value)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "headers",
    [
        {1: "x"},
        {"a": object()},
        {"a": math.nan},
        ["not", "a", "dict"],
        {"h": "\ud800"},
        {"h": {1: "x"}},
        {"h": _deep(MAX_DEPTH)},
    ],
    ids=["int-key", "object", "nan", "list", "lone-surrogate", "nested-int-key", "too-deep"],
)
def test_bad_headers(store: pmsq.Queue, headers: Any) -> None:
    with pytest.raises(pmsq.SerializationError, match="headers"):
        store.put({"n": 1}, headers=headers)


def _at_stack_depth(frames: int, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` with ``frames`` more Python frames on the stack (a deep handler's)."""
    return fn() if frames == 0 else _at_stack_depth(frames - 1, fn)


def _put_from_a_fresh_thread(q: pmsq.Queue, payload: Any) -> BaseException | None:
    """Put from a new thread's shallow stack; return what it raised, if anything."""
    raised: list[BaseException] = []

    def put() -> None:
        try:
            q.put(payload)
        except BaseException as exc:
            raised.append(exc)

    t = threading.Thread(target=put)
    t.start()
    t.join()
    return raised[0] if raised else None


@pytest.mark.parametrize("depth", [950, 600, MAX_DEPTH + 1])
def test_a_payload_too_deep_to_read_back_is_refused_at_put(broker: pmsq.Broker, depth: int) -> None:
    # From a shallow stack a list 950 deep encodes, but a reader with a few
    # hundred frames under it cannot decode it: it was dead-lettered at claim
    # ("payload cannot be decoded") and no handler ever saw it.
    q = broker.queue("deep")
    error = _put_from_a_fresh_thread(q, _deep(depth))
    assert isinstance(error, pmsq.SerializationError), error
    assert f"{MAX_DEPTH} levels" in str(error)
    assert q.peek() == []
    assert q.dead_letters().list() == []


def test_what_put_accepts_a_reader_gets_back(store: pmsq.Queue) -> None:
    # At the depth limit, put from a shallow stack and read from a deep one:
    # decoding recurses once per level, which is why the limit exists.
    store.put_many([_deep(MAX_DEPTH), {"pair": (1, 2), "nested": ((3,), [4])}])
    got = []
    while True:
        try:
            d = _at_stack_depth(400, lambda: store.get(timeout=0))
        except pmsq.Empty:
            break
        got.append(d.message.payload)
        d.ack()
    assert _deep(MAX_DEPTH) in got
    # Documented in pmsq.codec: a tuple is a JSON array and comes back as a list.
    assert {"pair": [1, 2], "nested": [[3], [4]]} in got
    assert store.dead_letters().list() == []


@pytest.mark.usefixtures("unchanged")
def test_payload_over_the_default_limit(store: pmsq.Queue) -> None:
    limit = 1_048_576
    with pytest.raises(pmsq.PayloadTooLarge, match="max_payload_bytes=1,048,576") as info:
        store.put("x" * (limit - 1))  # + 2 quotes = limit + 1 bytes encoded
    assert "1,048,577 bytes" in str(info.value)
    with pytest.raises(pmsq.PayloadTooLarge):
        store.put(b"\x00" * (limit + 1))
    with pytest.raises(pmsq.PayloadTooLarge):
        store.put_many(["small", b"\x00" * (limit + 1)])


def test_payload_exactly_at_the_limit_is_accepted(store: pmsq.Queue) -> None:
    mid = store.put("x" * (1_048_576 - 2))
    assert any(m.id == mid for m, _ in store.peek(10))


def test_configured_payload_limit(db_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "small.db"
    with pmsq.connect(str(path), max_payload_bytes=100, durability="memory") as broker:
        q = broker.queue("q")
        q.put("x" * 98)  # exactly 100 bytes encoded
        snap = StoreSnapshot(path)
        with pytest.raises(pmsq.PayloadTooLarge, match=r"101 bytes.*max_payload_bytes=100"):
            q.put("x" * 99)
        snap.assert_unchanged()


BAD_PUT_OPTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "key-empty": ({"key": ""}, "invalid key"),
    "key-newline": ({"key": "a\nb"}, "invalid key"),
    "key-too-long": ({"key": "k" * 513}, "invalid key"),
    "key-int": ({"key": 4521}, "invalid key"),
    "key-bytes": ({"key": b"property:1"}, "invalid key"),
    "tenant-empty": ({"tenant": ""}, "invalid tenant"),
    "tenant-space": ({"tenant": "acme corp"}, "invalid tenant"),
    "tenant-sql": ({"tenant": SQL_NAME}, "invalid tenant"),
    "tenant-too-long": ({"tenant": "t" * 129}, "invalid tenant"),
    "tenant-int": ({"tenant": 7}, "invalid tenant"),
    "tenant-trailing-newline": ({"tenant": "acme\n"}, "invalid tenant"),
    "dedup-empty": ({"dedup_id": ""}, "invalid dedup_id"),
    "dedup-too-long": ({"dedup_id": "d" * 257}, "invalid dedup_id"),
    "dedup-nul": ({"dedup_id": "a\x00b"}, "invalid dedup_id"),
    "dedup-int": ({"dedup_id": 3}, "invalid dedup_id"),
    "priority-float": ({"priority": 1.5}, "priority must be an int"),
    "priority-bool": ({"priority": True}, "priority must be an int"),
    "priority-str": ({"priority": "1"}, "priority must be an int"),
    "priority-huge": ({"priority": 2**31}, "priority must be an int"),
    "priority-none": ({"priority": None}, "priority must be an int"),
    "delay-negative": ({"delay": -1}, "delay must be"),
    "delay-nan": ({"delay": math.nan}, "delay must be"),
    "delay-inf": ({"delay": math.inf}, "delay must be"),
    "delay-str": ({"delay": "5"}, "delay must be"),
    "delay-bool": ({"delay": True}, "delay must be"),
    "not-before-naive": ({"not_before": dt.datetime(2030, 1, 1)}, "timezone-aware"),
    "not-before-nan": ({"not_before": math.nan}, "not_before must be"),
    "not-before-str": ({"not_before": "tomorrow"}, "not_before must be"),
    "not-before-bool": ({"not_before": True}, "not_before must be"),
    "coalesce-without-key": ({"coalesce": True}, "coalesce=True needs a key"),
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(BAD_PUT_OPTIONS))
def test_bad_put_option(store: pmsq.Queue, case: str) -> None:
    options, problem = BAD_PUT_OPTIONS[case]
    with pytest.raises(pmsq.ConfigurationError, match=problem):
        store.put({"n": 1}, **options)
    # put_many validates every item before storing any.
    with pytest.raises(pmsq.ConfigurationError, match=problem):
        store.put_many([pmsq.NewMessage({"ok": 1}), pmsq.NewMessage({"n": 1}, **options)])


BAD_QUEUE_NAMES = [
    "",
    " ",
    "a b",
    "über",
    "q" * 201,
    ".hidden",
    "-dash",
    "a/b",
    "a*",
    SQL_NAME,
    "pmsq_messages; DELETE FROM pmsq_messages",
    # "$" in a pattern matches before a final newline: the name must end where it ends.
    "orders\n",
    "orders\r\n",
    None,
    42,
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("name", BAD_QUEUE_NAMES, ids=repr)
def test_bad_queue_name(broker: pmsq.Broker, name: Any) -> None:
    actions: list[Callable[[], object]] = [
        lambda: broker.queue(name),
        lambda: broker.declare_queue(name),
        lambda: broker.subscribe("booking.*", queue=name),
        lambda: broker.dead_letters(name),
        lambda: broker.handler(name),
    ]
    if name is not None:  # None means "no fallback" and "every queue" there
        actions += [
            lambda: broker.declare_queue("orders", fallback=name),
            lambda: broker.stats(name),
        ]
    for action in actions:
        with pytest.raises(pmsq.ConfigurationError, match="invalid queue name"):
            action()


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("tenant", ["acme\n", "acme\r\n", "\nacme"], ids=repr)
def test_tenant_handle_refuses_a_newline_in_the_tenant(broker: pmsq.Broker, tenant: str) -> None:
    with pytest.raises(pmsq.ConfigurationError, match="invalid tenant"):
        broker.tenant(tenant)


def test_sql_looking_key_is_just_data(store: pmsq.Queue, db_path: Path) -> None:
    """Keys are free text: stored as given, never spliced into SQL."""
    mid = store.put({"n": 9}, key=SQL_NAME)
    tables = {r[0] for r in table_rows(db_path, "SELECT name FROM sqlite_master")}
    assert "pmsq_messages" in tables
    rows = table_rows(db_path, "SELECT key FROM pmsq_messages WHERE id = ?", (mid,))
    assert rows == [(SQL_NAME,)]


BAD_DECLARATIONS: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "max_attempts=0": (lambda _: {"max_attempts": 0}, "max_attempts must be an int >= 1"),
    "max_attempts=-1": (lambda _: {"max_attempts": -1}, "max_attempts"),
    "max_attempts=1.5": (lambda _: {"max_attempts": 1.5}, "max_attempts"),
    "max_attempts=True": (lambda _: {"max_attempts": True}, "max_attempts"),
    "lease=-1": (lambda _: {"lease": -1}, "lease must be a finite number > 0"),
    "lease=0": (lambda _: {"lease": 0}, "lease"),
    "lease=nan": (lambda _: {"lease": math.nan}, "lease"),
    "lease=inf": (lambda _: {"lease": math.inf}, "lease"),
    "on_key_failure": (lambda _: {"on_key_failure": "maybe"}, "on_key_failure must be"),
    "backoff-factor": (lambda _: {"backoff": pmsq.Backoff(factor=0.5)}, "Backoff.factor"),
    "backoff-base": (lambda _: {"backoff": pmsq.Backoff(base=-1)}, "Backoff.base"),
    "backoff-cap": (lambda _: {"backoff": pmsq.Backoff(cap=math.inf)}, "Backoff.cap"),
    "backoff-type": (lambda _: {"backoff": "exponential"}, "backoff must be a pmsq.Backoff"),
    "rate-zero": (lambda _: {"rate_limit": pmsq.RateLimit(0)}, "RateLimit.limit"),
    "rate-per": (lambda _: {"rate_limit": pmsq.RateLimit(5, per=0)}, "RateLimit.per"),
    "rate-scope": (lambda _: {"rate_limit": pmsq.RateLimit(5, scope="planet")}, "scope"),  # type: ignore[arg-type]
    "rate-type": (lambda _: {"rate_limit": 10}, "rate_limit must be a pmsq.RateLimit"),
    "dedup-window": (lambda _: {"dedup_window": -1}, "dedup_window"),
    "max-depth": (lambda _: {"max_depth": 0}, "max_depth"),
    "tenant-quota": (lambda _: {"tenant_quota": -5}, "tenant_quota"),
    "own-fallback": (lambda name: {"fallback": name}, "its own fallback"),
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(BAD_DECLARATIONS))
def test_bad_declare_queue_options(broker: pmsq.Broker, case: str) -> None:
    make_options, problem = BAD_DECLARATIONS[case]
    with pytest.raises(pmsq.ConfigurationError, match=problem):
        # Re-declaring an existing queue: its stored options must survive the mistake.
        broker.declare_queue("orders", **make_options("orders"))
    with pytest.raises(pmsq.ConfigurationError, match=problem):
        broker.declare_queue("brand-new", **make_options("brand-new"))


@pytest.mark.usefixtures("unchanged")
def test_stored_options_survive_a_bad_redeclaration(broker: pmsq.Broker) -> None:
    with pytest.raises(pmsq.ConfigurationError):
        broker.declare_queue("orders", max_attempts=0)
    assert broker.queue("orders").config.max_attempts == 3


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"n": 0}, "n >= 1"),
        ({"n": -3}, "n >= 1"),
        ({"n": 1.5}, "n >= 1"),
        ({"n": 1, "timeout": -1}, "timeout"),
        ({"n": 1, "timeout": "soon"}, "timeout"),
    ],
)
def test_bad_get_many_arguments(store: pmsq.Queue, kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(pmsq.ConfigurationError, match=problem):
        store.get_many(**kwargs)


@pytest.mark.parametrize(
    ("url", "listed"),
    [("redis://localhost:6379/0", "redis"), ("nosuchdb://x", "nosuchdb"), ("MQTT://h", "mqtt")],
)
def test_unknown_url_scheme_lists_installed_schemes(url: str, listed: str) -> None:
    with pytest.raises(pmsq.ConfigurationError, match="unknown URL scheme") as info:
        pmsq.connect(url)
    message = str(info.value)
    assert repr(listed) in message
    assert "installed schemes: " in message
    assert "sqlite" in message.split("installed schemes: ", 1)[1]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"durability": "fast"}, "durability"),
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"busy_timeout": math.nan}, "busy_timeout"),
        ({"max_payload_bytes": 0}, "max_payload_bytes"),
        ({"max_payload_bytes": 1.5}, "max_payload_bytes"),
        ({"poll_interval": 0}, "poll_interval"),
    ],
)
def test_bad_connect_options(tmp_path: Path, kwargs: dict[str, Any], problem: str) -> None:
    path = tmp_path / "never.db"
    with pytest.raises(pmsq.ConfigurationError, match=problem):
        pmsq.connect(str(path), **kwargs)
    assert not path.exists()  # a bad option is found before the file is created


@pytest.mark.parametrize("url", ["", "sqlite://", "sqlite:///"])
def test_missing_path(url: str) -> None:
    with pytest.raises(pmsq.ConfigurationError):
        pmsq.connect(url)


def test_put_many_with_one_bad_item_stores_nothing(store: pmsq.Queue, db_path: Path) -> None:
    snap = StoreSnapshot(db_path)
    good = [pmsq.NewMessage({"n": i}, key="property:2") for i in range(5)]
    with pytest.raises(pmsq.SerializationError):
        store.put_many([*good[:3], pmsq.NewMessage({1, 2}), *good[3:]])
    with pytest.raises(pmsq.ConfigurationError):
        store.put_many([*good, pmsq.NewMessage({"n": 9}, tenant="bad tenant")])
    snap.assert_unchanged()


def test_put_many_rolls_back_when_the_store_refuses_an_item(
    broker: pmsq.Broker, db_path: Path
) -> None:
    """A QueueFull found by the store mid-batch undoes the items stored before it."""
    q = broker.declare_queue("small", max_depth=3)
    q.put({"n": 0})
    snap = StoreSnapshot(db_path)
    with pytest.raises(pmsq.QueueFull, match="max_depth=3"):
        q.put_many([{"n": 1}, {"n": 2}, {"n": 3}])
    snap.assert_unchanged()
    assert len(q.put_many([{"n": 1}, {"n": 2}])) == 2


@pytest.mark.parametrize("verb", ["ack", "retry", "retry0", "dead_letter", "extend"])
def test_stale_receipt_raises_lease_lost_and_changes_nothing(
    broker: pmsq.Broker, clock: pmsq.ManualClock, db_path: Path, verb: str
) -> None:
    q = broker.declare_queue("orders", lease=10.0, max_attempts=5)
    mid = q.put({"n": 1}, key="property:1")
    q.put({"n": 2}, key="property:1")
    stale = q.get(timeout=0)
    clock.advance(11)  # the lease runs out...
    fresh = q.get(timeout=0)  # ...and another consumer holds the message now
    assert fresh.message.id == stale.message.id == mid
    broker.stats()  # writes buffered outcome counts now, so the snapshot holds them
    snap = StoreSnapshot(db_path)
    calls: dict[str, Callable[[], None]] = {
        "ack": stale.ack,
        "retry": stale.retry,
        "retry0": lambda: stale.retry(delay=0),
        "dead_letter": lambda: stale.dead_letter("stale"),
        "extend": lambda: stale.extend(60),
    }
    with pytest.raises(pmsq.LeaseLost, match=mid):
        calls[verb]()
    snap.assert_unchanged()
    # The stale delivery stays dead; the fresh one still works and the key moves on.
    with pytest.raises(pmsq.LeaseLost):
        stale.ack()
    fresh.ack()
    assert q.get(timeout=0).message.payload == {"n": 2}


def test_settling_twice_raises_lease_lost(store: pmsq.Queue, db_path: Path) -> None:
    d = store.get(timeout=0)
    d.ack()
    snap = StoreSnapshot(db_path)
    for again in (d.ack, d.retry, lambda: d.dead_letter("x"), lambda: d.extend(5)):
        with pytest.raises(pmsq.LeaseLost, match="already acked"):
            again()
    snap.assert_unchanged()


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, "10"])
def test_bad_extend_and_retry_arguments(store: pmsq.Queue, db_path: Path, value: Any) -> None:
    d = store.get(timeout=0)
    snap = StoreSnapshot(db_path)
    with pytest.raises(pmsq.ConfigurationError, match="extend takes seconds > 0"):
        d.extend(value)
    if value != 0:  # retry(delay=0) is valid: retry at once
        with pytest.raises(pmsq.ConfigurationError, match="retry delay"):
            d.retry(delay=value)
    snap.assert_unchanged()
    assert d.settled is None
    d.ack()  # the delivery is still held and usable


def test_outbox_connection_to_another_file(
    store: pmsq.Queue, db_path: Path, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    memory = sqlite3.connect(":memory:")
    try:
        other.execute("CREATE TABLE bookings (id INTEGER)")
        snap = StoreSnapshot(db_path)
        other.execute("BEGIN")
        other.execute("INSERT INTO bookings VALUES (1)")
        with pytest.raises(pmsq.ConfigurationError, match="same file") as info:
            store.put({"n": 1}, connection=other)
        assert "app.db" in str(info.value)
        assert other.in_transaction  # the app's transaction is its own business
        other.execute("ROLLBACK")
        with pytest.raises(pmsq.ConfigurationError, match="in-memory"):
            store.put({"n": 1}, connection=memory)
        with pytest.raises(pmsq.ConfigurationError, match=r"sqlite3\.Connection"):
            store.put({"n": 1}, connection=str(db_path))
        snap.assert_unchanged()
        names = [r[0] for r in other.execute("SELECT name FROM sqlite_master")]
        assert names == ["bookings"]  # nothing of pmsq leaked into the other file
    finally:
        other.close()
        memory.close()


def test_misspelt_connect_option_is_refused_and_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(pmsq.ConfigurationError, match="durabilty"):
        pmsq.connect(str(path), durabilty="full")
    assert not path.exists()
