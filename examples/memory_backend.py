"""A complete pmsq backend in one file: every message kept in memory.

It implements the required verbs of ``pmsq.backends.Backend`` and two cheap
families (``Inspect``: peek, ``Settings``: get_meta/set_meta), declares what
it leaves out (dedup, coalesce, rate limits, tenant fairness, exact
statistics), and passes pmsq's conformance suite for what it declares
(``tests/backends/test_memory_conformance.py``). Use it as the template of a
plugin: swap the dicts for your store's tables and keep the rules.

    broker = pmsq.Broker(MemoryBackend(), clock=pmsq.ManualClock())
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs

from pmsq.backends import (
    Backend,
    Capabilities,
    Claimed,
    Envelope,
    Inspect,
    Receipt,
    Settings,
    Settlement,
    StoredDeadLetter,
)
from pmsq.config import QueueConfig
from pmsq.errors import QueueFull
from pmsq.ids import new_message_id
from pmsq.stats import QueueStats, Stats


@attrs.define
class _Message:
    env: Envelope
    seq: int  # put order; a key's line is its keyed messages in seq order
    available_at: float
    state: str = "waiting"  # "waiting", "in_flight" or "dead"
    attempt: int = 0
    token: str | None = None  # the current holder's lease token
    lease_expires: float | None = None
    in_line: bool = True  # still holds its place in its key's line
    dead: tuple[str, str | None, str | None, float] | None = None  # reason, type, traceback, at


class MemoryBackend(Backend, Inspect, Settings):
    """A store that lives as long as the object; safe to share between threads."""

    capabilities = Capabilities(
        dedup=False, coalesce=False, rate_limits=False, tenant_fairness=False, exact_stats=False
    )
    name = "Memory"

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        self.url = url
        self._lock = threading.RLock()
        self._configs: dict[str, QueueConfig] = {}
        self._bindings: set[tuple[str, str]] = set()
        self._messages: dict[str, _Message] = {}
        self._meta: dict[str, str] = {}
        self._seq = itertools.count(1)

    def _config(self, queue: str) -> QueueConfig:
        return self._configs.setdefault(queue, QueueConfig(name=queue))

    def _of(self, queue: str, tenant: str | None = None) -> list[_Message]:
        """``queue``'s messages (of ``tenant``, if given) in put order."""
        mine = [m for m in self._messages.values() if m.env.queue == queue]
        return sorted((m for m in mine if tenant in (None, m.env.tenant)), key=lambda m: m.seq)

    def _heads(self, queue: str) -> dict[tuple[str | None, str], _Message]:
        heads: dict[tuple[str | None, str], _Message] = {}
        for m in self._of(queue):
            if m.env.key is not None and m.in_line:
                heads.setdefault((m.env.tenant, m.env.key), m)
        return heads

    def _claimable(self, m: _Message, now: float, heads: dict[Any, _Message]) -> bool:
        if m.state != "waiting" or m.available_at > now:
            return False
        return m.env.key is None or heads.get((m.env.tenant, m.env.key)) is m

    # -- configuration ---------------------------------------------------------------
    def declare_queue(self, config: QueueConfig) -> None:
        with self._lock:
            self._configs[config.name] = config

    def list_queues(self) -> list[QueueConfig]:
        with self._lock:
            return [self._configs[name] for name in sorted(self._configs)]

    def bind(self, pattern: str, queue: str) -> None:
        with self._lock:
            self._config(queue)
            self._bindings.add((pattern, queue))

    def unbind(self, pattern: str, queue: str) -> bool:
        with self._lock:
            found = (pattern, queue) in self._bindings
            self._bindings.discard((pattern, queue))
            return found

    def bindings(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._bindings)

    # -- the message lifecycle ----------------------------------------------------------
    def put_many(self, envelopes: Sequence[Envelope], *, now: float) -> list[str]:
        with self._lock:
            # Check every quota first: a batch is stored whole or not at all.
            live = Counter[Any]()
            for m in self._messages.values():
                if m.state != "dead":
                    live[m.env.queue] += 1
                    live[m.env.queue, m.env.tenant] += 1
            for env in envelopes:
                cfg = self._config(env.queue)
                live[env.queue] += 1
                live[env.queue, env.tenant] += 1
                if cfg.max_depth is not None and live[env.queue] > cfg.max_depth:
                    raise QueueFull(f"queue {env.queue!r} holds its max_depth {cfg.max_depth}")
                quota = cfg.tenant_quota if env.tenant is not None else None
                if quota is not None and live[env.queue, env.tenant] > quota:
                    raise QueueFull(f"tenant {env.tenant!r} holds its quota {quota}")
            for env in envelopes:
                self._messages[env.id] = _Message(env, next(self._seq), env.available_at)
            return [env.id for env in envelopes]

    def claim(
        self,
        queue: str,
        n: int,
        *,
        now: float,
        tenant: str | None = None,
        consumer: str | None = None,
    ) -> list[Claimed]:
        with self._lock:
            cfg = self._config(queue)
            for m in self._of(queue):  # an expired lease counts as a failed attempt
                if m.state == "in_flight" and m.lease_expires is not None:
                    if m.lease_expires > now:
                        continue
                    if m.attempt >= cfg.max_attempts:
                        reason = f"lease expired on attempt {m.attempt} of {cfg.max_attempts}"
                        self._bury(m, reason, "pmsq.LeaseExpired", None, now)
                    else:  # the token stays: its late holder may still settle it
                        m.state, m.lease_expires = "waiting", None
            heads = self._heads(queue)
            ready = [m for m in self._of(queue, tenant) if self._claimable(m, now, heads)]
            ready.sort(key=lambda m: (-m.env.priority, m.seq))
            out = []
            for m in ready[: max(n, 0)]:
                m.state, m.attempt, m.token = "in_flight", m.attempt + 1, secrets.token_hex(8)
                m.lease_expires = now + cfg.lease
                receipt = Receipt(queue, m.env.id, m.token, m.env.id, m.env.tenant)
                out.append(Claimed(receipt, m.env, m.attempt, m.lease_expires))
            return out

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> list[bool]:
        with self._lock:
            done = []
            for s in settlements:
                m = self._held(s.receipt)
                done.append(m is not None)
                if m is None:
                    continue
                if s.action == "ack":
                    del self._messages[m.env.id]
                elif s.action == "dead":
                    self._bury(m, s.reason, s.error_type, s.error, now)
                else:  # retry, or release: back in line without spending the attempt
                    if s.action == "retry":
                        m.available_at = s.available_at
                    else:
                        m.attempt = max(0, m.attempt - 1)
                    m.state, m.token, m.lease_expires = "waiting", None, None
            return done

    def _held(self, receipt: Receipt) -> _Message | None:
        m = self._messages.get(receipt.message_id)
        ok = m is not None and m.state != "dead" and m.token == receipt.token
        return m if ok else None

    def _bury(
        self, m: _Message, reason: str, error_type: str | None, tb: str | None, now: float
    ) -> None:
        cfg = self._config(m.env.queue)
        m.state, m.token, m.lease_expires = "dead", None, None
        m.in_line = m.env.key is not None and cfg.on_key_failure == "block"
        m.dead = (reason, error_type, tb, now)
        if cfg.fallback is not None:
            headers = json.loads(m.env.headers) if m.env.headers else {}
            origin = {"queue": cfg.name, "message_id": m.env.id, "reason": reason}
            headers["pmsq.dead_letter"] = origin
            copy = attrs.evolve(
                m.env,
                id=new_message_id(now),
                queue=cfg.fallback,
                headers=json.dumps(headers),
                available_at=now,
                enqueued_at=now,
                dedup_id=None,
            )
            self._config(cfg.fallback)
            self._messages[copy.id] = _Message(copy, next(self._seq), now)

    def extend(self, receipt: Receipt, seconds: float, *, now: float) -> float | None:
        with self._lock:
            m = self._held(receipt)
            if m is None:
                return None
            m.state, m.lease_expires = "in_flight", now + seconds
            return m.lease_expires

    # -- operators ------------------------------------------------------------------------
    def _dead(self, queue: str, tenant: str | None, ids: Sequence[str] | None) -> list[_Message]:
        found = [m for m in self._of(queue, tenant) if m.dead and (ids is None or m.env.id in ids)]
        return sorted(found, key=lambda m: (m.dead[3] if m.dead else 0.0, m.seq))

    def dead_letters(
        self,
        queue: str,
        *,
        tenant: str | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredDeadLetter]:
        with self._lock:
            found = self._dead(queue, tenant, ids)
            out = [StoredDeadLetter(m.env, m.attempt, *m.dead) for m in found if m.dead]
            return out if limit is None else out[:limit]

    def redrive(
        self, queue: str, ids: Sequence[str] | None, *, now: float, tenant: str | None = None
    ) -> int:
        with self._lock:
            moved = sorted(self._dead(queue, tenant, ids), key=lambda m: m.seq)
            for m in moved:
                if m.env.key is not None and not m.in_line:  # it left its line: rejoin the tail
                    m.seq, m.in_line = next(self._seq), True
                m.state, m.attempt, m.available_at, m.dead = "waiting", 0, now, None
            return len(moved)

    def purge(self, queue: str, ids: Sequence[str] | None, *, tenant: str | None = None) -> int:
        with self._lock:
            gone = self._dead(queue, tenant, ids)
            for m in gone:
                del self._messages[m.env.id]
            return len(gone)

    def stats(self, queue: str | None = None, *, now: float, tenant: str | None = None) -> Stats:
        with self._lock:
            names = sorted(self._configs) if queue is None else [queue]
            return Stats({q: self._figures(q, tenant, now) for q in names}, tuple(self.bindings()))

    def _figures(self, queue: str, tenant: str | None, now: float) -> QueueStats:
        heads, counts = self._heads(queue), Counter[str]()
        waiting = [m.env.enqueued_at for m in self._of(queue, tenant) if m.state == "waiting"]
        for m in self._of(queue, tenant):
            ready = self._claimable(m, now, heads)
            counts["ready" if ready else "delayed" if m.state == "waiting" else m.state] += 1
        c, oldest = counts, now - min(waiting) if waiting else None
        return QueueStats(queue, c["ready"], c["delayed"], c["in_flight"], c["dead"], oldest)

    def close(self) -> None:
        """Nothing to release: the store lives as long as this object."""

    # -- the two families ---------------------------------------------------------------
    def peek(
        self, queue: str, n: int, *, tenant: str | None = None
    ) -> list[tuple[Envelope, int, str]]:
        with self._lock:
            heads, out = self._heads(queue), []
            for m in self._of(queue, tenant):
                head = self._claimable(m, m.available_at, heads)
                state = "ready" if head else "waiting_for_key" if m.state == "waiting" else m.state
                out.append((m.env, m.attempt, state))
            return [row for row in out if row[2] != "dead"][:n]

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            return self._meta.get(key)

    def set_meta(self, key: str, value: str | None) -> None:
        with self._lock:
            self._meta.pop(key, None)
            if value is not None:
                self._meta[key] = value
