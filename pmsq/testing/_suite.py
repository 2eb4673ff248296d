"""The base every part of the conformance suite builds on: hooks, fixtures, helpers."""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pmsq.backends.base import Capabilities
from pmsq.broker import Broker
from pmsq.clock import ManualClock
from pmsq.delivery import Delivery
from pmsq.errors import ConfigurationError
from pmsq.queue import Queue
from pmsq.stats import QueueStats

__all__ = ["SuiteBase"]


class SuiteBase:
    """Hooks a backend overrides, and the fixtures and helpers every test uses.

    Each test gets a fresh, empty store. :meth:`make_broker` builds the broker;
    it may be called again within a test to reopen the same store, so it must
    derive the store's location from :attr:`tmp_path` or :attr:`store_id`,
    which stay fixed until the next store.
    """

    #: Capabilities the backend declares missing (checked against ``backend.capabilities``).
    missing_capabilities: ClassVar[frozenset[str]] = frozenset()
    #: Whether a store outlives its broker, so closing and reopening it is tested.
    reopens: ClassVar[bool] = True
    #: Whether claims within a tenant come exactly in priority-then-put order.
    exact_claim_order: ClassVar[bool] = True

    #: A fresh directory for the current store (yours to use).
    tmp_path: Path
    #: A name unique to the current store (for server backends: a schema or vhost name).
    store_id: str

    # -- hooks --------------------------------------------------------------------
    def make_broker(self, clock: ManualClock) -> Broker:
        """Return a broker on the current store (see the class docs), using ``clock``."""
        raise NotImplementedError("subclasses of BrokerConformance implement make_broker")

    def drop_store(self) -> None:
        """Remove the current store after its last broker closed (default: its directory)."""
        shutil.rmtree(self.tmp_path, ignore_errors=True)

    def app_transaction(self, broker: Broker, *, commit: bool) -> Any:
        """A context manager yielding an app connection inside an open transaction.

        On exit it commits (``commit=True``) or rolls back. Return ``None``
        (the default) if the backend's ``connection=`` cannot be exercised
        generically; the outbox test is then skipped.
        """
        return None

    # -- fixtures -------------------------------------------------------------------
    @pytest.fixture
    def clock(self) -> ManualClock:
        """A clock that moves only when a test advances it."""
        return ManualClock()

    @pytest.fixture
    def broker(
        self, clock: ManualClock, tmp_path: Path, request: pytest.FixtureRequest
    ) -> Iterator[Broker]:
        """A broker on a fresh store, closed (with every reopened one) after the test."""
        self._base_tmp = tmp_path
        self._base_id = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40]
        self._store_numbers = itertools.count()
        self._open_brokers: list[Broker] = []
        self.enter_new_store()
        b = self.make_broker(clock)
        self._open_brokers.append(b)
        try:
            yield b
        finally:
            for opened in self._open_brokers:
                with contextlib.suppress(Exception):
                    opened.close()
            self.drop_store()

    def enter_new_store(self) -> None:
        """Point :attr:`tmp_path` and :attr:`store_id` at a new, empty store."""
        n = next(self._store_numbers)
        self.tmp_path = self._base_tmp / f"store{n}"
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        self.store_id = f"{self._base_id}_{n}"

    # -- helpers --------------------------------------------------------------------
    def reopen(self, broker: Broker, clock: ManualClock) -> Broker:
        """Close ``broker`` and open the same store again (skips if stores do not persist)."""
        if not self.reopens:
            pytest.skip("this backend's stores do not outlive their broker")
        broker.close()
        again = self.make_broker(clock)
        self._open_brokers.append(again)
        return again

    def lacks(self, broker: Broker, capability: str, use: Callable[[], object]) -> bool:
        """If the backend lacks ``capability``, check ``use()`` raises a clear error; return True.

        Returns False (and does nothing) when the capability is supported.
        """
        caps: Capabilities = broker.backend.capabilities
        if getattr(caps, capability):
            return False
        with pytest.raises(ConfigurationError) as info:
            use()
        words = capability.replace("_", " ")
        assert words in str(info.value), (
            f"the error for a missing capability should name it ({words!r}): {info.value}"
        )
        return True

    def skip_unless(self, broker: Broker, capability: str) -> None:
        """Skip when a capability that has no way to fail loudly is missing."""
        if not getattr(broker.backend.capabilities, capability):
            pytest.skip(f"the {broker.backend.name} backend declares no {capability}")

    @staticmethod
    def claim(q: Queue, n: int = 100) -> list[Delivery]:
        """Claim up to ``n`` messages without waiting."""
        return q.get_many(n, timeout=0)

    @staticmethod
    def ids(deliveries: list[Delivery]) -> list[str]:
        """The message ids of ``deliveries``, in order."""
        return [d.message.id for d in deliveries]

    def drain_ids(self, q: Queue) -> list[str]:
        """Claim and ack one message at a time until none is claimable; their ids in order."""
        out: list[str] = []
        while batch := q.get_many(1, timeout=0):
            out.append(batch[0].message.id)
            batch[0].ack()
        return out

    @staticmethod
    def depth(broker: Broker, queue: str) -> int:
        """Messages of ``queue`` that are waiting or in flight."""
        qs: QueueStats = broker.stats(queue)
        return qs.depth
