"""A pure-Python model of one store's queue semantics, "assumed to be perfect".

``QueueModel`` is the executable form of DESIGN.md's delivery guarantees. The
stateful conformance test drives a real broker and this model side by side
and fails when they disagree. It knows nothing of SQL, threads or codecs:
messages are plain records, time is whatever ``now`` the caller passes, and
lease tokens are claim serial numbers.

The rules it encodes, in one place:

- A keyed message joins its key's *line* (per queue, tenant and key); only
  the line's oldest member (its head) may be claimed. A message leaves the
  line when it is acked, or dead-lettered on a queue with
  ``on_key_failure="continue"``; on ``"block"`` the dead letter keeps the
  line (and so blocks the key) until it is redriven or purged.
- Claimable: not dead, not in flight, due and the
  head of its line (or unkeyed). Within a tenant, claims come in priority
  order (higher first), then put order.
- Due: a message put or retried with a delay is *scheduled* until a claim
  of its queue at or after ``available_at`` makes it ready; one put or
  retried without delay is ready at once. Ready stays ready: a wall clock
  stepped back later does not hold it back again.
- Every claim first processes expired leases of its queue: each counts a
  failed attempt; a message with ``attempt >= max_attempts`` is dead-lettered,
  any other becomes claimable again but keeps its holder, so the late holder
  can still settle it until somebody else claims it.
- A settle verb (ack, retry, dead-letter, extend) succeeds only for the
  current holder of a message that is not dead; otherwise it is ``LeaseLost``
  and changes nothing.
- Dedup ids are remembered per queue and tenant from the first put until
  ``enqueued_at + dedup_window`` (``None``: forever); a hit returns the first
  id and stores nothing. A coalescing put replaces the payload of the newest
  member of its key's line if that one was never delivered and is not dead.
- ``max_depth`` and ``tenant_quota`` count messages that are not dead.
- Dead letters keep their attempts; a redrive restarts them at attempt 0
  (the next delivery is attempt 1); a keyed dead letter that left its line
  rejoins it at the tail, one that kept its line stays its head.
- Message control: a cancel removes messages that are not dead (a holder
  then has lost its lease; the next of a key moves up). A reschedule moves a
  waiting message's due time, keeps its place in its line, and takes the
  lease away from a late holder. A snooze is a retry after ``delay`` that
  neither counts an attempt nor any outcome. A pause of a queue, of one
  tenant of it or of one key (of a tenant, or tenantless) makes its
  messages unclaimable while in force (until ``until``, if given).
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import attrs

from pmsq.config import QueueConfig
from pmsq.errors import QueueFull

__all__ = ["ModelMessage", "ModelPut", "QueueModel"]

State = Literal["waiting", "in_flight", "dead"]


@attrs.define
class ModelMessage:
    """One message as the model sees it (mutable: the model evolves it in place)."""

    id: str
    queue: str
    payload: Any
    key: str | None
    tenant: str | None
    priority: int
    headers: dict[str, Any]
    dedup_id: str | None
    enqueued_at: float
    seq: int
    available_at: float
    in_line: bool
    state: State = "waiting"
    #: Held back by a delay until a claim at or after ``available_at`` (see the rules).
    scheduled: bool = False
    attempt: int = 0
    holder: int | None = None
    lease_expires: float | None = None
    dead_reason: str | None = None
    dead_error_type: str | None = None
    dead_at: float | None = None
    #: For a fallback copy: the dead letter it copies.
    source_id: str | None = None


@attrs.frozen
class ModelPut:
    """One put as the model takes it: options already resolved to absolute times."""

    payload: Any
    key: str | None = None
    tenant: str | None = None
    priority: int = 0
    available_at: float = 0.0
    dedup_id: str | None = None
    headers: dict[str, Any] | None = None
    coalesce: bool = False


@attrs.define
class _Counts:
    processed: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0


class QueueModel:
    """The whole store: queues, messages, dedup memory, counters.

    Args:
        configs: Queue configurations; undeclared queues get defaults on first use.
            Backoff must be without jitter, so the model can predict retry times.
    """

    def __init__(self, configs: Iterable[QueueConfig] = ()) -> None:
        self.configs: dict[str, QueueConfig] = {}
        self.messages: dict[str, ModelMessage] = {}
        self.dedup: dict[tuple[str, str | None, str], tuple[str, float | None]] = {}
        #: Pauses in force by scope ``(queue, tenant, key)``: their ``until`` or None.
        self.pauses: dict[tuple[str, str | None, str | None], float | None] = {}
        self.counts: dict[tuple[str, str | None], _Counts] = {}
        self._seq = itertools.count(1)
        self._holders = itertools.count(1)
        self._fallback_ids = itertools.count(1)
        for config in configs:
            self.declare(config)

    # -- configuration ---------------------------------------------------------
    def declare(self, config: QueueConfig) -> None:
        """Create or update a queue."""
        if config.backoff.jitter:
            raise ValueError("the model needs a Backoff without jitter to predict retry times")
        self.configs[config.name] = config

    def config(self, queue: str) -> QueueConfig:
        """A queue's configuration (defaults for an undeclared queue, which is then declared)."""
        if queue not in self.configs:
            self.configs[queue] = QueueConfig(name=queue)
        return self.configs[queue]

    def backoff_delay(self, queue: str, retry_number: int) -> float:
        """Seconds before retry ``retry_number``: ``min(cap, base * factor ** (n - 1))``."""
        b = self.config(queue).backoff
        return min(b.cap, b.base * b.factor ** max(0, retry_number - 1))

    # -- puts ------------------------------------------------------------------
    def put(self, queue: str, item: ModelPut, new_id: str, now: float) -> str:
        """Put one message; return the id the caller must see.

        ``new_id`` is the id a newly stored message gets. A dedup hit or a
        coalescing put returns an earlier id instead and stores nothing new.

        Raises:
            QueueFull: ``max_depth`` or ``tenant_quota`` reached (nothing changed).
        """
        cfg = self.config(queue)
        if item.dedup_id is not None:
            hit = self.dedup.get((queue, item.tenant, item.dedup_id))
            if hit is not None and (hit[1] is None or hit[1] > now):
                return hit[0]
        if item.coalesce and item.key is not None:
            line = self.line(queue, item.tenant, item.key)
            newest = line[-1] if line else None
            if newest is not None and newest.state == "waiting" and newest.attempt == 0:
                newest.payload = item.payload
                newest.headers = dict(item.headers or {})
                self._remember(cfg, item, newest.id, now)
                return newest.id
        if cfg.max_depth is not None and self.depth(queue) >= cfg.max_depth:
            raise QueueFull(f"model: queue {queue!r} is at max_depth={cfg.max_depth}")
        if (
            cfg.tenant_quota is not None
            and item.tenant is not None
            and self.depth(queue, item.tenant) >= cfg.tenant_quota
        ):
            raise QueueFull(f"model: tenant {item.tenant!r} is at tenant_quota in {queue!r}")
        if new_id in self.messages:
            raise AssertionError(f"id {new_id} was handed out for a new message but exists")
        self.messages[new_id] = ModelMessage(
            id=new_id,
            queue=queue,
            payload=item.payload,
            key=item.key,
            tenant=item.tenant,
            priority=item.priority,
            headers=dict(item.headers or {}),
            dedup_id=item.dedup_id,
            enqueued_at=now,
            seq=next(self._seq),
            available_at=max(item.available_at, now),
            in_line=item.key is not None,
            scheduled=item.available_at > now,
        )
        self._remember(cfg, item, new_id, now)
        return new_id

    def put_many(
        self, queue: str, items: Sequence[ModelPut], new_ids: Sequence[str], now: float
    ) -> list[str]:
        """Put several messages atomically: on ``QueueFull`` nothing changes.

        Raises:
            QueueFull: a limit would be exceeded by some item.
        """
        saved = copy.deepcopy(self.__dict__)
        try:
            return [
                self.put(queue, item, new_id, now)
                for item, new_id in zip(items, new_ids, strict=True)
            ]
        except QueueFull:
            self.__dict__.update(saved)
            raise

    def _remember(self, cfg: QueueConfig, item: ModelPut, mid: str, now: float) -> None:
        if item.dedup_id is None:
            return
        expires = None if cfg.dedup_window is None else now + cfg.dedup_window
        self.dedup[(cfg.name, item.tenant, item.dedup_id)] = (mid, expires)

    # -- reading -----------------------------------------------------------------
    def line(self, queue: str, tenant: str | None, key: str) -> list[ModelMessage]:
        """The members of a key's line, oldest first."""
        return sorted(
            (
                m
                for m in self.messages.values()
                if m.in_line and m.queue == queue and m.tenant == tenant and m.key == key
            ),
            key=lambda m: m.seq,
        )

    def _is_head(self, m: ModelMessage) -> bool:
        if m.key is None:
            return True
        line = self.line(m.queue, m.tenant, m.key)
        return bool(line) and line[0] is m

    def claimable(
        self, queue: str, now: float, tenant: str | None = None, *, any_tenant: bool = True
    ) -> list[ModelMessage]:
        """Messages a claim at ``now`` may return, after :meth:`expire` ran.

        Ordered by tenant, then priority (higher first), then put order. With
        ``any_tenant=False`` only ``tenant``'s messages (a tenant handle's view).
        """
        out = [
            m
            for m in self.messages.values()
            if m.queue == queue
            and m.state == "waiting"
            and (not m.scheduled or m.available_at <= now)
            and (any_tenant or m.tenant == tenant)
            and self._is_head(m)
            and not (self.pauses and self.paused(m, now))
        ]
        out.sort(key=lambda m: (m.tenant or "", -m.priority, m.seq))
        return out

    def depth(self, queue: str, tenant: str | None = None) -> int:
        """Messages of ``queue`` (of ``tenant``, if given) that are not dead."""
        return sum(
            1
            for m in self.messages.values()
            if m.queue == queue and m.state != "dead" and (tenant is None or m.tenant == tenant)
        )

    def dead_letters(self, queue: str, tenant: str | None = None) -> list[ModelMessage]:
        """Dead letters of ``queue`` (of ``tenant``, if given), oldest first."""
        return sorted(
            (
                m
                for m in self.messages.values()
                if m.queue == queue and m.state == "dead" and (tenant is None or m.tenant == tenant)
            ),
            key=lambda m: (m.dead_at or 0.0, m.seq),
        )

    def totals(self, queue: str, tenant: str | None = None) -> dict[str, int]:
        """All-time ``processed``, ``failed``, ``retried`` and ``dead_lettered`` counts."""
        out: Counter[str] = Counter()
        for (q, t), c in self.counts.items():
            if q == queue and (tenant is None or t == tenant):
                out.update(attrs.asdict(c))
        return {k: out[k] for k in ("processed", "failed", "retried", "dead_lettered")}

    def holds(self, message_id: str, holder: int) -> bool:
        """Whether ``holder`` may still settle the message (the lease is not lost)."""
        m = self.messages.get(message_id)
        return m is not None and m.state != "dead" and m.holder == holder

    # -- claiming ----------------------------------------------------------------
    def expire(self, queue: str, now: float) -> None:
        """Process expired leases of ``queue`` and make its due messages ready
        (every claim does this first)."""
        cfg = self.config(queue)
        for m in self.messages.values():
            if m.queue == queue and m.state == "waiting" and m.available_at <= now:
                m.scheduled = False
        for m in sorted(self.messages.values(), key=lambda m: m.seq):
            if m.queue != queue or m.state != "in_flight":
                continue
            assert m.lease_expires is not None
            if m.lease_expires > now:
                continue
            self._count(m).failed += 1
            if m.attempt >= cfg.max_attempts:
                self._bury(
                    m,
                    reason=f"lease expired on attempt {m.attempt} of {cfg.max_attempts}",
                    error_type="pmsq.LeaseExpired",
                    now=now,
                )
            else:
                m.state, m.lease_expires = "waiting", None  # the holder is kept
                self._count(m).retried += 1

    def claim(self, message_ids: Sequence[str], now: float) -> list[int]:
        """Lease the given (claimable) messages; return their holder numbers."""
        holders = []
        for mid in message_ids:
            m = self.messages[mid]
            cfg = self.config(m.queue)
            if m not in self.claimable(m.queue, now):
                raise AssertionError(f"model: {mid} is not claimable")
            m.state, m.attempt = "in_flight", m.attempt + 1
            m.holder, m.lease_expires = next(self._holders), now + cfg.lease
            holders.append(m.holder)
        return holders

    # -- settling ------------------------------------------------------------------
    def ack(self, message_id: str, holder: int) -> bool:
        """Delete the message; False (nothing changed) if the lease is lost."""
        if not self.holds(message_id, holder):
            return False
        m = self.messages.pop(message_id)
        self._count(m).processed += 1
        return True

    def retry(self, message_id: str, holder: int, delay: float | None, now: float) -> bool:
        """Retry (dead-letter on the last attempt); False if the lease is lost."""
        if not self.holds(message_id, holder):
            return False
        m = self.messages[message_id]
        cfg = self.config(m.queue)
        if m.attempt >= cfg.max_attempts:
            self._bury(
                m,
                reason=f"retried {m.attempt} of {cfg.max_attempts} attempts",
                error_type=None,
                now=now,
            )
            return True
        wait = delay if delay is not None else self.backoff_delay(m.queue, m.attempt)
        m.state, m.available_at, m.scheduled = "waiting", now + wait, wait > 0
        m.holder, m.lease_expires = None, None
        self._count(m).retried += 1
        return True

    def dead_letter(self, message_id: str, holder: int, reason: str, now: float) -> bool:
        """Dead-letter at once; False if the lease is lost."""
        if not self.holds(message_id, holder):
            return False
        self._bury(self.messages[message_id], reason=reason, error_type=None, now=now)
        return True

    def extend(self, message_id: str, holder: int, seconds: float, now: float) -> bool:
        """Hold the lease until ``now + seconds``; False if the lease is lost."""
        if not self.holds(message_id, holder):
            return False
        m = self.messages[message_id]
        m.state, m.lease_expires = "in_flight", now + seconds
        return True

    def _bury(self, m: ModelMessage, *, reason: str, error_type: str | None, now: float) -> None:
        cfg = self.config(m.queue)
        m.state = "dead"
        m.in_line = m.key is not None and cfg.on_key_failure == "block"
        m.holder, m.lease_expires = None, None
        m.dead_reason, m.dead_error_type, m.dead_at = reason, error_type, now
        self._count(m).dead_lettered += 1
        if cfg.fallback is not None:
            copy_id = f"fallback-copy-{next(self._fallback_ids)}"
            headers = dict(m.headers)
            headers["pmsq.dead_letter"] = {"queue": m.queue, "message_id": m.id, "reason": reason}
            self.config(cfg.fallback)
            self.messages[copy_id] = ModelMessage(
                id=copy_id,
                queue=cfg.fallback,
                payload=m.payload,
                key=m.key,
                tenant=m.tenant,
                priority=m.priority,
                headers=headers,
                dedup_id=None,
                enqueued_at=now,
                seq=next(self._seq),
                available_at=now,
                in_line=m.key is not None,
                source_id=m.id,
            )

    # -- message control ---------------------------------------------------------------
    def cancel(self, queue: str, ids: Sequence[str], tenant: str | None = None) -> list[str]:
        """Remove the messages of ``queue`` among ``ids`` that are not dead (``tenant``'s only)."""
        gone = [
            mid
            for mid in dict.fromkeys(ids)
            if (m := self.messages.get(mid)) is not None
            and m.queue == queue
            and m.state != "dead"
            and (tenant is None or m.tenant == tenant)
        ]
        for mid in gone:
            del self.messages[mid]
        return gone

    def cancel_key(self, queue: str, key: str, tenant: str | None) -> list[str]:
        """Remove every message of ``tenant``'s ``key`` in ``queue`` that is not dead."""
        ids = [
            m.id
            for m in sorted(self.messages.values(), key=lambda m: m.seq)
            if m.queue == queue and m.key == key and m.tenant == tenant and m.state != "dead"
        ]
        return self.cancel(queue, ids)

    def reschedule(self, queue: str, message_id: str, at: float, now: float) -> bool:
        """Move a waiting message's due time (its line place kept); False if none."""
        m = self.messages.get(message_id)
        if m is None or m.queue != queue or m.state != "waiting":
            return False
        m.available_at, m.scheduled, m.holder = at, at > now, None
        return True

    def snooze(self, message_id: str, holder: int, delay: float, now: float) -> bool:
        """Come back after ``delay`` with this attempt not counted; False if the lease is lost."""
        if not self.holds(message_id, holder):
            return False
        m = self.messages[message_id]
        m.state, m.available_at, m.scheduled = "waiting", now + delay, delay > 0
        m.holder, m.lease_expires, m.attempt = None, None, max(0, m.attempt - 1)
        return True

    def pause(
        self, queue: str, tenant: str | None, key: str | None, until: float | None = None
    ) -> None:
        """Hold a scope (replacing its pause)."""
        self.pauses[(queue, tenant, key)] = until

    def resume(self, queue: str, tenant: str | None, key: str | None, now: float) -> bool:
        """Lift exactly this scope's pause; whether it was in force."""
        in_force = self.pause_in_force((queue, tenant, key), now)
        self.pauses.pop((queue, tenant, key), None)
        return in_force

    def pause_in_force(self, scope: tuple[str, str | None, str | None], now: float) -> bool:
        """Whether the pause of ``scope`` (``(queue, tenant, key)``) holds at ``now``."""
        if scope not in self.pauses:
            return False
        until = self.pauses[scope]
        return until is None or until > now

    def paused(self, m: ModelMessage, now: float) -> bool:
        """Whether a pause in force holds ``m`` (its queue's, its tenant's or its key's)."""
        scopes: list[tuple[str, str | None, str | None]] = [(m.queue, None, None)]
        if m.tenant is not None:
            scopes.append((m.queue, m.tenant, None))
        if m.key is not None:
            scopes.append((m.queue, m.tenant, m.key))
        return any(self.pause_in_force(s, now) for s in scopes)

    def queue_paused(self, queue: str, now: float) -> bool:
        """Whether a queue-wide pause is in force (``QueueStats.paused``)."""
        return self.pause_in_force((queue, None, None), now)

    # -- operators ---------------------------------------------------------------
    def _dead_matching(
        self, queue: str, ids: Sequence[str] | None, tenant: str | None
    ) -> list[ModelMessage]:
        wanted = None if ids is None else set(ids)
        return [m for m in self.dead_letters(queue, tenant) if wanted is None or m.id in wanted]

    def redrive(
        self, queue: str, ids: Sequence[str] | None, now: float, tenant: str | None = None
    ) -> int:
        """Return dead letters to the queue at attempt 0; how many moved."""
        moved = sorted(self._dead_matching(queue, ids, tenant), key=lambda m: m.seq)
        for m in moved:
            if m.key is not None and not m.in_line:
                # It left its line when it died: it rejoins at the tail.
                m.seq, m.in_line = next(self._seq), True
            m.state, m.attempt, m.available_at = "waiting", 0, now
            m.dead_reason = m.dead_error_type = None
            m.dead_at = None
        return len(moved)

    def purge(self, queue: str, ids: Sequence[str] | None, tenant: str | None = None) -> int:
        """Delete dead letters (releasing keys they blocked); how many."""
        gone = self._dead_matching(queue, ids, tenant)
        for m in gone:
            del self.messages[m.id]
        return len(gone)

    def _count(self, m: ModelMessage) -> _Counts:
        return self.counts.setdefault((m.queue, m.tenant), _Counts())
