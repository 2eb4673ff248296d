"""Resolve a URL to a backend class: built-ins by dotted path, plugins by entry point.

Plugins register under the ``pmsq.backends`` entry-point group with the URL
scheme as the name (``postgresql = "pmsq_postgres:PostgresBackend"``). They are
imported only when a URL asks for them, so ``import pmsq`` loads no plugin.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from pmsq.backends.base import Backend
from pmsq.errors import ConfigurationError

__all__ = ["installed_schemes", "open_backend", "split_scheme"]

_BUILTIN = {"sqlite": "pmsq.backends.sqlite:SQLiteBackend"}
# Which package to install for the well-known schemes, for the error message.
_KNOWN_PLUGINS = {
    "postgresql": "pmsq-postgres",
    "postgres": "pmsq-postgres",
    "amqp": "pmsq-rabbitmq",
    "amqps": "pmsq-rabbitmq",
}
_GROUP = "pmsq.backends"


def split_scheme(url: str) -> tuple[str, str]:
    """Return ``(scheme, url)``; a plain path is the ``sqlite`` scheme."""
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme.isidentifier() or scheme.replace("+", "").replace("-", "").isalnum():
            return scheme, url
    return "sqlite", url


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=_GROUP)}


def installed_schemes() -> list[str]:
    """Return every URL scheme that can be opened here, built-ins included."""
    return sorted(set(_BUILTIN) | set(_entry_points()))


def _load(target: str) -> type[Backend]:
    module_name, _, attr = target.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(obj, type) and issubclass(obj, Backend)):
        raise ConfigurationError(f"{target} is not a pmsq Backend subclass")
    return obj


def open_backend(url: str, **options: Any) -> Backend:
    """Open the backend for ``url``.

    Raises:
        ConfigurationError: for an unknown scheme, listing the installed ones
            and the package that provides the scheme when it is a known one.
    """
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"a store URL or path is required, got {url!r}")
    scheme, url = split_scheme(url)
    if scheme in _BUILTIN:
        cls = _load(_BUILTIN[scheme])
    else:
        eps = _entry_points()
        if scheme not in eps:
            hint = ""
            if scheme in _KNOWN_PLUGINS:
                hint = (
                    "; install the plugin from a pmsq checkout (it is not on PyPI yet): "
                    f"pip install ./plugins/{_KNOWN_PLUGINS[scheme]}"
                )
            raise ConfigurationError(
                f"unknown URL scheme {scheme!r} in {url!r}; installed schemes: "
                f"{', '.join(installed_schemes())}{hint}"
            )
        loaded = eps[scheme].load()
        if not (isinstance(loaded, type) and issubclass(loaded, Backend)):
            raise ConfigurationError(f"entry point {scheme!r} does not name a pmsq Backend")
        cls = loaded
    return cls(url, **options)  # type: ignore[call-arg]
