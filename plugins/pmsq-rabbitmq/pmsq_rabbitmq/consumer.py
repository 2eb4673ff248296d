"""Claims and settlement: the messages this process holds.

Leases. A claimed message is an unacked ``basic_get`` delivery on this
process's consumer channel; its lease is that channel. pmsq adds the
queue's lease on top: a claim (in any thread of this process) finds
deliveries whose lease ran out by the broker clock's ``now``; the next claim
of that queue here hands them out again, one attempt later (past
``max_attempts`` they are dead-lettered instead). Until then the late holder
may still settle its delivery, as on SQLite. Other processes cannot see a
leased message until this process's channel closes (crash, ``close()``),
the broker's ``consumer_timeout`` closes it, or it stayed expired and
unclaimed here for ``idle_release`` seconds (then it is returned to the
queue). A stale receipt (claimed again, or the channel it came from is
gone) settles nothing: ``False``.

Per-key order: see ``pmsq_rabbitmq.shards``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from pmsq.backends.base import Claimed, Envelope, Receipt
from pmsq.errors import BackendUnavailable
from pmsq.ids import new_message_id
from pmsq_rabbitmq import wire
from pmsq_rabbitmq.link import AMQP_ERRORS, Link, Publish
from pmsq_rabbitmq.metrics import Metrics
from pmsq_rabbitmq.routing import DUE_SLACK, MAX_KEYED_HOLD, QueueInfo, route
from pmsq_rabbitmq.settings import Names, Settings
from pmsq_rabbitmq.shards import Lease, Ownership, QueueState, Shard

__all__ = ["Consumer"]

# A held (waiting) keyed delivery is returned and taken again before the
# broker's consumer_timeout (30 min by default) could fire on it.
_REFRESH_HELD_AFTER = 600.0
_EXPIRED = "pmsq.LeaseExpired"


class Consumer:
    """Everything done on the consumer connection, under its lock."""

    def __init__(
        self,
        settings: Settings,
        names: Names,
        con: Link,
        pub: Link,
        info: Callable[[str], QueueInfo],
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._names = names
        self._con = con
        self._pub = pub
        self._info = info
        self._metrics = metrics
        self._inflight: dict[str, Lease] = {}
        self._queues: dict[str, QueueState] = {}
        self._connection_seen = -1
        self._owners = Ownership(con, names)

    # -- bookkeeping ---------------------------------------------------------------
    def _channel(self) -> Any:
        ch = self._con.channel()
        if self._con.connection_id != self._connection_seen:
            # A new connection: shard ownership and every delivery went with the old one.
            self._connection_seen = self._con.connection_id
            self._inflight.clear()
            self._queues.clear()
        gen = self._con.generation
        for token, lease in list(self._inflight.items()):
            if lease.generation != gen:
                del self._inflight[token]
        for state in self._queues.values():
            for sh in state.shards:
                if sh.held is not None and sh.held.generation != gen:
                    sh.held = None  # the broker returned it to the head of the shard
        return ch

    def _live(self, receipt: Receipt) -> Lease | None:
        lease = self._inflight.get(receipt.token)
        if lease is None or lease.generation != self._con.generation or not self._con.alive:
            return None
        return lease

    def _state(self, queue: str, shards: int) -> QueueState:
        state = self._queues.get(queue)
        if state is None or len(state.shards) != shards:
            state = self._queues[queue] = QueueState(shards=[Shard() for _ in range(shards)])
        return state

    def touch(self, queue: str) -> None:
        """This process just put into ``queue``: the next claim must look, not trust a probe.

        Lock-free on purpose (a put must not wait behind a claim); a lost race
        only delays a claim by one probe interval.
        """
        state = self._queues.get(queue)
        if state is not None:
            state.probe.busy = True
            for sh in state.shards:
                sh.probe.busy = True

    def in_flight(self, queue: str) -> tuple[int, int]:
        """``(in flight, waiting here)`` counts of ``queue`` in this process."""
        with self._con.lock:
            flying = sum(1 for lease in self._inflight.values() if lease.queue == queue)
            state = self._queues.get(queue)
            waiting = 0
            if state is not None:
                waiting = sum(
                    1 for sh in state.shards if sh.held is not None and sh.held.token is None
                )
            return flying, waiting

    def _guard(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except AMQP_ERRORS as exc:
            self._con.broken()
            raise BackendUnavailable(
                f"lost the connection to RabbitMQ at {self._settings.display}: {exc!r}; "
                "messages this process held go back to their queues"
            ) from exc

    # -- claims ----------------------------------------------------------------------
    def claim(self, queue: str, n: int, now: float) -> list[Claimed]:
        """Lease up to ``n`` messages that are ready now; never waits."""
        info = self._info(queue)
        with self._con.lock:
            result: list[Claimed] = self._guard(lambda: self._claim(queue, n, now, info))
            return result

    def _claim(self, queue: str, n: int, now: float, info: QueueInfo) -> list[Claimed]:
        ch = self._channel()
        self._expire(now)
        state = self._state(queue, info.shards)
        state.last_claim = time.monotonic()
        self._owners.balance(queue, state, self._inflight)
        out: list[Claimed] = []
        count = len(state.shards)
        for j in range(count):
            if len(out) >= n:
                break
            i = (state.cursor + j) % count
            lease = self._shard_head(ch, queue, i, state, now, info)
            if lease is not None:
                out.append(self._hand_out(lease, now, info))
        state.cursor = (state.cursor + 1) % max(count, 1)
        for lease in list(self._inflight.values()):
            if len(out) >= n:
                break
            if lease.queue == queue and lease.shard is None and lease.expired_at is not None:
                out.append(self._hand_out(lease, now, info))
        budget = state.probe.ready(self._con, self._names.main(queue))
        while len(out) < n and budget > 0:
            budget -= 1
            method, props, body = ch.basic_get(self._names.main(queue), auto_ack=False)
            state.probe.busy = method is not None
            if method is None:
                break
            lease = Lease(
                queue=queue,
                shard=None,
                tag=method.delivery_tag,
                generation=self._con.generation,
                incoming=wire.decode(queue, props, body),
                due=0.0,
            )
            lease.due = lease.envelope.available_at
            if lease.attempt > info.config.max_attempts:
                self._bury_expired(lease, now, info)
            elif lease.due > now + DUE_SLACK:
                # Back from a delay step early (the delay exceeds the largest
                # step, or the clocks differ): another round on the ladder.
                self._move(lease, [self._copy(lease, now, info, spent=lease.attempt - 1)])
            else:
                out.append(self._hand_out(lease, now, info))
        return out

    def _shard_head(
        self, ch: Any, queue: str, i: int, state: QueueState, now: float, info: QueueInfo
    ) -> Lease | None:
        """The head of shard ``i`` if this process owns the shard and it is ready now."""
        sh = state.shards[i]
        if not sh.owned and not self._owners.acquire(queue, i, sh, state):
            return None
        lease = sh.held
        if lease is not None and lease.token is None:
            if time.monotonic() - lease.got_at > _REFRESH_HELD_AFTER:
                # Return it (to the head: we own the shard, so we get it straight back)
                # before the broker's consumer_timeout would close the channel.
                old = lease
                ch.basic_nack(old.tag, requeue=True)
                sh.held = None
                lease = self._get_shard(ch, queue, i, sh)
                if lease is not None and lease.envelope.id == old.envelope.id:
                    # The broker counted the return; it was not an attempt.
                    lease.local_extra = old.local_extra - 1
                    lease.due = old.due
        elif lease is None:
            lease = self._get_shard(ch, queue, i, sh)
        if lease is None or (lease.token is not None and lease.expired_at is None):
            return None
        if lease.token is None and lease.due > now + DUE_SLACK:
            return None
        if lease.attempt > info.config.max_attempts:
            self._bury_expired(lease, now, info)
            return None
        return lease

    def _get_shard(self, ch: Any, queue: str, i: int, sh: Shard) -> Lease | None:
        name = self._names.shard(queue, i)
        if not sh.probe.ready(self._con, name):
            return None
        method, props, body = ch.basic_get(name, auto_ack=False)
        sh.probe.busy = method is not None
        if method is None:
            return None
        incoming = wire.decode(queue, props, body)
        sh.held = Lease(
            queue=queue,
            shard=i,
            tag=method.delivery_tag,
            generation=self._con.generation,
            incoming=incoming,
            due=incoming.envelope.available_at,
        )
        return sh.held

    def _hand_out(self, lease: Lease, now: float, info: QueueInfo) -> Claimed:
        if lease.token is not None:
            # Claimed again after its lease expired: the old holder's token is now stale.
            del self._inflight[lease.token]
            lease.local_extra += 1
            lease.expired_at = None
        lease.token = uuid.uuid4().hex
        lease.lease_expires = now + info.config.lease
        self._inflight[lease.token] = lease
        env = lease.envelope
        return Claimed(
            receipt=Receipt(
                queue=lease.queue,
                message_id=env.id,
                token=lease.token,
                handle=(lease.generation, lease.tag, lease.shard),
                tenant=env.tenant,
            ),
            envelope=env,
            attempt=lease.attempt,
            lease_expires=lease.lease_expires,
        )

    def _expire(self, now: float) -> None:
        """Mark deliveries whose lease ran out; dead-letter those on their last attempt."""
        for lease in list(self._inflight.values()):
            if lease.lease_expires > now or lease.expired_at is not None:
                continue
            lease.expired_at = time.monotonic()
            self._metrics.add(lease.queue, "failed")
            info = self._info(lease.queue)
            if lease.attempt >= info.config.max_attempts:
                self._bury(
                    lease,
                    now,
                    wire.DeadInfo(
                        reason=f"lease expired on attempt {lease.attempt} of "
                        f"{info.config.max_attempts}",
                        error_type=_EXPIRED,
                        traceback=None,
                        attempts=lease.attempt,
                        dead_at=now,
                    ),
                )
            else:
                self._metrics.add(lease.queue, "retried")

    def housekeeping(self) -> None:
        """Give up the shards of queues this process stopped claiming from (another
        process may take them). Called from a timer thread; skips when busy."""
        if not self._con.lock.acquire(blocking=False):
            return
        try:
            if not self._con.alive:
                return
            mono = time.monotonic()
            for token, lease in list(self._inflight.items()):
                # Expired and not claimed again here: let other processes have it.
                if (
                    lease.shard is None
                    and lease.expired_at is not None
                    and mono - lease.expired_at > self._settings.idle_release
                ):
                    del self._inflight[token]
                    self._con.channel().basic_nack(lease.tag, requeue=True)
            for queue, state in self._queues.items():
                if mono - state.last_claim < self._settings.idle_release:
                    continue
                for i, sh in enumerate(state.shards):
                    if sh.owned:
                        self._owners.give_up(queue, i, sh, self._inflight)
        except AMQP_ERRORS:
            self._con.broken()
        finally:
            self._con.lock.release()

    # -- settlement ----------------------------------------------------------------------
    def ack(self, receipts: Sequence[Receipt], durations_ms: Sequence[float | None]) -> list[bool]:
        """Ack deliveries; ``False`` for a stale receipt."""
        with self._con.lock:
            results: list[bool] = []
            done: list[tuple[Lease, float | None]] = []
            for r, ms in zip(receipts, durations_ms, strict=True):
                lease = self._live(r)
                if lease is None:
                    results.append(False)
                    continue
                try:
                    self._con.channel().basic_ack(lease.tag)
                except AMQP_ERRORS:
                    self._con.broken()
                    results.append(False)
                    continue
                done.append((lease, ms))
                results.append(True)
            if done:
                try:
                    # The round trip proves the channel was alive when the acks arrived:
                    # a channel the broker had closed returned those messages instead.
                    self._con.sync()
                except AMQP_ERRORS:
                    self._con.broken()
                    return [False] * len(results)
            for lease, ms in done:
                self._forget(lease)
                self._metrics.add(lease.queue, "processed", ms)
            return results

    def retry(self, receipt: Receipt, now: float, available_at: float, failed: bool) -> bool:
        """Deliver again at ``available_at``; ``False`` for a stale receipt."""
        with self._con.lock:
            lease = self._live(receipt)
            if lease is None or not self._alive():
                return False
            assert lease.token is not None
            if lease.shard is not None:
                # Keep it (and so its shard) here until it is due.
                del self._inflight[lease.token]
                lease.token = lease.expired_at = None
                lease.local_extra += 1
                lease.due = min(available_at, now + MAX_KEYED_HOLD)
            elif available_at <= now + DUE_SLACK:
                if not self._settle(
                    lambda: self._con.channel().basic_nack(lease.tag, requeue=True)
                ):
                    return False
                self._forget(lease)
                self.touch(lease.queue)
            else:
                info = self._info(lease.queue)
                copy = self._copy(lease, now, info, spent=lease.attempt, available_at=available_at)
                if not self._move(lease, [copy]):
                    return False
            self._metrics.add(lease.queue, "retried")
            if failed:
                self._metrics.add(lease.queue, "failed")
            return True

    def dead_letter(self, receipt: Receipt, now: float, info: wire.DeadInfo) -> bool:
        """Dead-letter a delivery (and copy it to the fallback queue); ``False`` if stale."""
        with self._con.lock:
            lease = self._live(receipt)
            if lease is None or not self._alive():
                return False
            return self._bury(lease, now, attrs.evolve(info, attempts=lease.attempt))

    def release(self, receipts: Sequence[Receipt], now: float) -> list[bool]:
        """Hand deliveries back without spending an attempt; ``False`` for a stale receipt."""
        with self._con.lock:
            results: list[bool] = []
            for r in receipts:
                lease = self._live(r)
                results.append(lease is not None)
                if lease is None:
                    continue
                assert lease.token is not None
                if lease.shard is not None:
                    del self._inflight[lease.token]
                    lease.token = lease.expired_at = None
                    lease.due = now
                else:
                    info = self._info(lease.queue)
                    self._move(lease, [self._copy(lease, now, info, spent=lease.attempt - 1)])
            return results

    def extend(self, receipt: Receipt, seconds: float, now: float) -> float | None:
        """Move the lease's end; ``None`` when the lease (or its channel) is gone."""
        with self._con.lock:
            lease = self._live(receipt)
            if lease is None or not self._alive():
                return None
            lease.lease_expires = now + seconds
            lease.expired_at = None
            return lease.lease_expires

    # -- helpers -----------------------------------------------------------------------
    def _alive(self) -> bool:
        try:
            self._con.sync()
        except AMQP_ERRORS:
            self._con.broken()
            return False
        return True

    def _settle(self, call: Callable[[], Any]) -> bool:
        try:
            call()
            self._con.sync()
        except AMQP_ERRORS:
            self._con.broken()
            return False
        return True

    def _forget(self, lease: Lease) -> None:
        if lease.token is not None:
            self._inflight.pop(lease.token, None)
            lease.token = None
        if lease.shard is not None:
            state = self._queues.get(lease.queue)
            if state is not None and state.shards[lease.shard].held is lease:
                state.shards[lease.shard].held = None

    def _copy(
        self,
        lease: Lease,
        now: float,
        info: QueueInfo,
        *,
        spent: int,
        available_at: float | None = None,
    ) -> Publish:
        env = lease.envelope
        if available_at is not None:
            env = attrs.evolve(env, available_at=available_at)
        exchange, key = route(self._names, env, info, now)
        return exchange, key, wire.properties(env, spent=spent), env.data

    def _move(self, lease: Lease, copies: list[Publish]) -> bool:
        """Publish ``copies`` (confirmed), then ack the original. At-least-once: if the
        ack is lost the original comes back too, so both may be delivered."""
        with self._pub.lock:
            self._pub.publish(copies)
        ok = self._settle(lambda: self._con.channel().basic_ack(lease.tag))
        self._forget(lease)
        self.touch(lease.queue)
        return ok

    def _bury_expired(self, lease: Lease, now: float, info: QueueInfo) -> None:
        self._bury(
            lease,
            now,
            wire.DeadInfo(
                reason=f"lease expired on attempt {lease.attempt - 1} of "
                f"{info.config.max_attempts} (the consumer's connection closed)",
                error_type=_EXPIRED,
                traceback=None,
                attempts=lease.attempt - 1,
                dead_at=now,
            ),
        )

    def _bury(self, lease: Lease, now: float, dead: wire.DeadInfo) -> bool:
        env = lease.envelope
        copies: list[Publish] = [
            ("", self._names.dead(lease.queue), wire.dead_properties(env, dead), env.data)
        ]
        fallback = self._info(lease.queue).config.fallback
        if fallback is not None:
            copies.append(self._fallback_copy(env, fallback, dead.reason, now))
        ok = self._move(lease, copies)
        if fallback is not None:
            self.touch(fallback)
        self._metrics.add(lease.queue, "dead_lettered")
        if dead.error_type is not None:
            self._metrics.add(lease.queue, "failed")
        return ok

    def _fallback_copy(self, env: Envelope, fallback: str, reason: str, now: float) -> Publish:
        headers: dict[str, Any] = json.loads(env.headers) if env.headers else {}
        headers["pmsq.dead_letter"] = {"queue": env.queue, "message_id": env.id, "reason": reason}
        new = attrs.evolve(
            env,
            id=new_message_id(now),
            queue=fallback,
            available_at=now,
            enqueued_at=now,
            headers=json.dumps(headers, separators=(",", ":")),
            causation_id=env.id,
        )
        exchange, key = route(self._names, new, self._info(fallback), now)
        return exchange, key, wire.properties(new, spent=0), new.data
