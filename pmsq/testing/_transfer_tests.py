"""Conformance: moving a store (``pmsq migrate``) through ``export_messages`` / ``import_messages``.

The pair belongs to the optional ``Transfer`` family. A backend without it
must say so with ``ConfigurationError`` naming the capability; a backend
with it must export everything a store holds in put order (each key in
delivery order), and import an export so that exporting again gives the
same records, skipping ids it already holds.
The SQLite backend (in memory) is the reference the export is checked
against, so stores of two backends can exchange messages.
"""

from __future__ import annotations

import pytest

from pmsq.backends.base import Backend, StoredMessage
from pmsq.backends.families import Transfer
from pmsq.broker import Broker, connect
from pmsq.clock import ManualClock
from pmsq.errors import ConfigurationError
from pmsq.testing._suite import SuiteBase

__all__ = ["TransferTests"]


def export_all(backend: Backend, queue: str, limit: int = 3) -> list[StoredMessage]:
    """Every stored message of ``queue``, read in pages of ``limit``."""
    out: list[StoredMessage] = []
    cursor: str | None = None
    while True:
        page, cursor = Transfer.of(backend).export_messages(queue, after=cursor, limit=limit)
        assert len(page) <= limit
        out.extend(page)
        if cursor is None:
            return out


class TransferTests(SuiteBase):
    """Export and import keep ids, key order, attempts, delays and dead letters."""

    def _supports_transfer(self, broker: Broker) -> bool:
        backend = broker.backend
        if isinstance(backend, Transfer):
            return True
        with pytest.raises(ConfigurationError, match=r"transfer.*export"):
            Transfer.of(backend, "export_messages").export_messages("q")
        with pytest.raises(ConfigurationError, match=r"transfer.*import"):
            Transfer.of(backend, "import_messages").import_messages([], now=0.0)
        return False

    def test_export_import_round_trip(self, broker: Broker, clock: ManualClock) -> None:
        if not self._supports_transfer(broker):
            return
        q = broker.declare_queue("q", max_attempts=3, on_key_failure="block")
        ids = [
            q.put({"n": i}, key=f"k{i % 2}", tenant=("acme", None)[i % 2], headers={"i": i})
            for i in range(6)
        ]
        ids.append(q.put({"loose": True}))
        # k0/acme's head: one attempt spent, waiting again; k1's head: dead, blocking k1.
        for d in self.claim(q):
            if d.message.id == ids[0]:
                d.retry(delay=0)
            elif d.message.id == ids[1]:
                d.dead_letter("broken")
            else:
                d.release()
        exported = export_all(broker.backend, "q")
        assert [m.envelope.id for m in exported if m.envelope.key == "k0"] == ids[0:6:2]
        assert [m.envelope.id for m in exported if m.envelope.key == "k1"] == ids[1:6:2]
        by_id = {m.envelope.id: m for m in exported}
        assert set(by_id) == set(ids)
        assert (by_id[ids[0]].state, by_id[ids[0]].attempts) == ("pending", 1)
        assert (by_id[ids[1]].state, by_id[ids[1]].dead_reason) == ("dead", "broken")
        assert by_id[ids[1]].holds_key
        assert by_id[ids[2]].envelope.headers is not None

        # The reference store reads the export back identically ...
        with connect("sqlite:///:memory:", clock=clock) as ref:
            ref.backend.declare_queue(broker.backend.queue_config("q"))  # type: ignore[arg-type]
            assert Transfer.of(ref.backend).import_messages(exported, now=clock.time()) == len(
                exported
            )
            assert export_all(ref.backend, "q") == exported
            from_reference = export_all(ref.backend, "q", limit=100)

        # ... and a fresh store of this backend takes it in, once.
        self.enter_new_store()
        other = self.make_broker(clock)
        self._open_brokers.append(other)
        other.declare_queue("q", max_attempts=3, on_key_failure="block")
        assert Transfer.of(other.backend).import_messages(from_reference[:4], now=clock.time()) == 4
        assert Transfer.of(other.backend).import_messages(from_reference, now=clock.time()) == 3
        assert Transfer.of(other.backend).import_messages(from_reference, now=clock.time()) == 0
        assert export_all(other.backend, "q") == exported
        # Delivery resumes where it stood: k1 is blocked by its dead letter.
        got = self.drain_ids(other.queue("q"))
        assert sorted(got) == sorted([ids[0], ids[2], ids[4], ids[6]])
        assert [i for i in got if i in ids[0:6:2]] == ids[0:6:2]
