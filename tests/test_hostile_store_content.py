"""What comes out is what went in; what another writer planted is never executed;
a forged receipt settles nothing.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import attrs
import pytest
from faults._support import StoreSnapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pmsq
from pmsq.backends.base import Receipt

# JSON's own values: what a JSON payload can be. Floats must be finite (NaN
# and infinities are refused at put, see test_bad_input).
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.text(alphabet=st.characters(blacklist_categories=["Cs"])), inner, max_size=5
        )
    ),
    max_leaves=25,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=JSON, headers=st.dictionaries(st.text(min_size=1, max_size=10), JSON, max_size=3))
def test_payload_and_headers_round_trip(broker: pmsq.Broker, payload: Any, headers: Any) -> None:
    q = broker.queue("round-trip")
    mid = q.put(payload, headers=headers)
    with q.get(timeout=0) as d:
        assert d.message.id == mid
        assert d.message.payload == payload
        assert type(d.message.payload) is type(payload)
        assert d.message.headers == headers


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2048))
def test_bytes_pass_through_as_they_are(broker: pmsq.Broker, data: bytes) -> None:
    q = broker.queue("bytes")
    q.put(data)
    with q.get(timeout=0) as d:
        assert d.message.payload == data


class _Plant:
    """Unpickling this creates a file: the proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("fmt", ["pickle", "json"])
def test_a_planted_pickle_is_never_unpickled(db_path: Path, tmp_path: Path, fmt: str) -> None:
    """Another writer stores a pickle (tagged as pickle, or disguised as JSON):
    pmsq dead-letters it as undecodable and runs none of it; other messages flow."""
    marker = tmp_path / "executed"
    with pmsq.connect(str(db_path)) as broker:
        q = broker.queue("inbox")
        q.put({"n": 1})
        victim = q.put({"n": 2})
    body = pickle.dumps(_Plant(marker))
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(
            "UPDATE pmsq_messages SET payload = ?, crc = ?, format = ? WHERE id = ?",
            (body, zlib.crc32(body), fmt, victim),
        )
    conn.close()
    with pmsq.connect(str(db_path)) as broker:
        q = broker.queue("inbox")
        got = [d.message.payload for d in q.get_many(10, timeout=0)]
        assert got == [{"n": 1}]
        [dead] = broker.dead_letters("inbox").list()
        assert dead.message.id == victim
        assert "cannot be decoded" in dead.reason
    assert not marker.exists()


def test_forged_and_foreign_receipts_settle_nothing(db_path: Path, tmp_path: Path) -> None:
    with pmsq.connect(str(db_path)) as broker:
        q = broker.queue("orders")
        q.put_many([{"n": 1}, {"n": 2}])
        mine = q.get(timeout=0)
        other = q.get(timeout=0)
        real: Receipt = mine._claimed.receipt
        backend = broker.backend
        forged = [
            attrs.evolve(real, token="0" * 16),  # a guessed token
            attrs.evolve(real, handle=other._claimed.receipt.handle),  # my token, another row
            attrs.evolve(real, handle=10**9),  # no such row
            attrs.evolve(real, token=real.token + "' OR 1=1 --"),  # SQL in the token
        ]
        snap = StoreSnapshot(db_path)
        now = broker.clock.time()
        assert backend.ack(forged, now=now, durations_ms=[None] * len(forged)) == [False] * 4
        for r in forged:
            assert backend.extend(r, 60.0, now=now) is None
            assert not backend.retry(
                r, now=now, available_at=now, error_type=None, error=None, duration_ms=None
            )
            assert not backend.dead_letter(
                r, now=now, reason="x", error_type=None, traceback=None, duration_ms=None
            )
        snap.assert_unchanged()
        # A delivery of another store: its receipt means nothing here.
        with pmsq.connect(str(tmp_path / "other.db")) as elsewhere:
            elsewhere.queue("orders").put({"n": 9})
            foreign = elsewhere.queue("orders").get(timeout=0)
            assert backend.ack([foreign._claimed.receipt], now=now, durations_ms=[None]) == [False]
        snap.assert_unchanged()
        mine.ack()
        other.ack()
        assert broker.stats("orders").depth == 0
    assert not os.path.exists(tmp_path / "executed")
