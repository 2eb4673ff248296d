"""Alert rules: thresholds on a queue's figures, stored so every process sees them.

A rule (``broker.alert("email", max_age=60, dead_letters=0)``) is kept in the
store, so ``pmsq monitor`` and ``pmsq stats`` in other processes colour and
report the same conditions the app watches. Evaluation is pure: ``evaluate``
turns a ``Stats`` snapshot and the rules into ``Alert`` values. Callbacks are
the app's own, in memory: ``broker.check_alerts()`` calls each one once when
its alert starts, not again while it lasts.

Queues without a stored rule are checked against :data:`DEFAULT_RULE`
(any dead letter is critical; a message waiting over five minutes is a
warning). A stored rule overrides the default threshold by threshold.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from pmsq.backends.families import Settings
from pmsq.errors import ConfigurationError
from pmsq.stats import QueueStats, Stats

if TYPE_CHECKING:
    from pmsq.backends.base import Backend

__all__ = [
    "DEFAULT_RULE",
    "Alert",
    "AlertBook",
    "AlertRule",
    "check_queue",
    "evaluate",
    "load_rules",
    "meta_key",
    "save_rule",
]

log = logging.getLogger("pmsq.alerts")

Level = Literal["warning", "critical"]
AlertCallback = Callable[["Alert"], object]
_PREFIX = "alert:"


def _opt_nonneg(name: str, *, integer: bool = False, at_most: float | None = None) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if value is None:
            return
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            kind = "an int" if integer else "a number"
            raise ConfigurationError(f"{name} must be None or {kind} >= 0, got {value!r}")
        assert isinstance(value, (int, float))
        if not math.isfinite(value) or value < 0 or (at_most is not None and value > at_most):
            bound = f" and <= {at_most}" if at_most is not None else ""
            raise ConfigurationError(f"{name} must be >= 0{bound}, got {value!r}")

    return check


@attrs.frozen
class AlertRule:
    """Thresholds for one queue; ``None`` leaves a threshold to the default rule.

    Attributes:
        queue: The queue the rule watches.
        max_depth: Warning when ready + delayed + in flight exceeds this.
        max_age: Warning when the oldest waiting message is older (seconds).
        max_failure_rate: Critical when failed / (processed + failed) over the
            last minute exceeds this fraction (0..1).
        dead_letters: Critical when the queue holds more dead letters than this
            (``0``: any dead letter).
    """

    queue: str
    max_depth: int | None = attrs.field(
        default=None, validator=_opt_nonneg("max_depth", integer=True)
    )
    max_age: float | None = attrs.field(default=None, validator=_opt_nonneg("max_age"))
    max_failure_rate: float | None = attrs.field(
        default=None, validator=_opt_nonneg("max_failure_rate", at_most=1.0)
    )
    dead_letters: int | None = attrs.field(
        default=None, validator=_opt_nonneg("dead_letters", integer=True)
    )

    @property
    def empty(self) -> bool:
        """Whether the rule sets no threshold at all."""
        return all(
            v is None
            for v in (self.max_depth, self.max_age, self.max_failure_rate, self.dead_letters)
        )

    def over(self, default: AlertRule) -> AlertRule:
        """This rule with its unset thresholds taken from ``default``."""
        return AlertRule(
            queue=self.queue,
            max_depth=default.max_depth if self.max_depth is None else self.max_depth,
            max_age=default.max_age if self.max_age is None else self.max_age,
            max_failure_rate=(
                default.max_failure_rate if self.max_failure_rate is None else self.max_failure_rate
            ),
            dead_letters=default.dead_letters if self.dead_letters is None else self.dead_letters,
        )

    def to_json(self) -> str:
        """The stored form (thresholds only; the queue is the storage key)."""
        data = attrs.asdict(self)
        del data["queue"]
        return json.dumps({k: v for k, v in data.items() if v is not None}, sort_keys=True)

    @classmethod
    def from_json(cls, queue: str, text: str) -> AlertRule:
        """Rebuild a stored rule, ignoring fields this version does not know.

        Raises:
            ConfigurationError: the stored text is not a rule.
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"stored alert rule of {queue!r} is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigurationError(f"stored alert rule of {queue!r} is not an object")
        known = {f.name for f in attrs.fields(cls)} - {"queue"}
        return cls(queue=queue, **{k: v for k, v in data.items() if k in known})


