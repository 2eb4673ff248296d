"""Parsing ``postgresql://`` URLs: pmsq's own options out, libpq's connection string in."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from pmsq.errors import ConfigurationError

__all__ = ["PostgresURL", "parse_url", "redact"]

# Schema names are pasted into SQL text (quoted); keep them to plain identifiers.
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# URL query parameters pmsq reads itself; libpq would reject them.
_FLAGS = {"on": True, "1": True, "true": True, "off": False, "0": False, "false": False}
_OWN = ("schema", "pool_size", "pool_min", "notify")


@attrs.frozen
class PostgresURL:
    """A parsed store URL.

    Attributes:
        conninfo: What libpq gets (the URL without pmsq's own parameters).
        schema: Schema holding pmsq's tables.
        pool_size: Largest number of pooled connections.
        pool_min: Connections kept open while idle.
        notify: Send NOTIFY wake-ups on puts (off by default).
        display: The URL with any password masked, for messages.
    """

    conninfo: str
    schema: str
    pool_size: int
    pool_min: int
    notify: bool
    display: str


def check_schema(name: object) -> str:
    """Return ``name`` if it is a usable schema name.

    Raises:
        ConfigurationError: unless it is 1-63 characters of ``a-z 0-9 _``
            starting with a letter or ``_``.
    """
    if not isinstance(name, str) or not _SCHEMA_RE.match(name):
        raise ConfigurationError(
            f"invalid PostgreSQL schema name {name!r}: use 1-63 characters from a-z 0-9 _ "
            "starting with a letter or _"
        )
    return name


def redact(url: str) -> str:
    """Return ``url`` with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _int_option(name: str, value: object, low: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        number = low - 1
    if isinstance(value, bool) or number < low:
        raise ConfigurationError(f"{name} must be an int >= {low}, got {value!r}")
    return number


def parse_url(
    url: str,
    *,
    schema: str | None = None,
    pool_size: int | None = None,
    pool_min: int | None = None,
    notify: bool | None = None,
) -> PostgresURL:
    """Split ``url`` into libpq's connection string and pmsq's options.

    Keyword arguments win over URL query parameters
    (``?schema=pmsq&pool_size=10&pool_min=1&notify=on``).

    Raises:
        ConfigurationError: not a ``postgresql://`` or ``postgres://`` URL, or a bad option.
    """
    display = redact(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"cannot parse PostgreSQL URL {display!r}: {exc}") from exc
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"not a PostgreSQL URL: {display!r}; use postgresql://user@host:port/dbname"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN}
    rest = [(k, v) for k, v in query if k not in _OWN]
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(rest)))
    size = _int_option(
        "pool_size", pool_size if pool_size is not None else own.get("pool_size", 10), 1
    )
    low = _int_option("pool_min", pool_min if pool_min is not None else own.get("pool_min", 1), 0)
    if notify is None:
        flag = own.get("notify", "off").lower()
        if flag not in _FLAGS:
            raise ConfigurationError(f"notify must be on or off, got {flag!r}")
        notify = _FLAGS[flag]
    return PostgresURL(
        conninfo=conninfo,
        schema=check_schema(schema if schema is not None else own.get("schema", "pmsq")),
        pool_size=size,
        pool_min=min(low, size),
        notify=bool(notify),
        display=display,
    )
