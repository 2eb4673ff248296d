"""``Runtime``: what one Broker's queue handles, deliveries and workers share.

The store connection, the codec, the clock and random source, the payload
limit, the put hooks, a short cache of queue configurations and the local
wake-ups. The Broker creates one and hands it to every handle it makes, so
the handles never reach back into the Broker (which imports them).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from pmsq.backends.base import Backend, Claimed, Envelope
from pmsq.backends.families import TransactionalPut
from pmsq.backends.presence import with_presence
from pmsq.clock import Clock
from pmsq.codec import Codec
from pmsq.config import QueueConfig
from pmsq.connections import app_connection
from pmsq.stats import QueueStats, Stats
from pmsq.wakeups import WakeUps

__all__ = ["PutHook", "Runtime"]

#: A put hook: ``hook(queue, message_id, topic, headers)``; it may add to ``headers``.
PutHook = Callable[[str, str, "str | None", "dict[str, Any]"], None]

#: Seconds a queue's configuration is reused before it is read from the store
#: again: another process may have re-declared the queue.
CONFIG_TTL = 1.0


class Runtime:
    """The shared state of one connection to a store. Safe to share between threads.

    Args:
        backend: The open store.
        clock: Time source.
        codec: Payload codec.
        rng: Random source (backoff jitter).
        max_payload_bytes: Largest encoded payload a put accepts.
        poll_interval: Longest an idle consumer waits before looking at the store.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock,
        codec: Codec,
        rng: random.Random,
        max_payload_bytes: int,
        poll_interval: float,
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.codec = codec
        self.rng = rng
        self.max_payload_bytes = max_payload_bytes
        self.put_hooks: list[PutHook] = []
        self.wakeups = WakeUps(poll_interval, backend.wait_for_change)
        self._configs: dict[str, tuple[float, QueueConfig]] = {}
        self._known_queues: set[str] = set()

    def require(self, capability: str) -> None:
        """Raise ``ConfigurationError`` unless the backend has ``capability``."""
        self.backend.capabilities.require(self.backend.name, capability)

    # -- queues ------------------------------------------------------------------
    def queue_config(self, name: str) -> QueueConfig:
        """A queue's configuration, cached for about a second."""
        hit = self._configs.get(name)
        now = time.monotonic()
        if hit is not None and now - hit[0] < CONFIG_TTL:
            return hit[1]
        config = self.backend.queue_config(name) or QueueConfig(name=name)
        self._configs[name] = (now, config)
        return config

    def declared(self, config: QueueConfig) -> None:
        """Remember a configuration just stored by ``declare_queue``."""
        self._configs[config.name] = (time.monotonic(), config)
        self._known_queues.add(config.name)

    def ensure_queue(self, name: str) -> None:
        """Create queue ``name`` with default options unless it exists (``name`` is valid)."""
        if name not in self._known_queues:
            if self.backend.queue_config(name) is None:
                # Insert-if-absent: another process may have declared it since the read.
                self.backend.ensure_queue(QueueConfig(name=name))
            self._known_queues.add(name)

    def known(self, name: str) -> None:
        """Note that queue ``name`` exists (a binding created it)."""
        self._known_queues.add(name)

    # -- messages ------------------------------------------------------------------
    def store(self, envs: Sequence[Envelope], *, connection: Any = None) -> list[str]:
        """Put ``envs`` in one transaction and wake this process's consumers of their queues.

        With ``connection`` the app commits later; its consumers are not woken
        early and find the messages by polling once the app has committed.
        """
        if connection is not None:
            outbox = TransactionalPut.of(self.backend, "put(connection=)")
            with app_connection(connection) as raw:
                return outbox.put_in_transaction(envs, now=self.clock.time(), connection=raw)
        ids = self.backend.put_many(envs, now=self.clock.time())
        for q in {e.queue for e in envs}:
            self.wakeups.notify(q)
        return ids

    def claim(
        self, queue: str, n: int, *, tenant: str | None = None, consumer: str | None = None
    ) -> list[Claimed]:
        """Lease up to ``n`` ready messages of ``queue``; never waits."""
        return self.backend.claim(queue, n, now=self.clock.time(), tenant=tenant, consumer=consumer)

    def queue_stats(self, queue: str, tenant: str | None = None) -> QueueStats:
        """One queue's figures (one tenant's, with ``tenant``)."""
        now = self.clock.time()
        snap = with_presence(self.backend, self.backend.stats(queue, now=now, tenant=tenant), now)
        return snap.queues.get(queue) or QueueStats(name=queue)

    def stats(self, tenant: str | None = None) -> Stats:
        """Every queue's figures (one tenant's, with ``tenant``)."""
        now = self.clock.time()
        if tenant is None:
            snap = self.backend.stats(None, now=now)
        else:
            snap = self.backend.stats(None, now=now, tenant=tenant)
        # Live consumers are counted here, once for every backend with heartbeats.
        return with_presence(self.backend, snap, now)

    def close(self) -> None:
        """Close the store and wake every local waiter so it sees the broker closed."""
        self.wakeups.close()  # stops the store watcher before the store goes
        self.backend.close()
        self.wakeups.kick()