#: Applied to every queue, threshold by threshold, unless its own rule says otherwise.
DEFAULT_RULE = AlertRule(queue="*", max_age=300.0, dead_letters=0)


@attrs.frozen
class Alert:
    """A rule crossed at one instant.

    Attributes:
        queue: The queue.
        tenant: The tenant, for a per-tenant figure; ``None`` for the whole queue.
        metric: ``"depth"``, ``"oldest_age"``, ``"failure_rate"``, ``"dead"``,
            ``"schedule:<name>"`` for a schedule that has not fired in time,
            ``"paused"`` / ``"circuit"`` for a pause or an open circuit breaker
            (``"paused:<key>"`` / ``"circuit:<key>"`` for one key; ``value`` is
            the seconds since it began).
        level: ``"warning"`` (yellow) or ``"critical"`` (red).
        value: The figure observed.
        threshold: The rule's limit it exceeded.
    """

    queue: str
    tenant: str | None
    metric: str
    level: Level
    value: float
    threshold: float

    @property
    def message(self) -> str:
        """One human line, e.g. ``email: 3 dead letters (alert above 0)``."""
        where = self.queue if self.tenant is None else f"{self.queue} [{self.tenant}]"
        if self.metric == "dead":
            what = f"{int(self.value)} dead letter{'s' if self.value != 1 else ''}"
            limit = f"{int(self.threshold)}"
        elif self.metric == "depth":
            what, limit = f"{int(self.value)} messages waiting", f"{int(self.threshold)}"
        elif self.metric == "oldest_age":
            what, limit = f"oldest message waited {self.value:.0f}s", f"{self.threshold:g}s"
        elif self.metric.split(":")[0] in ("paused", "circuit"):  # pmsq.control
            kind, _, key = self.metric.partition(":")
            what = "circuit open" if kind == "circuit" else "paused"
            scope = f" key {key!r}" if key else ""
            return f"{where}:{scope} {what} for {self.value:.0f}s"
        elif self.metric.startswith("schedule:"):  # pmsq.schedules.health
            what = f"schedule {self.metric[9:]!r} has not fired for {self.value:.0f}s"
            limit = f"{self.threshold:g}s"
        else:
            what, limit = f"{self.value:.0%} of deliveries failed", f"{self.threshold:.0%}"
        return f"{where}: {what} (alert above {limit})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict, with ``message``."""
        return {**attrs.asdict(self), "message": self.message}


def failure_rate(qs: QueueStats) -> float | None:
    """Failed share of finished deliveries over the last minute, or ``None`` if none."""
    done = qs.processed_per_minute + qs.failed_per_minute
    return None if done == 0 else qs.failed_per_minute / done


def check_queue(qs: QueueStats, rule: AlertRule, tenant: str | None = None) -> list[Alert]:
    """The alerts ``rule`` raises on one queue's (or one tenant's) figures.

    Args:
        qs: The figures.
        rule: The effective rule (already merged over the default).
        tenant: Set when ``qs`` is one tenant's share of the queue.
    """
    out: list[Alert] = []

    def add(metric: str, level: Level, value: float, threshold: float) -> None:
        out.append(Alert(qs.name, tenant, metric, level, float(value), float(threshold)))

    if rule.dead_letters is not None and qs.dead > rule.dead_letters:
        add("dead", "critical", qs.dead, rule.dead_letters)
    rate = failure_rate(qs)
    if rule.max_failure_rate is not None and rate is not None and rate > rule.max_failure_rate:
        add("failure_rate", "critical", rate, rule.max_failure_rate)
    if rule.max_depth is not None and qs.depth > rule.max_depth:
        add("depth", "warning", qs.depth, rule.max_depth)
    if rule.max_age is not None and qs.oldest_age is not None and qs.oldest_age > rule.max_age:
        add("oldest_age", "warning", qs.oldest_age, rule.max_age)
    return out


