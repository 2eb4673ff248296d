"""Shard ownership, and what this process holds of each queue.

Per-key order. Keys are spread over N shard queues by a consistent-hash
exchange. A shard is consumed by at most one process, the one owning the
shard: the process whose exclusive consumer sits on the (always empty) queue
``...:sI:owner`` (a consumer vanishes with its connection, so a crashed owner
frees its shards at once). Processes share the shards about evenly: each
registers on ``...:consumers`` and owns at most N / (registered processes).
The owner has at most one message of a shard out at a time, taken with ``basic_get``; it
acks it before taking the next. A retry of a keyed message, or a delayed
keyed put, keeps the message unacked here until it is due: it holds its shard,
so no later message of any key in that shard overtakes it.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import attrs
import pika  # type: ignore[import-untyped]

from pmsq.backends.base import Envelope
from pmsq_rabbitmq import wire
from pmsq_rabbitmq.link import Link
from pmsq_rabbitmq.settings import Names

__all__ = ["Lease", "Ownership", "Probe", "QueueState", "Shard"]

_ACQUIRE_RETRY = 2.0
_BALANCE_EVERY = 5.0
_PROBE_EVERY = 0.02


@attrs.define(eq=False)
class Lease:
    """A delivery this process holds: in flight (``token`` set) or waiting (keyed only)."""

    queue: str
    shard: int | None
    tag: int
    generation: int
    incoming: wire.Incoming
    due: float
    got_at: float = attrs.field(factory=time.monotonic)
    local_extra: int = 0
    token: str | None = None
    lease_expires: float = 0.0
    #: Monotonic time its lease was found expired (``None``: not expired). An
    #: expired delivery stays settleable by its holder until it is claimed again.
    expired_at: float | None = None

    @property
    def attempt(self) -> int:
        return self.incoming.attempt + self.local_extra

    @property
    def envelope(self) -> Envelope:
        return self.incoming.envelope


@attrs.define
class Probe:
    """Whether a queue is worth a ``basic_get``.

    A ``basic_get`` on a quorum queue is a consensus command (about 1 ms, even
    when the queue is empty); a passive declare reads the ready count for a
    third of that. So: get at once while the last get found something,
    otherwise look at the count first, at most every ``_PROBE_EVERY`` seconds.
    """

    busy: bool = True
    checked: float = 0.0

    def ready(self, link: Link, name: str) -> int:
        """How many gets are worth trying now (a lower bound of 1 while busy)."""
        if self.busy:
            return 1_000_000
        mono = time.monotonic()
        if mono - self.checked < _PROBE_EVERY:
            return 0
        self.checked = mono
        ok = link.try_spare("queue_declare", name, passive=True)
        count = 0 if ok is None else int(ok.method.message_count)
        self.busy = count > 0
        return count


@attrs.define
class Shard:
    owned: bool = False
    next_try: float = 0.0
    held: Lease | None = None
    #: The channel whose exclusive consumer on the shard's owner queue is the ownership.
    lock: Any = None
    probe: Probe = attrs.field(factory=lambda: Probe())


@attrs.define
class QueueState:
    shards: list[Shard]
    last_claim: float = attrs.field(factory=time.monotonic)
    cursor: int = 0
    share: int = 0
    balanced_at: float = 0.0
    member: bool = False
    probe: Probe = attrs.field(factory=Probe)


class Ownership:
    """Takes and gives up shards for this process (callers hold the consumer link's lock)."""

    def __init__(self, con: Link, names: Names) -> None:
        self._con = con
        self._names = names
        self._rng = random.Random()

    def acquire(self, queue: str, i: int, sh: Shard, state: QueueState) -> bool:
        mono = time.monotonic()
        if mono < sh.next_try or sum(s.owned for s in state.shards) >= state.share:
            return False
        name = self._names.shard_lock(queue, i)
        ok = self._con.channel().queue_declare(
            name, durable=False, arguments={"x-queue-type": "classic"}
        )
        if ok.method.consumer_count == 0:
            # Ownership is an exclusive consumer on the (always empty) owner queue,
            # on a channel of its own: losing a race closes only that channel.
            lock = self._con.new_channel()
            try:
                lock.basic_consume(name, lambda *_: None, auto_ack=True, exclusive=True)
            except pika.exceptions.ChannelClosedByBroker:
                pass
            else:
                sh.lock, sh.owned = lock, True
        if not sh.owned:
            sh.next_try = mono + _ACQUIRE_RETRY * (1 + self._rng.random())
        return sh.owned

    def give_up(self, queue: str, i: int, sh: Shard, inflight: dict[str, Lease]) -> None:
        if sh.held is not None:
            if sh.held.token is not None and sh.held.expired_at is None:
                return  # in flight: keep the shard until it is settled
            if sh.held.token is not None:
                del inflight[sh.held.token]
            # Waiting for its retry time: return it to the head of the shard for
            # the next owner (the broker counts the return as a delivery).
            self._con.channel().basic_nack(sh.held.tag, requeue=True)
            sh.held = None
        lock, sh.lock = sh.lock, None
        if lock is not None and lock.is_open:
            lock.close()
        sh.owned = False
        sh.next_try = time.monotonic() + _ACQUIRE_RETRY

    def balance(self, queue: str, state: QueueState, inflight: dict[str, Lease]) -> None:
        """Own about a fair share of the shards: N / (processes claiming from the queue)."""
        mono = time.monotonic()
        if state.member and mono - state.balanced_at < _BALANCE_EVERY:
            return
        state.balanced_at = mono
        members = f"{self._names.main(queue)}:consumers"
        ch = self._con.channel()
        ok = ch.queue_declare(members, durable=False, arguments={"x-queue-type": "classic"})
        if not state.member:
            # An empty queue whose consumer count is the number of claiming processes.
            ch.basic_consume(members, lambda *_: None, auto_ack=True)
            state.member = True
            count = ok.method.consumer_count + 1
        else:
            count = max(ok.method.consumer_count, 1)
        state.share = math.ceil(len(state.shards) / count)
        owned = [i for i, sh in enumerate(state.shards) if sh.owned]
        for i in owned[state.share :]:
            self.give_up(queue, i, state.shards[i], inflight)
