"""``RabbitMQBackend``: pmsq's queues on a RabbitMQ 3.10+ server.

Connections. Three ``Link`` objects (connection + channels + lock): *pub*
for puts (publisher confirms), *con* for claims and settlement (leases live
on its channel), *admin* for the catalogue and dead letters. Locks are only
ever taken in the order con → admin → pub, so threads cannot deadlock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

from pmsq.backends.base import (
    Backend,
    Capabilities,
    Claimed,
    Envelope,
    Receipt,
    Settlement,
    StoredDeadLetter,
)
from pmsq.backends.families import Settings as StoredSettings
from pmsq.config import QueueConfig
from pmsq.errors import ConfigurationError
from pmsq.stats import QueueStats, Stats
from pmsq_rabbitmq import admin, topology, wire
from pmsq_rabbitmq.consumer import Consumer
from pmsq_rabbitmq.link import AMQP_ERRORS, Link, Publish
from pmsq_rabbitmq.meta import MetaStore, Snapshot
from pmsq_rabbitmq.metrics import Metrics
from pmsq_rabbitmq.routing import MAX_KEYED_HOLD, QueueInfo, route
from pmsq_rabbitmq.settings import Names, Settings, parse_url

__all__ = ["CAPABILITIES", "RabbitMQBackend"]

#: What RabbitMQ 3.10 can and cannot do for pmsq (see docs/rabbitmq.md).
CAPABILITIES = Capabilities(
    per_key_fifo=False,
    priorities=False,
    delays=True,
    dedup=False,
    coalesce=False,
    rate_limits=False,
    tenant_fairness=False,
    exact_stats=False,
)

_NAME = "RabbitMQ"
_log = logging.getLogger(__name__)


def _refuse(what: str, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"the {_NAME} backend does not support {what}: {why}; see docs/rabbitmq.md for the "
        "differences from the SQLite backend"
    )


class RabbitMQBackend(Backend, StoredSettings):
    """A pmsq store on a RabbitMQ server (``amqp://`` or ``amqps://`` URL).

    Args:
        url: ``amqp://user:password@host:port/vhost`` plus pmsq's own query
            options (``prefix``, ``shards``, ``delay_steps``, ``meta_ttl``,
            ``idle_release``; see ``pmsq_rabbitmq.settings``).
        durability: Accepted for compatibility; every message is persistent in a
            quorum queue and confirmed only once the broker has it on disk.
        busy_timeout: Seconds to wait for a publisher confirm or a blocked connection.

    Raises:
        ConfigurationError: a malformed URL.
        BackendUnavailable: the server cannot be reached.
    """

    capabilities = CAPABILITIES
    name = _NAME
    refusals = {
        "transactional_put": "RabbitMQ has no transaction an app's database can join",
        "once": "RabbitMQ has no transaction an app's database can join",
        "history": "RabbitMQ keeps no message journal",
        "presence": (
            "RabbitMQ keeps no table of worker processes; QueueStats.consumers counts the "
            "processes claiming from each queue (known to RabbitMQ by their connections)"
        ),
        "transfer": "AMQP can only read a message by taking it",
        "inspect": (
            "AMQP can only read a message by taking it, which counts a delivery on a quorum "
            "queue; use the RabbitMQ management UI's 'Get messages' to inspect a queue"
        ),
        "control": (
            "AMQP cannot remove or move a message waiting in a queue (cancel, reschedule), "
            "stores no pause that every consumer's claims would honour, and its message TTL "
            "drops or dead-letters an expired message without pmsq's 'expired' dead letter; "
            "handle cancellations in the handler, or use the SQLite or PostgreSQL backend"
        ),
    }

    def __init__(
        self,
        url: str,
        *,
        durability: str = "full",
        busy_timeout: float = 30.0,
        **_ignored: Any,
    ) -> None:
        self.url = url
        self.settings: Settings = parse_url(url, busy_timeout=busy_timeout)
        self.names = Names(self.settings.prefix)
        timeout = float(busy_timeout) or 30.0
        self._pub = Link(self.settings, "pub", confirm_timeout=timeout)
        self._con = Link(self.settings, "con", confirm_timeout=timeout)
        self._admin = Link(self.settings, "admin", confirm_timeout=timeout)
        self._meta = MetaStore(self._admin, self.names, self.settings.meta_ttl)
        self._metrics = Metrics()
        self._consumer = Consumer(
            self.settings, self.names, self._con, self._pub, self._info, self._metrics
        )
        self._stop = threading.Event()
        self._closed = False
        self._meta.read(fresh=True)  # connects: a wrong URL fails here, not later
        self._timer = threading.Thread(
            target=self._housekeeping, name="pmsq-rabbitmq-housekeeping", daemon=True
        )
        self._timer.start()

    def __repr__(self) -> str:
        return f"<RabbitMQBackend {self.settings.display} prefix={self.settings.prefix!r}>"

    def _housekeeping(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self._consumer.housekeeping()
            except Exception:  # the server is down: the next call reports it
                _log.debug("housekeeping failed", exc_info=True)

    # -- the catalogue ------------------------------------------------------------------
    def _check_config(self, config: QueueConfig) -> None:
        if config.rate_limit is not None:
            self.capabilities.require(self.name, "rate_limits")
        if config.on_key_failure == "block":
            raise _refuse(
                'on_key_failure="block"',
                "a blocked key would block its whole shard; use the default 'continue'",
            )
        if config.max_depth is not None or config.tenant_quota is not None:
            raise _refuse(
                "max_depth / tenant_quota",
                "RabbitMQ cannot count a queue's shards, delay steps and in-flight messages "
                "together atomically",
            )

    def _create(self, snap: Snapshot, config: QueueConfig) -> None:
        """Record ``config``; on first declaration also create the queue's objects."""
        entry = snap["queues"].get(config.name)
        if entry is None:
            entry = {
                "shards": self.settings.shards,
                "delivery_limit": config.max_attempts,
                "steps": list(self.settings.delay_steps),
            }
            topology.declare(
                self._admin.channel(),
                self.names,
                config.name,
                shards=entry["shards"],
                delivery_limit=entry["delivery_limit"],
                steps=tuple(entry["steps"]),
            )
        entry["config"] = config.to_dict()
        snap["queues"][config.name] = entry

    def declare_queue(self, config: QueueConfig) -> None:
        self._check_config(config)
        self._meta.update(lambda snap: self._create(snap, config))

    def _info(self, name: str) -> QueueInfo:
        """A queue's configuration and shape, declaring it with defaults if it is new."""
        entry = self._meta.read()["queues"].get(name)
        if entry is None:
            entry = self._meta.read(fresh=True)["queues"].get(name)
        if entry is None:

            def create(snap: Snapshot) -> None:
                if name not in snap["queues"]:
                    self._create(snap, QueueConfig(name=name))

            self._meta.update(create)
            entry = self._meta.read()["queues"][name]
        return QueueInfo(
            config=QueueConfig.from_dict(entry["config"]),
            shards=int(entry["shards"]),
            delivery_limit=int(entry["delivery_limit"]),
            steps=tuple(float(s) for s in entry["steps"]),
        )

    def queue_config(self, name: str) -> QueueConfig | None:
        entry = self._meta.read()["queues"].get(name)
        if entry is None:
            entry = self._meta.read(fresh=True)["queues"].get(name)
        return None if entry is None else QueueConfig.from_dict(entry["config"])

    def list_queues(self) -> list[QueueConfig]:
        queues = self._meta.read(fresh=True)["queues"]
        return [QueueConfig.from_dict(queues[n]["config"]) for n in sorted(queues)]

    def bind(self, pattern: str, queue: str) -> None:
        def change(snap: Snapshot) -> None:
            if queue not in snap["queues"]:
                self._create(snap, QueueConfig(name=queue))
            if [pattern, queue] not in snap["bindings"]:
                snap["bindings"].append([pattern, queue])
                snap["bindings"].sort()

        self._meta.update(change)

    def unbind(self, pattern: str, queue: str) -> bool:
        def change(snap: Snapshot) -> bool:
            if [pattern, queue] in snap["bindings"]:
                snap["bindings"].remove([pattern, queue])
                return True
            return False

        return self._meta.update(change)

    def bindings(self) -> list[tuple[str, str]]:
        return [(p, q) for p, q in self._meta.read()["bindings"]]

    def get_meta(self, key: str) -> str | None:
        value = self._meta.read(fresh=True)["settings"].get(key)
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str | None) -> None:
        def change(snap: Snapshot) -> None:
            if value is None:
                snap["settings"].pop(key, None)
            else:
                snap["settings"][key] = value

        self._meta.update(change)

    # -- puts ---------------------------------------------------------------------------
    def put_many(self, envelopes: Sequence[Envelope], *, now: float) -> list[str]:
        """Publish every envelope and wait for all their confirms (one batch).

        Not atomic: RabbitMQ has no transaction spanning queues (and none at all
        for quorum queues), so if the batch fails part of it may be stored.
        Fan-out copies of one ``publish`` are confirmed individually.

        Raises:
            ConfigurationError: an option RabbitMQ cannot honour.
            Unroutable: a queue's objects are missing on the server.
            OutcomeUnknown: the connection failed before every confirm arrived.
            BackendUnavailable: the server cannot be reached (nothing was sent).
        """
        items: list[Publish] = []
        for env in envelopes:
            if env.priority:
                self.capabilities.require(self.name, "priorities")
            if env.dedup_id is not None:
                self.capabilities.require(self.name, "dedup")
            if env.coalesce:
                self.capabilities.require(self.name, "coalesce")
            if env.key is not None and env.available_at - now > MAX_KEYED_HOLD:
                raise _refuse(
                    f"delays over {MAX_KEYED_HOLD:g}s on keyed messages",
                    "a delayed keyed message is held by the consumer of its shard, and the "
                    "broker's consumer_timeout bounds how long",
                )
            info = self._info(env.queue)
            exchange, key = route(self.names, env, info, now)
            items.append((exchange, key, wire.properties(env, spent=0), env.data))
        with self._pub.lock:
            self._pub.publish(items)
        for name in {env.queue for env in envelopes}:
            self._consumer.touch(name)
        return [env.id for env in envelopes]

    # -- claims and settlement ----------------------------------------------------------
    def claim(
        self,
        queue: str,
        n: int,
        *,
        now: float,
        tenant: str | None = None,
        consumer: str | None = None,
    ) -> list[Claimed]:
        if tenant is not None:
            raise _refuse(
                "claiming for one tenant",
                "a queue's messages of all tenants share one RabbitMQ queue, and skipping "
                "another tenant's message would count a delivery against it",
            )
        if n <= 0:
            return []
        return self._consumer.claim(queue, n, now)

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        """Apply each outcome on its delivery's channel.

        Not atomic: AMQP has no transaction over acks, republished retries
        and dead letters, so after an error some of the batch may be settled.
        """
        done = [False] * len(settlements)
        acks = [i for i, s in enumerate(settlements) if s.action == "ack"]
        if acks:
            oks = self._consumer.ack(
                [settlements[i].receipt for i in acks], [settlements[i].duration_ms for i in acks]
            )
            for i, ok in zip(acks, oks, strict=True):
                done[i] = ok
        releases = [i for i, s in enumerate(settlements) if s.action == "release"]
        if releases:
            oks = self._consumer.release([settlements[i].receipt for i in releases], now)
            for i, ok in zip(releases, oks, strict=True):
                done[i] = ok
        for i, s in enumerate(settlements):
            if s.action == "retry":
                done[i] = self._consumer.retry(
                    s.receipt, now, s.available_at, failed=s.error_type is not None
                )
            elif s.action == "dead":
                info = wire.DeadInfo(
                    reason=s.reason,
                    error_type=s.error_type,
                    traceback=s.error,
                    attempts=0,
                    dead_at=now,
                )
                done[i] = self._consumer.dead_letter(s.receipt, now, info)
        return done

    def extend(self, receipt: Receipt, seconds: float, *, now: float) -> float | None:
        return self._consumer.extend(receipt, seconds, now)

    # -- operators ------------------------------------------------------------------------
    def _known(self, queue: str) -> QueueInfo | None:
        if queue not in self._meta.read(fresh=True)["queues"]:
            return None
        return self._info(queue)

    def dead_letters(
        self,
        queue: str,
        *,
        tenant: str | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredDeadLetter]:
        info = self._known(queue)
        if info is None:
            return []
        with self._admin.session():
            return admin.dead_letters(
                self._admin, self.names, queue, info, tenant=tenant, ids=ids, limit=limit
            )

    def redrive(
        self, queue: str, ids: Sequence[str] | None, *, now: float, tenant: str | None = None
    ) -> int:
        info = self._known(queue)
        if info is None:
            return 0
        with self._admin.session():
            moved = admin.redrive(self._admin, self.names, queue, info, ids, now=now, tenant=tenant)
        self._consumer.touch(queue)
        return moved

    def purge(self, queue: str, ids: Sequence[str] | None, *, tenant: str | None = None) -> int:
        if self._known(queue) is None:
            return 0
        with self._admin.session():
            return admin.purge(self._admin, self.names, queue, ids, tenant=tenant)

    def stats(self, queue: str | None = None, *, now: float, tenant: str | None = None) -> Stats:
        """Depths from the broker's counts; outcomes as seen by this process.

        ``in_flight`` counts this process's leases only (AMQP does not report
        other consumers' unacked messages) and ``oldest_age`` is unknown.
        ``consumers`` is the number of processes claiming from the queue: each
        one holds a consumer on the queue's member queue while its connection
        lives (see ``shards.Ownership.balance``), so a killed process drops out
        as soon as RabbitMQ sees its connection close.
        """
        if tenant is not None:
            raise _refuse(
                "per-tenant statistics", "RabbitMQ counts a queue's messages, not its tenants'"
            )
        snap = self._meta.read(fresh=True)
        names = sorted(snap["queues"]) if queue is None else [queue]
        out: dict[str, QueueStats] = {}
        for name in names:
            if name not in snap["queues"]:
                out[name] = QueueStats(name=name)
                continue
            info = self._info(name)
            flying, waiting = self._consumer.in_flight(name)
            with self._admin.session():
                ready = admin.count(self._admin, self.names.main(name)) + sum(
                    admin.count(self._admin, self.names.shard(name, i)) for i in range(info.shards)
                )
                delayed = sum(
                    admin.count(self._admin, self.names.delay(name, s)) for s in info.steps
                )
                dead = admin.count(self._admin, self.names.dead(name))
                claimers = admin.consumers(self._admin, f"{self.names.main(name)}:consumers")
            figures: dict[str, Any] = self._metrics.figures(name)
            out[name] = QueueStats(
                name=name,
                ready=ready,
                delayed=delayed + waiting,
                in_flight=flying,
                dead=dead,
                consumers=claimers,
                **figures,
            )
        return Stats(queues=out, bindings=tuple((p, q) for p, q in snap["bindings"]))

    def check(self) -> list[str]:
        """Report queues recorded in the catalogue whose RabbitMQ objects are missing."""
        problems: list[str] = []
        snap = self._meta.read(fresh=True)
        with self._admin.session():
            for name, entry in sorted(snap["queues"].items()):
                for kind, obj in topology.object_names(
                    self.names, name, int(entry["shards"]), tuple(entry["steps"])
                ):
                    method = "queue_declare" if kind == "queue" else "exchange_declare"
                    if self._admin.try_spare(method, obj, passive=True) is None:
                        problems.append(
                            f"queue {name!r}: RabbitMQ {kind} {obj!r} is missing; messages "
                            "routed to it are refused (Unroutable)"
                        )
        return problems

    def delete_all(self) -> None:
        """Delete every queue, exchange and message of this store (``prefix``). For tests."""
        snap = self._meta.read(fresh=True)
        with self._admin.session():
            for name, entry in snap["queues"].items():
                topology.delete(
                    self._admin, self.names, name, int(entry["shards"]), tuple(entry["steps"])
                )
                extra = [f"{self.names.main(name)}:consumers"]
                extra += [self.names.shard_lock(name, i) for i in range(int(entry["shards"]))]
                for obj in extra:
                    with contextlib.suppress(*AMQP_ERRORS):
                        self._admin.channel().queue_delete(obj)
            ch = self._admin.channel()
            with contextlib.suppress(*AMQP_ERRORS):
                ch.queue_delete(self.names.meta)
                ch.queue_delete(self.names.meta_init)
        self._meta.invalidate()

    def close(self) -> None:
        """Close the connections: messages held by this process go back to their queues."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for link in (self._con, self._admin, self._pub):
            link.close()
