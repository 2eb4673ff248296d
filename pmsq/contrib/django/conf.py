"""The ``PMSQ`` setting, read and checked in one place."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import attrs

from pmsq.errors import ConfigurationError

__all__ = ["PmsqSettings", "read_settings", "store_url"]

_KNOWN = {"URL", "DATABASE", "OPTIONS", "QUEUES", "SUBSCRIPTIONS", "HANDLERS_MODULE"}


@attrs.frozen
class PmsqSettings:
    """``settings.PMSQ`` as checked values.

    Attributes:
        url: The store URL (``pmsq.connect``'s first argument); ``None``: the
            URL of ``database`` (see :func:`store_url`).
        database: The ``DATABASES`` alias the store lives in (outbox puts go
            through its connection), or ``None`` when the store is elsewhere.
        options: Keyword arguments of ``pmsq.connect``.
        queues: Queue name -> ``declare_queue`` keyword arguments.
        subscriptions: Topic pattern -> queue names.
        handlers_module: Module name imported from every installed app.
    """

    url: str | None
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
    database = raw.get("DATABASE")
    if url is None and database is None:
        raise ConfigurationError(
            'settings.PMSQ needs "DATABASE" (the store lives in that Django database) '
            'or "URL" (the store URL, e.g. "sqlite:///queues.sqlite3")'
        )
    if url is not None and (not isinstance(url, str) or not url):
        raise ConfigurationError(
            f'settings.PMSQ["URL"] must be the store URL, e.g. "sqlite:///db.sqlite3", got {url!r}'
        )
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


def store_url(conf: PmsqSettings) -> str:
    """The store URL: ``URL``, or else the URL of the ``DATABASE`` connection's settings.

    Derived from the live connection settings, so it follows the test runner
    to the test database.

    Raises:
        ConfigurationError: the database is in memory or not SQLite/PostgreSQL.
    """
    if conf.url is not None:
        return conf.url
    from django.db import connections

    assert conf.database is not None  # read_settings requires one of the two
    params = connections[conf.database].settings_dict
    engine = str(params.get("ENGINE", ""))
    name = str(params.get("NAME") or "")
    if engine.endswith("sqlite3"):
        if not name or name == ":memory:" or "mode=memory" in name:
            raise ConfigurationError(
                f"DATABASES[{conf.database!r}] is an in-memory SQLite database, which no "
                "other connection can open: give it a file (for tests: "
                '"TEST": {"NAME": BASE_DIR / "test.sqlite3"})'
            )
        return "sqlite:///" + os.path.abspath(name)
    if "postgresql" in engine or "postgis" in engine:
        user = quote(str(params.get("USER") or ""), safe="")
        password = quote(str(params.get("PASSWORD") or ""), safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = str(params.get("HOST") or "")
        port = f":{params['PORT']}" if params.get("PORT") else ""
        return f"postgresql://{auth}{quote(host, safe='/')}{port}/{quote(name, safe='')}"
    raise ConfigurationError(
        f'settings.PMSQ["DATABASE"] is {conf.database!r}, a {engine!r} database; the store '
        "can live in a SQLite or PostgreSQL database only (or give PMSQ a URL of its own)"
    )
