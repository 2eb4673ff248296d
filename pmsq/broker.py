"""``Broker``: the facade an app holds. ``pmsq.connect(url)`` returns one."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pmsq.alerts import Alert, AlertBook, AlertRule, evaluate, load_rules, save_rule
from pmsq.backends.base import Backend, Claimed, Envelope
from pmsq.backends.families import History, Once, TransactionalPut
from pmsq.backends.registry import open_backend
from pmsq.clock import Clock, SystemClock
from pmsq.codec import BYTES_FORMAT, Codec, JsonCodec, decode_headers
from pmsq.config import Backoff, QueueConfig, RateLimit, check_queue_name, check_tenant
from pmsq.deadletters import DeadLetters
from pmsq.delivery import Delivery
from pmsq.errors import ConfigurationError, Unroutable
from pmsq.handlers import HandlerSpec
from pmsq.message import Message, utc_from_epoch
from pmsq.queue import Queue, build_envelope
from pmsq.stats import QueueStats, Stats
from pmsq.topics import check_pattern, check_topic, matches
from pmsq.wakeups import WakeUps

__all__ = ["Broker", "connect"]

F = TypeVar("F", bound=Callable[..., Any])
_CONFIG_TTL = 1.0
#: ``connect(history=)`` default: keep three days of message history. Compared by
#: identity, so only a retention the caller chose is refused by backends without one.
DEFAULT_HISTORY = dt.timedelta(days=3)

#: A put hook: ``hook(queue, message_id, topic, headers)``; it may add to ``headers``.
PutHook = Callable[[str, str, "str | None", "dict[str, Any]"], None]


def _history_seconds(history: object) -> float | None:
    if history is None:
        return None
    if isinstance(history, dt.timedelta):
        seconds = history.total_seconds()
    elif isinstance(history, (int, float)) and not isinstance(history, bool):
        seconds = float(history)
    else:
        raise ConfigurationError(
            f"history must be a timedelta, seconds, or None (no journal); got {history!r}"
        )
    if not (0 < seconds < 1e10):
        raise ConfigurationError(f"history must be a retention > 0, got {history!r}")
    return seconds


def _check_broker_options(max_payload_bytes: object, poll_interval: object) -> None:
    if (
        isinstance(max_payload_bytes, bool)
        or not isinstance(max_payload_bytes, int)
        or (max_payload_bytes < 1)
    ):
        raise ConfigurationError(
            f"max_payload_bytes must be an int >= 1, got {max_payload_bytes!r}"
        )
    if not (isinstance(poll_interval, (int, float)) and 0 < poll_interval <= 60):
        raise ConfigurationError(f"poll_interval must be in (0, 60] seconds, got {poll_interval!r}")


class Broker:
    """A connection to one store: declares queues, routes topics, hands out queues.

    Safe to share between threads. Use :func:`connect` to make one.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock | None = None,
        codec: Codec | None = None,
        max_payload_bytes: int = 1_048_576,
        poll_interval: float = 0.05,
        rng: random.Random | None = None,
    ) -> None:
        _check_broker_options(max_payload_bytes, poll_interval)
        self.backend = backend
        self.clock: Clock = clock or SystemClock()
        self.codec: Codec = codec or JsonCodec()
        self.max_payload_bytes = max_payload_bytes
        self.poll_interval = float(poll_interval)
        self.rng = rng or random.Random()
        self.handlers: dict[str, HandlerSpec] = {}
        self.middleware: list[Any] = []
        self.put_hooks: list[PutHook] = []
        self._configs: dict[str, tuple[float, QueueConfig]] = {}
        self._wakeups = WakeUps(self.poll_interval, backend.wait_for_change)
        self._known_queues: set[str] = set()
        self._alert_book = AlertBook()

    def __repr__(self) -> str:
        return f"<Broker {getattr(self.backend, 'url', self.backend.name)!r}>"

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store connection. Idempotent."""
        self._wakeups.close()  # stops the store watcher first
        self.backend.close()

    # -- queues ----------------------------------------------------------------
    def declare_queue(
        self,
        name: str,
        *,
        max_attempts: int = 5,
        lease: float = 30.0,
        backoff: Backoff | None = None,
        fallback: str | None = None,
        on_key_failure: str = "continue",
        dedup_window: float | None = 300.0,
        max_depth: int | None = None,
        tenant_quota: int | None = None,
        rate_limit: RateLimit | None = None,
    ) -> Queue:
        """Create a queue or update its options; stored, so every process sees them.

        Args:
            name: Queue name (``A-Z a-z 0-9 _ . -``).
            max_attempts: Deliveries without an ack before the message is dead-lettered.
            lease: Seconds a delivery is held before it comes back.
            backoff: Retry schedule (default ``Backoff()``).
            fallback: Queue that also receives each dead letter as a new message.
            on_key_failure: ``"continue"`` (a dead letter frees its key) or
                ``"block"`` (the key waits until it is redriven or purged).
            dedup_window: Seconds a ``dedup_id`` is remembered (``None``: forever).
            max_depth: ``QueueFull`` past this many waiting and in-flight messages.
            tenant_quota: ``QueueFull`` past this many for one tenant.
            rate_limit: At most ``RateLimit.limit`` claims per ``per`` seconds.

        Returns:
            The queue's handle.

        Raises:
            ConfigurationError: an option is invalid or unsupported by the backend.
        """
        config = QueueConfig(
            name=name,
            max_attempts=max_attempts,
            lease=lease,
            backoff=backoff or Backoff(),
            fallback=fallback,
            on_key_failure=on_key_failure,  # type: ignore[arg-type]
            dedup_window=dedup_window,
            max_depth=max_depth,
            tenant_quota=tenant_quota,
            rate_limit=rate_limit,
        )
        if rate_limit is not None:
            self.backend.capabilities.require(self.backend.name, "rate_limits")
        self.backend.declare_queue(config)
        self._configs[name] = (time.monotonic(), config)
        self._known_queues.add(name)
        return Queue(self, name)

    def queue(self, name: str) -> Queue:
        """Return the handle of queue ``name``, creating it with defaults if undeclared.

        Raises:
            ConfigurationError: invalid name.
        """
        check_queue_name(name)
        if name not in self._known_queues:
            if self.backend.queue_config(name) is None:
                # Insert-if-absent: another process may have declared it since the read.
                self.backend.ensure_queue(QueueConfig(name=name))
            self._known_queues.add(name)
        return Queue(self, name)

    def queues(self) -> list[QueueConfig]:
        """Every declared queue's configuration."""
        return self.backend.list_queues()

    def queue_config(self, name: str) -> QueueConfig:
        """A queue's configuration, cached for about a second."""
        hit = self._configs.get(name)
        now = time.monotonic()
        if hit is not None and now - hit[0] < _CONFIG_TTL:
            return hit[1]
        config = self.backend.queue_config(name) or QueueConfig(name=name)
        self._configs[name] = (now, config)
        return config

    def add_put_hook(self, hook: PutHook) -> None:
        """Call ``hook(queue, message_id, topic, headers)`` for every message put or published.

        Hooks run in the putting thread (inside a handler: in its context)
        before the message's headers are encoded; a hook may add entries to ``headers``
        (the message's own, a fresh dict per message), for example a W3C
        ``traceparent``. A hook that raises fails the put. Used by
        ``pmsq.contrib.otel`` for producer spans.
        """
        self.put_hooks.append(hook)

    # -- topics ------------------------------------------------------------------
    def subscribe(self, pattern: str, *, queue: str) -> None:
        """Bind ``queue`` to topics matching ``pattern`` (``*`` one word, ``#`` zero or more).

        Stored, so every process routes the same way. Idempotent.
        """
        self.backend.bind(check_pattern(pattern), check_queue_name(queue))
        self._known_queues.add(queue)

    def unsubscribe(self, pattern: str, *, queue: str) -> bool:
        """Remove a binding; whether it existed."""
        return self.backend.unbind(check_pattern(pattern), check_queue_name(queue))

    def bindings(self) -> list[tuple[str, str]]:
        """All ``(pattern, queue)`` bindings."""
        return self.backend.bindings()

    def route(self, topic: str) -> list[str]:
        """Queues that a message published on ``topic`` goes to."""
        check_topic(topic)
        return sorted({q for p, q in self.backend.bindings() if matches(p, topic)})

    def publish(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        tenant: str | None = None,
        priority: int = 0,
        delay: float = 0,
        not_before: Any = None,
        dedup_id: str | None = None,
        headers: dict[str, Any] | None = None,
        connection: Any = None,
    ) -> list[str]:
        """Put one copy of the message into every queue bound to a matching pattern.

        All copies are stored in one transaction; a queue bound by several
        matching patterns gets one copy.

        Returns:
            The ids of the copies, in queue-name order.

        Raises:
            Unroutable: no binding matches (nothing is stored).
            The errors of ``Queue.put``.
        """
        queues = self.route(topic)
        if not queues:
            raise Unroutable(
                f"no queue is subscribed to topic {topic!r}; bind one with "
                f"broker.subscribe(pattern, queue=...) (bindings: {self.bindings() or 'none'})"
            )
        envs: list[Envelope] = []
        first_id: str | None = None
        for q in queues:
            env = build_envelope(
                self,
                q,
                payload,
                key=key,
                tenant=tenant,
                priority=priority,
                delay=delay,
                not_before=not_before,
                dedup_id=dedup_id,
                headers=headers,
                coalesce=False,
                topic=topic,
                correlation_id=first_id,
            )
            # Fan-out siblings share one correlation id, so a trace finds them together.
            first_id = first_id or env.correlation_id
            envs.append(env)
        if connection is not None:
            self.backend.capabilities.require(self.backend.name, "transactional_put")
        return self._store(envs, connection=connection)

    # -- handlers ------------------------------------------------------------------
    def handler(
        self,
        queue: str,
        *,
        concurrency: int | None = None,
        timeout: float | None = None,
        tenant_concurrency: int | None = None,
    ) -> Callable[[F], F]:
        """Register a sync or async function as the handler of ``queue``.

        The handler receives a ``pmsq.Message``; returning acks, raising
        ``pmsq.Retry`` retries, ``pmsq.Reject`` dead-letters, anything else
        retries with backoff until ``max_attempts``.

        Raises:
            ConfigurationError: invalid options, or ``queue`` already has a handler.
        """
        check_queue_name(queue)
        for label, value in (
            ("concurrency", concurrency),
            ("tenant_concurrency", tenant_concurrency),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigurationError(f"{label} must be None or an int >= 1, got {value!r}")
        if timeout is not None and not (
            isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0
        ):
            raise ConfigurationError(f"timeout must be None or seconds > 0, got {timeout!r}")

        def register(fn: F) -> F:
            if queue in self.handlers:
                raise ConfigurationError(f"queue {queue!r} already has a handler")
            self.handlers[queue] = HandlerSpec(
                queue=queue,
                fn=fn,
                concurrency=concurrency,
                timeout=timeout,
                tenant_concurrency=tenant_concurrency,
            )
            self.queue(queue)
            return fn

        return register

    # -- exactly-once ---------------------------------------------------------------
    def once(
        self, message: Message, *, connection: Any, consumer: str | None = None
    ) -> contextlib.AbstractContextManager[bool]:
        """``with broker.once(msg, connection=app_conn) as first:`` for exactly-once effects.

        ``first`` is True when this message id (per ``consumer``, default the
        message's queue) was not yet recorded in the app's database. The record
        is written through ``connection`` and committed only by the app, with
        its effects.
        """
        return Once.of(self.backend, "once").once(message, connection, consumer)

    # -- operators -------------------------------------------------------------------
    def stats(self, queue: str | None = None) -> Any:
        """``Stats`` for every queue, or ``QueueStats`` for ``queue``."""
        if queue is None:
            return self.backend.stats(None, now=self.clock.time())
        return self._queue_stats(check_queue_name(queue), None)

    def _queue_stats(self, queue: str, tenant: str | None) -> QueueStats:
        snap: Stats = self.backend.stats(queue, now=self.clock.time(), tenant=tenant)
        return snap.queues.get(queue) or QueueStats(name=queue)

    def alert(
        self,
        queue: str,
        *,
        max_depth: int | None = None,
        max_age: float | None = None,
        max_failure_rate: float | None = None,
        dead_letters: int | None = None,
        callback: Callable[[Alert], object] | None = None,
    ) -> AlertRule:
        """Set the alert rule of ``queue``; stored, so monitors in other processes see it.

        Thresholds left ``None`` fall back to ``pmsq.alerts.DEFAULT_RULE``
        (any dead letter; a message waiting over five minutes); a call with no
        threshold removes the stored rule. ``callback(alert)`` runs in this
        process when :meth:`check_alerts` finds a new alert on the queue.

        Args:
            queue: Queue name.
            max_depth: Warn above this many waiting and in-flight messages.
            max_age: Warn when the oldest waiting message is older (seconds).
            max_failure_rate: Critical above this failed share (0..1) over the last minute.
            dead_letters: Critical above this many dead letters (0: any).
            callback: Called with each new ``pmsq.Alert`` of this queue.

        Returns:
            The stored rule.

        Raises:
            ConfigurationError: invalid name or threshold, or the backend cannot store rules.
        """
        rule = AlertRule(
            queue=check_queue_name(queue),
            max_depth=max_depth,
            max_age=max_age,
            max_failure_rate=max_failure_rate,
            dead_letters=dead_letters,
        )
        save_rule(self.backend, rule)
        self._alert_book.set_callback(queue, callback)
        return rule

    def check_alerts(self) -> list[Alert]:
        """Evaluate every queue against its rule; call callbacks of alerts that just started.

        Returns:
            The alerts raised now (also those already raised at the last check).
        """
        snap: Stats = self.stats()
        alerts = evaluate(snap, load_rules(self.backend, snap.queues))
        self._alert_book.fire(alerts)
        return alerts

    def dead_letters(self, queue: str) -> DeadLetters:
        """The dead letters of ``queue``: ``.list()``, ``.redrive(ids)``, ``.purge(ids)``."""
        return DeadLetters(self, check_queue_name(queue))

    def tenant(self, tenant: str) -> Any:
        """A handle that sees and touches only ``tenant``'s messages.

        Raises:
            ConfigurationError: invalid tenant id.
        """
        from pmsq.tenant import TenantHandle

        if check_tenant(tenant) is None:
            raise ConfigurationError("tenant() needs a tenant id, got None")
        return TenantHandle(self, tenant)

    # -- internals shared by Queue, Delivery and the workers ------------------------------
    def _store(self, envs: Sequence[Envelope], *, connection: Any = None) -> list[str]:
        if connection is not None:
            outbox = TransactionalPut.of(self.backend, "put(connection=)")
            return outbox.put_in_transaction(envs, now=self.clock.time(), connection=connection)
        ids = self.backend.put_many(envs, now=self.clock.time())
        for q in {e.queue for e in envs}:
            self._notify(q)
        return ids

    def _message(self, env: Envelope, attempt: int, *, lenient: bool = False) -> Message:
        """Rebuild a ``Message``; ``lenient`` (operator reads) shows undecodable bodies as bytes.

        Peeking and listing dead letters must work exactly when a body is
        damaged or written by another codec: that is when an operator looks.
        """
        if env.format == BYTES_FORMAT:
            payload: Any = env.data
        elif lenient:
            from pmsq.errors import SerializationError

            try:
                payload = self._decode(env)
            except SerializationError:
                payload = env.data
        else:
            payload = self._decode(env)
        return Message(
            id=env.id,
            queue=env.queue,
            payload=payload,
            key=env.key,
            tenant=env.tenant,
            priority=env.priority,
            headers=decode_headers(env.headers),
            attempt=attempt,
            enqueued_at=utc_from_epoch(env.enqueued_at),
            dedup_id=env.dedup_id,
            topic=env.topic,
            correlation_id=env.correlation_id,
            causation_id=env.causation_id,
        )

    def _decode(self, env: Envelope) -> Any:
        if env.format != self.codec.format:
            from pmsq.errors import SerializationError

            raise SerializationError(
                f"message {env.id} was written with codec {env.format!r}, but this broker "
                f"uses {self.codec.format!r}; connect with that codec to read it"
            )
        return self.codec.decode(env.data)

    def _deliveries(self, claimed: Sequence[Claimed]) -> list[Delivery]:
        out = []
        for c in claimed:
            config = self.queue_config(c.envelope.queue)
            try:
                message = self._message(c.envelope, c.attempt)
            except Exception as exc:
                # An undecodable body can never succeed: dead-letter it, keep the rest flowing.
                from pmsq.policy import describe_error

                error_type, text = describe_error(exc)
                self.backend.dead_letter(
                    c.receipt,
                    now=self.clock.time(),
                    reason=f"payload cannot be decoded: {exc}",
                    error_type=error_type,
                    traceback=text,
                    duration_ms=None,
                )
                continue
            out.append(Delivery(self, c, message, config))
        return out

    def _notify(self, queue: str) -> None:
        self._wakeups.notify(queue)

    def _wait(self, queue: str, timeout: float | None) -> None:
        """Sleep until a local put to ``queue``, the next due time, or the poll interval."""
        self._wakeups.wait(queue, timeout)

    def _changes(self, queues: Sequence[str]) -> tuple[int, int]:
        """A token of local and store changes (see :meth:`pmsq.wakeups.WakeUps.changes`)."""
        return self._wakeups.changes(queues)

    def _wait_any(
        self,
        queues: Sequence[str],
        since: object,
        timeout: float,
        wake: Callable[[], bool] | None = None,
    ) -> None:
        """One idle wait for the workers (see :meth:`pmsq.wakeups.WakeUps.wait_any`)."""
        self._wakeups.wait_any(queues, since, timeout, wake)

    def _kick(self) -> None:
        """Make every local waiter re-check its condition (safe in a signal handler)."""
        self._wakeups.kick()


def connect(
    url: str,
    *,
    durability: str = "full",
    max_payload_bytes: int = 1_048_576,
    busy_timeout: float = 30.0,
    clock: Clock | None = None,
    codec: Codec | None = None,
    poll_interval: float = 0.05,
    rng: random.Random | None = None,
    history: dt.timedelta | float | None = DEFAULT_HISTORY,
    **backend_options: Any,
) -> Broker:
    """Open a store and return its ``Broker``.

    Args:
        url: ``sqlite:///path.db``, a plain path, or a URL of an installed plugin
            (``postgresql://...``, ``amqp://...``).
        durability: ``"full"`` (survives power loss), ``"normal"`` (survives a
            process crash) or ``"memory"`` (no fsync; tests).
        max_payload_bytes: Largest encoded payload accepted by ``put``.
        busy_timeout: Seconds to wait for a lock held by another process.
        clock: Time source (``pmsq.testing.ManualClock`` in tests).
        codec: Payload codec (default strict JSON).
        poll_interval: Longest an idle consumer waits before looking for work
            written by other processes.
        rng: Random source for backoff jitter.
        history: How long the message journal (``pmsq trace``) keeps events:
            a ``timedelta`` or seconds; default three days; ``None`` keeps no
            journal at all. Pruned automatically. A backend without the
            ``history`` capability ignores the default and refuses any other
            retention.

    Raises:
        ConfigurationError: bad option or unknown URL scheme.
        StorageError: the store is corrupt, foreign, from a newer pmsq, or unreachable.
    """
    if durability not in ("full", "normal", "memory"):
        raise ConfigurationError(
            f"durability must be 'full', 'normal' or 'memory', got {durability!r}"
        )
    if (
        isinstance(busy_timeout, bool)
        or not isinstance(busy_timeout, (int, float))
        or not (0 <= busy_timeout < 1e6)
    ):
        raise ConfigurationError(f"busy_timeout must be seconds >= 0, got {busy_timeout!r}")
    # Checked before the store is opened: a typo must neither create the file
    # nor leave a connection to it open.
    _check_broker_options(max_payload_bytes, poll_interval)
    retention = _history_seconds(history)
    backend = open_backend(url, durability=durability, busy_timeout=busy_timeout, **backend_options)
    if isinstance(backend, History) or (history is not DEFAULT_HISTORY and retention is not None):
        try:
            History.of(backend, "history=").set_history(retention)
        except BaseException:
            backend.close()
            raise
    return Broker(
        backend,
        clock=clock,
        codec=codec,
        max_payload_bytes=max_payload_bytes,
        poll_interval=poll_interval,
        rng=rng,
    )