def evaluate(
    stats: Stats,
    rules: Mapping[str, AlertRule],
    *,
    default: AlertRule = DEFAULT_RULE,
    tenants: bool = False,
) -> list[Alert]:
    """Every alert raised by ``stats``: pure, so the monitor, the CLI and tests share it.

    Args:
        stats: A snapshot.
        rules: Stored rules by queue name.
        default: Thresholds for what a queue's own rule leaves unset.
        tenants: Also check each tenant's share of each queue.

    Returns:
        Alerts, critical ones first, then by queue.
    """
    out: list[Alert] = []
    for name, qs in stats.queues.items():
        rule = rules.get(name, AlertRule(queue=name)).over(default)
        out.extend(check_queue(qs, rule))
        if tenants:
            for tenant, ts in qs.tenants.items():
                out.extend(check_queue(ts, rule, tenant))
    out.sort(key=lambda a: (a.level != "critical", a.queue, a.tenant or "", a.metric))
    return out


def meta_key(queue: str) -> str:
    """The store's meta key under which ``queue``'s rule is kept."""
    return _PREFIX + queue


def save_rule(backend: Backend, rule: AlertRule) -> None:
    """Store ``rule`` (an empty rule removes the stored one).

    Raises:
        ConfigurationError: the backend cannot store settings.
    """
    settings = Settings.of(backend, "set_meta")
    settings.set_meta(meta_key(rule.queue), None if rule.empty else rule.to_json())


def load_rules(backend: Backend, queues: Iterable[str]) -> dict[str, AlertRule]:
    """The stored rules of ``queues``; ``{}`` on a backend that cannot store them.

    A stored rule that cannot be read (written by a newer pmsq) is skipped
    with a log line rather than breaking the monitor.
    """
    rules: dict[str, AlertRule] = {}
    if not isinstance(backend, Settings):
        return rules
    for queue in queues:
        try:
            text = backend.get_meta(meta_key(queue))
        except ConfigurationError:
            return {}
        if text is None:
            continue
        try:
            rules[queue] = AlertRule.from_json(queue, text)
        except (ConfigurationError, TypeError) as exc:
            log.warning("ignoring unreadable alert rule of %r: %s", queue, exc)
    return rules


class AlertBook:
    """A broker's in-memory alert callbacks and which alerts are currently raised."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.callbacks: dict[str, AlertCallback] = {}
        self._active: set[tuple[str, str | None, str]] = set()

    def set_callback(self, queue: str, callback: AlertCallback | None) -> None:
        """Register (or with ``None`` remove) the callback of ``queue``.

        A new callback also hears about alerts already raised on the queue
        (at the next check), so nothing ongoing goes unreported.
        """
        with self._lock:
            if callback is None:
                self.callbacks.pop(queue, None)
            else:
                self.callbacks[queue] = callback
            self._active = {k for k in self._active if k[0] != queue}

    def fire(self, alerts: Iterable[Alert]) -> None:
        """Call callbacks for alerts that were not raised at the previous check.

        A failing callback is logged, never raised: a broken pager hook must
        not stop the app that checks alerts.
        """
        current = list(alerts)
        with self._lock:
            ids = {(a.queue, a.tenant, a.metric) for a in current}
            new = [a for a in current if (a.queue, a.tenant, a.metric) not in self._active]
            self._active = ids
            calls = [(self.callbacks[a.queue], a) for a in new if a.queue in self.callbacks]
        for callback, alert in calls:
            try:
                callback(alert)
            except Exception:
                log.exception("alert callback for %r failed", alert.queue)
