"""Queue configuration values: ``Backoff``, ``RateLimit`` and ``QueueConfig``.

All are frozen attrs classes; a queue's whole configuration travels as one
``QueueConfig`` that backends store, so every process sees the same options.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any, Literal

import attrs

from pmsq.errors import ConfigurationError

__all__ = [
    "Backoff",
    "Circuit",
    "QueueConfig",
    "RateLimit",
    "check_key",
    "check_queue_name",
    "check_tenant",
]

OnKeyFailure = Literal["continue", "block"]

# Names double as SQL values and CLI arguments; a conservative alphabet keeps
# them printable, greppable and safe to route with topic patterns. Checked with
# fullmatch: "$" would also match before a final newline and let "orders\n" in.
_QUEUE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")
_TENANT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-@]{0,127}")
MAX_KEY_LEN = 512


def check_queue_name(name: object) -> str:
    """Return ``name`` if it is a valid queue name.

    Raises:
        ConfigurationError: if it is not a string of 1-200 characters from
            ``A-Z a-z 0-9 _ . -`` starting with a letter, digit or ``_``.
    """
    if not isinstance(name, str) or not _QUEUE_RE.fullmatch(name):
        raise ConfigurationError(
            f"invalid queue name {name!r}: use 1-200 characters from A-Z a-z 0-9 _ . - "
            "starting with a letter, digit or _"
        )
    return name


def check_tenant(tenant: object) -> str | None:
    """Return ``tenant`` if it is ``None`` or a valid tenant id.

    Raises:
        ConfigurationError: if it is not ``None`` or a string of 1-128
            characters from ``A-Z a-z 0-9 _ . : - @``.
    """
    if tenant is None:
        return None
    if not isinstance(tenant, str) or not _TENANT_RE.fullmatch(tenant):
        raise ConfigurationError(
            f"invalid tenant {tenant!r}: use 1-128 characters from A-Z a-z 0-9 _ . : - @ "
            "starting with a letter, digit or _"
        )
    return tenant


def check_key(key: object) -> str | None:
    """Return ``key`` if it is ``None`` or a non-empty printable string of at most 512 chars.

    Raises:
        ConfigurationError: otherwise.
    """
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LEN or not key.isprintable():
        raise ConfigurationError(
            f"invalid key {key!r}: use a non-empty printable string of at most "
            f"{MAX_KEY_LEN} characters"
        )
    return key


def _finite_nonneg(name: str) -> Any:
    def check(_inst: object, _attr: object, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ConfigurationError(f"{name} must be a finite number >= 0, got {value!r}")

    return check


@attrs.frozen
class Backoff:
    """Exponential backoff with optional full jitter.

    The n-th retry (n >= 1) waits ``min(cap, base * factor ** (n - 1))``
    seconds; with ``jitter`` a uniformly random fraction of that ("full
    jitter"), which spreads retries of many failing messages apart.

    Args:
        base: Delay of the first retry, seconds.
        factor: Growth per retry (>= 1).
        cap: Largest delay, seconds.
        jitter: Use full jitter.
    """

    base: float = attrs.field(default=1.0, validator=_finite_nonneg("Backoff.base"))
    factor: float = attrs.field(default=2.0, validator=_finite_nonneg("Backoff.factor"))
    cap: float = attrs.field(default=300.0, validator=_finite_nonneg("Backoff.cap"))
    jitter: bool = True

    def __attrs_post_init__(self) -> None:
        if self.factor < 1:
            raise ConfigurationError(f"Backoff.factor must be >= 1, got {self.factor!r}")

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Return the delay before retry ``retry_number`` (1 = first retry).

        Args:
            retry_number: 1 for the first retry, 2 for the second, ...
            rng: Random source for jitter (injected in tests).
        """
        n = max(1, retry_number)
        # Clamp the exponent so huge attempt counts cannot overflow floats.
        exponent = min(n - 1, 1024)
        try:
            raw = self.base * self.factor**exponent
        except OverflowError:
            raw = math.inf
        ceiling = min(self.cap, raw)
        if self.jitter:
            return (rng or random).uniform(0.0, ceiling)
        return ceiling


RateScope = Literal["queue", "tenant", "key"]


@attrs.frozen
class RateLimit:
    """At most ``limit`` claims in any window of ``per`` seconds.

    Args:
        limit: Claims allowed per window (>= 1).
        per: Window length in seconds (> 0).
        scope: Count per ``"queue"``, per ``"tenant"`` or per ``"key"``.
    """

    limit: int
    per: float = 1.0
    scope: RateScope = "queue"

    def __attrs_post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ConfigurationError(f"RateLimit.limit must be an int >= 1, got {self.limit!r}")
        if (
            isinstance(self.per, bool)
            or not isinstance(self.per, (int, float))
            or not math.isfinite(self.per)
            or self.per <= 0
        ):
            raise ConfigurationError(f"RateLimit.per must be seconds > 0, got {self.per!r}")
        if self.scope not in ("queue", "tenant", "key"):
            raise ConfigurationError(
                f"RateLimit.scope must be 'queue', 'tenant' or 'key', got {self.scope!r}"
            )


CircuitScope = Literal["queue", "tenant", "key"]


@attrs.frozen
class Circuit:
    """A circuit breaker: a scope whose handlers keep failing pauses itself, then probes.

    After ``failures`` handler failures (exceptions, not ``Retry``,
    ``Reject`` or ``Snooze``) within ``within`` seconds in one scope, the
    scope is paused for ``open_for`` seconds with reason ``circuit open:
    <last error>``. Then one message of the scope goes through (the probe):
    its success closes the circuit, its failure opens it again. Messages
    held by an open circuit spend no attempts.

    Args:
        failures: Failures that open the circuit (int >= 1).
        within: The window they must fall in, seconds (> 0).
        open_for: How long it stays open before the probe, seconds (> 0).
        scope: What opens: the whole ``"queue"``, the failing ``"tenant"``
            or the failing ``"key"`` (of its tenant). Under ``"tenant"``
            tenantless messages count toward no breaker, and under ``"key"``
            unkeyed ones do not.

    Raises:
        ConfigurationError: an invalid value.
    """

    failures: int = 5
    within: float = 60.0
    open_for: float = 30.0
    scope: CircuitScope = "queue"

    def __attrs_post_init__(self) -> None:
        f = self.failures
        if isinstance(f, bool) or not isinstance(f, int) or f < 1:
            raise ConfigurationError(f"Circuit.failures must be an int >= 1, got {f!r}")
        for name in ("within", "open_for"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or not 0 < v <= 1e9
            ):
                raise ConfigurationError(f"Circuit.{name} must be seconds > 0, got {v!r}")
        if self.scope not in ("queue", "tenant", "key"):
            raise ConfigurationError(
                f"Circuit.scope must be 'queue', 'tenant' or 'key', got {self.scope!r}"
            )


def _opt_positive_int(name: str) -> Any:
    def check(_inst: object, _attr: object, value: int | None) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be None or an int >= 1, got {value!r}")

    return check


def _positive_number(name: str) -> Any:
    def check(_inst: object, _attr: object, value: float) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ConfigurationError(f"{name} must be a finite number > 0, got {value!r}")

    return check


def _check_attempts(_inst: object, _attr: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"max_attempts must be an int >= 1, got {value!r}")


def _check_on_key_failure(_inst: object, _attr: object, value: str) -> None:
    if value not in ("continue", "block"):
        raise ConfigurationError(f"on_key_failure must be 'continue' or 'block', got {value!r}")


def _check_dedup_window(_inst: object, _attr: object, value: float | None) -> None:
    if value is None:
        return
    _finite_nonneg("dedup_window")(_inst, _attr, value)


def _check_fallback(inst: QueueConfig, _attr: object, value: str | None) -> None:
    if value is None:
        return
    check_queue_name(value)
    if value == inst.name:
        raise ConfigurationError(f"queue {inst.name!r} cannot be its own fallback")


def _check_rate(_inst: object, _attr: object, value: RateLimit | None) -> None:
    if value is not None and not isinstance(value, RateLimit):
        raise ConfigurationError(f"rate_limit must be a pmsq.RateLimit or None, got {value!r}")


def _check_circuit(_inst: object, _attr: object, value: Circuit | None) -> None:
    if value is not None and not isinstance(value, Circuit):
        raise ConfigurationError(f"circuit must be a pmsq.Circuit or None, got {value!r}")


def _check_backoff(_inst: object, _attr: object, value: Backoff) -> None:
    if not isinstance(value, Backoff):
        raise ConfigurationError(f"backoff must be a pmsq.Backoff, got {value!r}")


@attrs.frozen
class QueueConfig:
    """Everything ``declare_queue`` accepts, validated. Stored by the backend."""

    name: str = attrs.field(validator=lambda _i, _a, v: check_queue_name(v))
    max_attempts: int = attrs.field(default=5, validator=_check_attempts)
    lease: float = attrs.field(default=30.0, validator=_positive_number("lease"))
    backoff: Backoff = attrs.field(factory=Backoff, validator=_check_backoff)
    fallback: str | None = attrs.field(default=None, validator=_check_fallback)
    on_key_failure: OnKeyFailure = attrs.field(default="continue", validator=_check_on_key_failure)
    dedup_window: float | None = attrs.field(default=300.0, validator=_check_dedup_window)
    max_depth: int | None = attrs.field(default=None, validator=_opt_positive_int("max_depth"))
    tenant_quota: int | None = attrs.field(
        default=None, validator=_opt_positive_int("tenant_quota")
    )
    rate_limit: RateLimit | None = attrs.field(default=None, validator=_check_rate)
    circuit: Circuit | None = attrs.field(default=None, validator=_check_circuit)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict (the stored form)."""
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueueConfig:
        """Rebuild from :meth:`to_dict` output, ignoring unknown fields from newer versions."""
        known = {f.name for f in attrs.fields(cls)}
        clean = {k: v for k, v in data.items() if k in known}
        if isinstance(clean.get("backoff"), dict):
            clean["backoff"] = Backoff(**clean["backoff"])
        if isinstance(clean.get("rate_limit"), dict):
            clean["rate_limit"] = RateLimit(**clean["rate_limit"])
        if isinstance(clean.get("circuit"), dict):
            clean["circuit"] = Circuit(**clean["circuit"])
        return cls(**clean)
