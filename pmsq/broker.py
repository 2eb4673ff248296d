"""``Broker``: the facade an app holds. ``pmsq.connect(url)`` returns one.

The Broker keeps what concerns the whole connection (declarations, bindings,
handlers, alerts) and hands each part it gives out the shared ``Runtime``,
never itself, so no part imports this module:

==================  ==========================================================
``runtime.py``      ``Runtime``: store, codec, clock, config cache, put hooks
``wakeups.py``      ``WakeUps``: local wake-ups and the idle wait of consumers
``envelopes.py``    put options -> ``Envelope``; ``Envelope`` -> ``Message``
``routing.py``      topic -> queues; ``publish``
``queue.py``        ``Queue``: put, get, peek
``leases.py``       claims -> ``Delivery`` values; the wait loop of ``get``
``delivery.py``     ``Delivery``: the settle verbs; ``settle_many``
``deadletters.py``  ``DeadLetters``: list, redrive, purge
``tenant.py``       ``TenantHandle``: one tenant's view
==================  ==========================================================
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import random
from collections.abc import Callable
from typing import Any, TypeVar

from pmsq import control, routing
from pmsq.alerts import Alert, AlertBook, AlertRule, evaluate, load_rules, save_rule
from pmsq.backends.base import Backend
from pmsq.backends.families import History, Once
from pmsq.backends.registry import open_backend
from pmsq.clock import Clock, SystemClock
from pmsq.codec import Codec, JsonCodec
from pmsq.config import (
    Backoff,
    Circuit,
    QueueConfig,
    RateLimit,
    check_queue_name,
    check_tenant,
)
from pmsq.connections import joined_once
from pmsq.deadletters import DeadLetters
from pmsq.errors import ConfigurationError
from pmsq.handlers import HandlerSpec
from pmsq.message import Message
from pmsq.queue import Queue
from pmsq.runtime import PutHook, Runtime
from pmsq.schedules.schedule import Schedule
from pmsq.stats import Stats
from pmsq.tenant import TenantHandle
from pmsq.topics import check_pattern

__all__ = ["Broker", "PutHook", "connect"]

F = TypeVar("F", bound=Callable[..., Any])
#: ``connect(history=)`` default: keep three days of message history. Compared by
#: identity, so only a retention the caller chose is refused by backends without one.
DEFAULT_HISTORY = dt.timedelta(days=3)


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

    A facade: what its queue handles, deliveries and workers share (store,
    codec, clock, configuration cache, wake-ups) lives in :attr:`runtime`,
    which it hands to each of them, so none of them depends on the Broker.
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
        #: What the handles, deliveries and workers of this broker share (for
        #: pmsq's own drivers and tools; apps use the Broker's methods).
        self.runtime = Runtime(
            backend,
            clock=clock or SystemClock(),
            codec=codec or JsonCodec(),
            rng=rng or random.Random(),
            max_payload_bytes=max_payload_bytes,
            poll_interval=float(poll_interval),
        )
        self.handlers: dict[str, HandlerSpec] = {}
        self.middleware: list[Any] = []
        self._alert_book = AlertBook()

    @property
    def backend(self) -> Backend:
        """The store driver."""
        return self.runtime.backend

    @property
    def clock(self) -> Clock:
        """The time source."""
        return self.runtime.clock

    @property
    def codec(self) -> Codec:
        """The payload codec."""
        return self.runtime.codec

    @property
    def rng(self) -> random.Random:
        """The random source for backoff jitter."""
        return self.runtime.rng

    @property
    def max_payload_bytes(self) -> int:
        """Largest encoded payload a put accepts."""
        return self.runtime.max_payload_bytes

    @property
    def poll_interval(self) -> float:
        """Longest an idle consumer waits before looking for other processes' writes."""
        return self.runtime.wakeups.poll_interval

    @property
    def put_hooks(self) -> list[PutHook]:
        """The hooks added with :meth:`add_put_hook`, in order."""
        return self.runtime.put_hooks

    def __repr__(self) -> str:
        return f"<Broker {getattr(self.backend, 'url', self.backend.name)!r}>"

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store connection. Idempotent."""
        self.runtime.close()

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
        circuit: Circuit | None = None,
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
            circuit: A ``pmsq.Circuit`` breaker: a scope whose handlers keep
                failing pauses itself (backends with the ``control`` capability).

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
            circuit=circuit,
        )
        if rate_limit is not None:
            self.runtime.require("rate_limits")
        if circuit is not None:
            self.runtime.require("control")
        self.backend.declare_queue(config)
        self.runtime.declared(config)
        return Queue(self.runtime, name)

    def queue(self, name: str) -> Queue:
        """Return the handle of queue ``name``, creating it with defaults if undeclared.

        Raises:
            ConfigurationError: invalid name.
        """
        self.runtime.ensure_queue(check_queue_name(name))
        return Queue(self.runtime, name)

    def queues(self) -> list[QueueConfig]:
        """Every declared queue's configuration."""
        return self.backend.list_queues()

    def queue_config(self, name: str) -> QueueConfig:
        """A queue's configuration, cached for about a second."""
        return self.runtime.queue_config(name)

    def add_put_hook(self, hook: PutHook) -> None:
        """Call ``hook(queue, message_id, topic, headers)`` for every message put or published.

        Hooks run in the putting thread (inside a handler: in its context)
        before the message's headers are encoded; a hook may add entries to ``headers``
        (the message's own, a fresh dict per message), for example a W3C
        ``traceparent``. A hook that raises fails the put. Used by
        ``pmsq.contrib.otel`` for producer spans.
        """
        self.runtime.put_hooks.append(hook)

    # -- topics ------------------------------------------------------------------
    def subscribe(self, pattern: str, *, queue: str) -> None:
        """Bind ``queue`` to topics matching ``pattern`` (``*`` one word, ``#`` zero or more).

        Stored, so every process routes the same way. Idempotent.
        """
        self.backend.bind(check_pattern(pattern), check_queue_name(queue))
        self.runtime.known(queue)

    def unsubscribe(self, pattern: str, *, queue: str) -> bool:
        """Remove a binding; whether it existed."""
        return self.backend.unbind(check_pattern(pattern), check_queue_name(queue))

    def bindings(self) -> list[tuple[str, str]]:
        """All ``(pattern, queue)`` bindings."""
        return self.backend.bindings()

    def route(self, topic: str) -> list[str]:
        """Queues that a message published on ``topic`` goes to.

        Raises:
            ConfigurationError: ``topic`` is not a valid topic.
        """
        return routing.route(self.runtime, topic)

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
        return routing.publish(
            self.runtime,
            topic,
            payload,
            key=key,
            tenant=tenant,
            priority=priority,
            delay=delay,
            not_before=not_before,
            dedup_id=dedup_id,
            headers=headers,
            connection=connection,
        )

    # -- handlers ------------------------------------------------------------------
    def handler(
        self,
        queue: str,
        *,
        concurrency: int | None = None,
        timeout: float | None = None,
        tenant_concurrency: int | None = None,
        isolation: str = "thread",
    ) -> Callable[[F], F]:
        """Register a sync or async function as the handler of ``queue``.

        The handler receives a ``pmsq.Message``; returning acks, raising
        ``pmsq.Retry`` retries, ``pmsq.Reject`` dead-letters, anything else
        retries with backoff until ``max_attempts``. ``isolation="process"``
        runs it in a child process killed at ``timeout`` (see docs/workers.md).

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
                isolation=isolation,
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
        once = Once.of(self.backend, "once")
        return joined_once(connection, lambda raw: once.once(message, raw, consumer))

    # -- operators -------------------------------------------------------------------
    def stats(self, queue: str | None = None) -> Any:
        """``Stats`` for every queue, or ``QueueStats`` for ``queue``."""
        if queue is None:
            return self.runtime.stats()
        return self.runtime.queue_stats(check_queue_name(queue), None)

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

        A schedule whose next slot is over a minute overdue (no worker fired
        it) is a warning on its queue too, and so is each pause in force (an
        open circuit breaker is critical).

        Returns:
            The alerts raised now (also those already raised at the last check).
        """
        from pmsq.schedules.health import read_schedules, schedule_alerts

        snap: Stats = self.stats()
        alerts = evaluate(snap, load_rules(self.backend, snap.queues))
        alerts += schedule_alerts(read_schedules(self.runtime), self.clock.time())
        alerts += control.pause_alerts(self.runtime)
        self._alert_book.fire(alerts)
        return alerts

    # -- pauses (pmsq.control) -------------------------------------------------------
    def pause(
        self,
        queue: str,
        tenant: str | None = None,
        key: str | None = None,
        until: dt.datetime | float | None = None,
        reason: str = "",
    ) -> control.Pause:
        """Stop claims of a queue, of one tenant of it, or of one key; stored for every process.

        Puts are still accepted, messages in flight finish normally, and
        nothing spends an attempt while paused. Pausing a scope again
        replaces its pause.

        Args:
            queue: The queue.
            tenant: Only this tenant's messages.
            key: Only this key (of ``tenant``; without it, the tenantless key):
                other keys flow.
            until: Resume by itself at this time (aware datetime or epoch seconds).
            reason: Why (shown in stats, the monitor and ``pmsq trace``).

        Returns:
            The stored ``pmsq.Pause``.

        Raises:
            ConfigurationError: invalid arguments, ``until`` not in the future,
                or a backend without the ``control`` capability.
        """
        return control.pause(
            self.runtime, queue, tenant=tenant, key=key, until=until, reason=reason
        )

    def resume(self, queue: str, tenant: str | None = None, key: str | None = None) -> bool:
        """Lift the pause of exactly this scope; whether one was in force.

        ``resume(queue)`` lifts only the queue-wide pause, not tenant or key
        pauses; resuming an open circuit closes it.

        Raises:
            ConfigurationError: invalid arguments or a backend without ``control``.
        """
        return control.resume(self.runtime, queue, tenant=tenant, key=key)

    def pauses(self) -> list[control.Pause]:
        """Every ``pmsq.Pause`` in force (circuit breakers' included), by queue, tenant, key.

        Raises:
            ConfigurationError: a backend without the ``control`` capability.
        """
        return control.pauses(self.runtime)

    def dead_letters(self, queue: str) -> DeadLetters:
        """The dead letters of ``queue``: ``.list()``, ``.redrive(ids)``, ``.purge(ids)``."""
        return DeadLetters(self.runtime, check_queue_name(queue))

    def tenant(self, tenant: str) -> TenantHandle:
        """A handle that sees and touches only ``tenant``'s messages.

        Raises:
            ConfigurationError: invalid tenant id.
        """
        if check_tenant(tenant) is None:
            raise ConfigurationError("tenant() needs a tenant id, got None")
        return TenantHandle(self.runtime, tenant)

    # -- schedules (pmsq.schedules) ---------------------------------------------------------
    def schedule(
        self,
        name: str,
        *,
        queue: str,
        cron: str | None = None,
        every: float | None = None,
        tz: str = "UTC",
        payload: Any = None,
        key: str | None = None,
        tenant: str | None = None,
        priority: int = 0,
        headers: dict[str, Any] | None = None,
        catch_up: str = "latest",
    ) -> Schedule:
        """Create or update a stored schedule; every worker of the store fires its slots.

        Args:
            name: Unique per store (per tenant for a tenant's schedule).
            queue: A declared queue that receives one message per slot.
            cron: Five-field cron expression read on the wall clock of ``tz``.
            every: Or a period in seconds; slots start one period from now.
            tz: IANA time zone of ``cron``.
            payload: Payload of each message.
            key: Key of each message.
            tenant: Tenant of the schedule and its messages.
            priority: Priority of each message.
            headers: Headers of each message (``pmsq.schedule`` is added).
            catch_up: Missed slots after downtime: ``"latest"`` one message,
                ``"all"`` one each, ``"none"`` none.

        Returns:
            The stored ``pmsq.Schedule``.

        Raises:
            ConfigurationError: bad cron, zone, period, name or option, an
                unknown queue, or a backend without schedules (nothing is stored).
        """
        from pmsq.schedules.service import declare

        return declare(
            self.runtime,
            name,
            queue=queue,
            cron=cron,
            every=every,
            tz=tz,
            payload=payload,
            key=key,
            tenant=tenant,
            priority=priority,
            headers=headers,
            catch_up=catch_up,
        )

    def schedules(self) -> list[Schedule]:
        """Every stored ``pmsq.Schedule`` (all tenants'), ordered by tenant and name."""
        from pmsq.schedules.service import list_schedules

        return list_schedules(self.runtime, tenant=None, all_tenants=True)

    def unschedule(self, name: str, *, tenant: str | None = None) -> bool:
        """Delete a schedule (the tenantless one unless ``tenant``); whether it existed."""
        from pmsq.schedules.service import remove

        return remove(self.runtime, name, tenant=tenant)

    def run_schedules(self) -> int:
        """Fire every slot due now, exactly once across processes; how many messages it made."""
        from pmsq.schedules.service import run_due

        return run_due(self.runtime)


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
