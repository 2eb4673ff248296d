"""``manage.py check``: the store's settings, the store itself, and the outbox database.

IDs: ``pmsq.E001`` the setting is missing or invalid, ``pmsq.E002`` the
store cannot be opened, ``pmsq.E003`` ``PMSQ["DATABASE"]`` names a database
that is not the store's (the outbox would refuse every put).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

from pmsq.backends.sqlite.backend import parse_sqlite_url
from pmsq.errors import PmsqError

__all__ = ["check_store", "same_database"]


def check_store(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The ``pmsq`` system check.

    Returns:
        Django ``checks.Error`` values (empty when the store is usable).
    """
    from django.conf import settings
    from django.core import checks

    from pmsq.contrib.django.conf import read_settings, store_url
    from pmsq.contrib.django.registry import broker

    try:
        conf = read_settings()
    except PmsqError as exc:
        return [checks.Error(str(exc), id="pmsq.E001", hint="see docs/django.md")]
    errors: list[Any] = []
    if conf.database is not None and conf.url is not None:
        problem = same_database(conf.url, settings.DATABASES[conf.database])
        if problem:
            errors.append(
                checks.Error(
                    f'settings.PMSQ["DATABASE"] is {conf.database!r}, but {problem}',
                    id="pmsq.E003",
                    hint='leave PMSQ["URL"] out (the store then lives in that database), '
                    'or remove PMSQ["DATABASE"] (puts are then not part of the app\'s '
                    "transactions)",
                )
            )
    try:
        url = store_url(conf)
    except PmsqError as exc:
        return [*errors, checks.Error(str(exc), id="pmsq.E003")]
    try:
        broker()
    except PmsqError as exc:
        errors.append(
            checks.Error(f"the pmsq store {url!r} cannot be opened: {exc}", id="pmsq.E002")
        )
    return errors


def same_database(url: str, database: dict[str, Any]) -> str | None:
    """Why the store at ``url`` is not the Django database ``database``, or ``None``.

    A settings-level comparison (engine, file or host/port/name); the backend
    checks the live connection again on every put.

    Args:
        url: The store URL.
        database: One ``DATABASES`` entry.

    Returns:
        A sentence naming the difference, or ``None`` when they match.
    """
    engine = str(database.get("ENGINE", ""))
    parts = urlsplit(url)
    scheme = parts.scheme or "sqlite"
    if engine.endswith("sqlite3"):
        if scheme != "sqlite":
            return f"that database is SQLite and the store URL is {scheme}://"
        store = parse_sqlite_url(url)
        name = str(database.get("NAME", ""))
        if not name or name == ":memory:" or "mode=memory" in name:
            return "that database is in memory; the store needs a file both can open"
        if os.path.realpath(name) != os.path.realpath(store):
            return f"that database is the file {name!r} and the store is {store!r}"
        return None
    if "postgresql" in engine or "postgis" in engine:
        if scheme not in ("postgresql", "postgres"):
            return f"that database is PostgreSQL and the store URL is {scheme}://"
        theirs = (
            str(database.get("HOST") or "localhost"),
            str(database.get("PORT") or 5432),
            str(database.get("NAME") or ""),
        )
        ours = (
            parts.hostname or "localhost",
            str(parts.port or 5432),
            unquote(parts.path.lstrip("/")),
        )
        if theirs != ours:
            return (
                f"that database is {theirs[2]!r} on {theirs[0]}:{theirs[1]} and the "
                f"store is {ours[2]!r} on {ours[0]}:{ours[1]}"
            )
        return None
    return f"the outbox supports SQLite and PostgreSQL databases, not {engine!r}"
