"""Queue configurations, bindings and settings, shared by every process.

AMQP 0-9-1 cannot list queues or bindings, nor read a queue's arguments, so
pmsq keeps one JSON snapshot of its catalogue as the only message of a
durable queue ``PREFIX:meta`` (``x-max-length=1``, ``drop-head``).

- **Read**: ``basic_get`` the snapshot, then ``nack`` it back (a classic queue
  puts it back in place). Processes cache it for ``meta_ttl`` seconds.
- **Write**: ``basic_get`` it and keep it unacked (holding it is the lock: a
  concurrent reader or writer finds the queue empty and retries), publish the
  new snapshot with a confirm, then ack the old one. If the writer dies
  between the two, the old snapshot returns to the head and ``drop-head``
  drops it: the newer one wins.
- **First use**: an exclusive queue serves as a mutex so exactly one process
  publishes the first, empty snapshot; a message in the marker queue
  ``PREFIX:meta:initialised`` then records that the store exists (an empty
  catalogue queue after that means "held by someone", never "new").
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pika  # type: ignore[import-untyped]

from pmsq.errors import StorageError
from pmsq.ids import new_message_id
from pmsq_rabbitmq.link import AMQP_ERRORS, Link, wait_briefly
from pmsq_rabbitmq.settings import Names

__all__ = ["MetaStore", "empty_snapshot"]

T = TypeVar("T")
Snapshot = dict[str, Any]
_HELD_TIMEOUT = 30.0


def empty_snapshot() -> Snapshot:
    """The catalogue of a new store."""
    return {"version": 0, "queues": {}, "bindings": [], "settings": {}}


class MetaStore:
    """The shared catalogue, read through a short-lived cache."""

    def __init__(self, link: Link, names: Names, ttl: float) -> None:
        self._link = link
        self._names = names
        self._ttl = ttl
        self._cache: Snapshot | None = None
        self._cached_at = 0.0
        self._initialised = False
        self._declared = False

    def read(self, *, fresh: bool = False) -> Snapshot:
        """The catalogue: the cached copy (never mutate it) unless ``fresh`` or stale."""
        with self._link.session():
            if (
                not fresh
                and self._cache is not None
                and time.monotonic() - self._cached_at < self._ttl
            ):
                return self._cache
            tag, snap = self._take()
            try:
                self._link.channel().basic_nack(tag, requeue=True)
            except AMQP_ERRORS:
                self._link.broken()  # the broker requeues it when the channel closes
            self._remember(snap)
            return snap

    def update(self, change: Callable[[Snapshot], T]) -> T:
        """Apply ``change`` to a private copy of the catalogue and store it atomically.

        ``change`` runs while this process holds the catalogue; it may declare
        RabbitMQ objects on the link's channel but must not read the catalogue.
        """
        with self._link.session():
            tag, snap = self._take()
            ch = self._link.channel()
            new = copy.deepcopy(snap)
            try:
                result = change(new)
                if new != snap:
                    new["version"] = int(snap.get("version", 0)) + 1
                    self._publish(new)
            except BaseException:
                try:
                    ch.basic_nack(tag, requeue=True)
                except AMQP_ERRORS:
                    self._link.broken()
                raise
            try:
                ch.basic_ack(tag)
                self._link.sync()
            except AMQP_ERRORS:
                # The old snapshot goes back to the head; drop-head discards it.
                self._link.broken()
            self._remember(new)
            return result

    def invalidate(self) -> None:
        """Forget the cached copy (after a local change made elsewhere)."""
        self._cache = None

    # -- internals ---------------------------------------------------------------
    def _remember(self, snap: Snapshot) -> None:
        self._cache = snap
        self._cached_at = time.monotonic()

    def _publish(self, snap: Snapshot) -> None:
        body = json.dumps(snap, separators=(",", ":")).encode()
        props = pika.BasicProperties(
            message_id=new_message_id(), delivery_mode=2, content_type="application/json"
        )
        self._link.publish([("", self._names.meta, props, body)])

    def declare(self) -> None:
        """Declare the catalogue queue (idempotent)."""
        self._link.channel().queue_declare(
            self._names.meta,
            durable=True,
            arguments={"x-queue-type": "classic", "x-max-length": 1, "x-overflow": "drop-head"},
        )

    def _take(self) -> tuple[int, Snapshot]:
        """Get the snapshot message unacked; wait while another process holds it."""
        deadline = time.monotonic() + _HELD_TIMEOUT
        attempt = 0
        while True:
            ch = self._link.channel()
            if not self._declared:
                self.declare()
                self._declared = True
            try:
                method, _props, body = ch.basic_get(self._names.meta, auto_ack=False)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                self.declare()
                continue
            if method is not None:
                try:
                    snap = json.loads(body)
                except ValueError as exc:
                    ch.basic_nack(method.delivery_tag, requeue=True)
                    raise StorageError(
                        f"the pmsq catalogue in queue {self._names.meta!r} is not valid JSON: {exc}"
                    ) from exc
                return method.delivery_tag, snap
            if not self._initialised:
                self._initialised = self._exists() or self._initialise()
                if self._initialised:
                    continue
            if time.monotonic() > deadline:
                raise StorageError(
                    f"the pmsq catalogue queue {self._names.meta!r} stayed empty for "
                    f"{_HELD_TIMEOUT:g}s: another process holds it and does not answer; "
                    "close that process, or check the queue in the management UI"
                )
            wait_briefly(attempt)
            attempt += 1

    def _exists(self) -> bool:
        ok = self._link.channel().queue_declare(
            self._names.meta_init, durable=True, arguments={"x-queue-type": "classic"}
        )
        return int(ok.method.message_count) > 0

    def _initialise(self) -> bool:
        """Publish the first snapshot unless another process did; True when the store exists."""
        mutex = self._link.try_spare("queue_declare", self._names.meta_mutex, exclusive=True)
        if mutex is None:
            return False  # another process is initialising right now
        try:
            if not self._exists():
                self.declare()
                self._publish(empty_snapshot())
                marker = pika.BasicProperties(message_id=new_message_id(), delivery_mode=2)
                self._link.publish([("", self._names.meta_init, marker, b"initialised")])
        finally:
            self._link.try_spare("queue_delete", self._names.meta_mutex)
        return True
