"""The ``PMSQ`` setting, read and checked in one place."""

from __future__ import annotations

from typing import Any

import attrs

from pmsq.errors import ConfigurationError

__all__ = ["PmsqSettings", "read_settings"]

_KNOWN = {"URL", "DATABASE", "OPTIONS", "QUEUES", "SUBSCRIPTIONS", "HANDLERS_MODULE"}


@attrs.frozen
class PmsqSettings:
    """``settings.PMSQ`` as checked values.

    Attributes:
        url: The store URL (``pmsq.connect``'s first argument).
        database: The ``DATABASES`` alias the store lives in (outbox puts go
            through its connection), or ``None`` when the store is elsewhere.
        options: Keyword arguments of ``pmsq.connect``.
        queues: Queue name -> ``declare_queue`` keyword arguments.
        subscriptions: Topic pattern -> queue names.
        handlers_module: Module name imported from every installed app.
    """

    url: str
    database: str | None = None
    options: dict[str, Any] = attrs.field(factory=dict)
    queues: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    subscriptions: dict[str, list[str]] = attrs.field(factory=dict)
    handlers_module: str = "pmsq_handlers"


def read_settings() -> PmsqSettings:
    """Read ``settings.PMSQ``.

    Returns:
        The checked settings.

    Raises:
        ConfigurationError: the setting is missing, has no ``URL``, an unknown
            key, or a value of the wrong type (the message names it).
    """
    from django.conf import settings

    raw = getattr(settings, "PMSQ", None)
    if raw is None:
        raise ConfigurationError(
            'settings.PMSQ is missing: add PMSQ = {"URL": "sqlite:///path/to/db.sqlite3"}'
        )
    if not isinstance(raw, dict):
        raise ConfigurationError(f"settings.PMSQ must be a dict, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        raise ConfigurationError(
            f"settings.PMSQ has unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_KNOWN))}"
        )
    url = raw.get("URL")
    if not isinstance(url, str) or not url:
        raise ConfigurationError(
            f'settings.PMSQ["URL"] must be the store URL, e.g. "sqlite:///db.sqlite3", got {url!r}'
        )
    database = raw.get("DATABASE")
    if database is not None:
        databases = getattr(settings, "DATABASES", {})
        if database not in databases:
            raise ConfigurationError(
                f'settings.PMSQ["DATABASE"] is {database!r}, which is not in DATABASES '
                f"({', '.join(sorted(databases)) or 'none'})"
            )
    options = _dict(raw, "OPTIONS")
    queues = _dict(raw, "QUEUES")
    for name, kwargs in queues.items():
        if not isinstance(kwargs, dict):
            raise ConfigurationError(
                f'settings.PMSQ["QUEUES"][{name!r}] must be a dict of declare_queue options'
            )
    subscriptions = _dict(raw, "SUBSCRIPTIONS")
    for pattern, names in subscriptions.items():
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise ConfigurationError(
                f'settings.PMSQ["SUBSCRIPTIONS"][{pattern!r}] must be a list of queue names'
            )
    module = raw.get("HANDLERS_MODULE", "pmsq_handlers")
    if not isinstance(module, str) or not module.isidentifier():
        raise ConfigurationError(
            f'settings.PMSQ["HANDLERS_MODULE"] must be a module name, got {module!r}'
        )
    return PmsqSettings(
        url=url,
        database=database,
        options=dict(options),
        queues={k: dict(v) for k, v in queues.items()},
        subscriptions={k: list(v) for k, v in subscriptions.items()},
        handlers_module=module,
    )


def _dict(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigurationError(
            f"settings.PMSQ[{key!r}] must be a dict, got {type(value).__name__}"
        )
    return value
