"""``Routes``: which store a queue's name sends it to.

A pure value: the default store's URL and ``(pattern, url)`` pairs in the
order given. Patterns use topic syntax (``payments.#``, ``*.audit``) and are
matched against queue names; the first pattern that matches wins, and a name
that none matches lives in the default store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs

from pmsq.backends.registry import split_scheme
from pmsq.errors import ConfigurationError
from pmsq.topics import check_pattern, matches

__all__ = ["Routes", "parse_routes"]


@attrs.frozen
class Routes:
    """Where each queue lives.

    Attributes:
        default: The URL of the store of every queue no pattern matches.
        patterns: ``(pattern, url)`` pairs, tried in order.
    """

    default: str
    patterns: tuple[tuple[str, str], ...]

    @property
    def urls(self) -> tuple[str, ...]:
        """Every distinct store URL, the default first, then in order of appearance."""
        out = [self.default]
        for _, url in self.patterns:
            if url not in out:
                out.append(url)
        return tuple(out)

    def url_for(self, queue: str) -> str:
        """The URL of the store ``queue`` lives in."""
        for pattern, url in self.patterns:
            if matches(pattern, queue):
                return url
        return self.default

    def index_for(self, queue: str) -> int:
        """The position in :attr:`urls` of the store ``queue`` lives in."""
        return self.urls.index(self.url_for(queue))


def _check_url(url: object, where: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"{where}: a store URL or path is required, got {url!r}")
    return url


def _same_store(a: str, b: str) -> bool:
    # Plain paths and sqlite:/// URLs name the same file in two spellings.
    if split_scheme(a)[0] == split_scheme(b)[0] == "sqlite":
        from pmsq.backends.sqlite.store import parse_sqlite_url

        pa, pb = parse_sqlite_url(a), parse_sqlite_url(b)
        if ":memory:" in (pa, pb):
            return False  # every in-memory store is a store of its own
        return os.path.abspath(pa) == os.path.abspath(pb)
    return a == b


def parse_routes(default: str, routes: Mapping[str, str] | None) -> Routes:
    """Validate ``connect(url, routes=...)`` into :class:`Routes`.

    Two spellings of one SQLite file (a path and its ``sqlite:///`` URL) are
    one store; the spelling first given is kept.

    Raises:
        ConfigurationError: ``routes`` is not a mapping of topic patterns to
            URLs, a pattern is invalid, or a URL is empty.
    """
    _check_url(default, "connect()")
    if routes is None:
        return Routes(default, ())
    if not isinstance(routes, Mapping):
        raise ConfigurationError(
            f"routes must be a mapping of queue-name patterns to store URLs, got {routes!r}"
        )
    known = [default]
    pairs: list[tuple[str, str]] = []
    for pattern, url in routes.items():
        try:
            check_pattern(pattern)
        except ConfigurationError as exc:
            raise ConfigurationError(f"routes: {exc}") from None
        _check_url(url, f"routes[{pattern!r}]")
        same = next((k for k in known if _same_store(k, url)), None)
        if same is None:
            known.append(url)
            same = url
        pairs.append((pattern, same))
    return Routes(default, tuple(pairs))
