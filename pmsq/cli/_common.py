"""What the operator commands share: opening an existing store, checking queue
names, reading JSON from the command line, confirmations, formatting."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from typing import Any

import pmsq
from pmsq.backends.registry import split_scheme
from pmsq.backends.sqlite.files import readonly_uri
from pmsq.config import check_queue_name
from pmsq.errors import PmsqError

__all__ = [
    "CommandError",
    "add_url",
    "confirm",
    "open_store",
    "parse_json",
    "probe_sqlite",
    "read_routes_file",
    "require_queue",
    "routes_of",
    "sqlite_path",
]


class CommandError(PmsqError):
    """An expected failure of a command (missing file, bad argument): one line, exit 1."""


def add_url(parser: argparse.ArgumentParser) -> None:
    """Add the positional ``URL`` every store command takes, and the routes to other stores.

    ``--route PATTERN=URL`` (repeatable) and ``--routes FILE`` (a TOML file
    with a ``[routes]`` table) are what ``pmsq.connect(url, routes=...)``
    takes: queues whose names match a pattern live in that store.
    """
    parser.add_argument("url", metavar="URL", help="store URL (sqlite:///pms.db) or a plain path")
    parser.add_argument(
        "--route",
        dest="route",
        action="append",
        default=[],
        type=_route_flag,
        metavar="PATTERN=URL",
        help="queues matching PATTERN (topic syntax: payments.#) live in the store at URL; "
        "repeat for several, tried in order",
    )
    parser.add_argument(
        "--routes",
        dest="routes_file",
        metavar="FILE",
        help='a TOML file whose [routes] table maps patterns to URLs ("payments.#" = "...")',
    )


def _route_flag(text: str) -> tuple[str, str]:
    pattern, sep, url = text.partition("=")
    if not sep or not pattern.strip() or not url.strip():
        raise argparse.ArgumentTypeError(
            f"expected PATTERN=URL (e.g. 'payments.#=postgresql://pms@db/pms'), got {text!r}"
        )
    return pattern.strip(), url.strip()


def routes_of(args: argparse.Namespace) -> dict[str, str] | None:
    """The routes given on the command line (file first, then each ``--route``); ``None``: none.

    Raises:
        CommandError: the routes file is missing or not TOML with a ``[routes]``
            table of strings.
    """
    routes: dict[str, str] = {}
    path = getattr(args, "routes_file", None)
    if path:
        routes.update(read_routes_file(path))
    for pattern, url in getattr(args, "route", None) or []:
        routes[pattern] = url
    return routes or None


def read_routes_file(path: str) -> dict[str, str]:
    """The ``[routes]`` table of a TOML file, in file order.

    Raises:
        CommandError: the file is missing, not TOML, or has no table of strings.
    """
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise CommandError(f"no routes file at {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CommandError(f"cannot read the routes file {path}: {exc}") from None
    table = data.get("routes")
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in table.items()
    ):
        raise CommandError(
            f"{path} needs a [routes] table of pattern = URL strings, e.g.\n"
            '[routes]\n"payments.#" = "postgresql://pms@db/pms"'
        )
    return dict(table)


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL or plain path; ``None`` for other backends."""
    from pmsq.backends.sqlite.backend import parse_sqlite_url

    scheme, _ = split_scheme(url)
    if scheme != "sqlite":
        return None
    return parse_sqlite_url(url)


def probe_sqlite(path: str) -> None:
    """Check that ``path`` holds a pmsq store, without creating or changing anything.

    A file SQLite cannot read is let through: ``pmsq.connect`` then raises
    the ``StorageError`` that explains it (corrupt, foreign) with its advice.

    Raises:
        CommandError: no file, a directory, or a SQLite file without a pmsq store.
    """
    if path == ":memory:":
        raise CommandError("an in-memory store exists only inside its process; give a file path")
    if not os.path.exists(path):
        raise CommandError(
            f"no store at {path} (check the path; pmsq creates stores only "
            "when an app connects to them)"
        )
    if os.path.isdir(path):
        raise CommandError(f"{path} is a directory, not a store file")
    if os.path.getsize(path) == 0:
        raise CommandError(f"{path} is an empty file, not a pmsq store")
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=5.0)
    except sqlite3.Error:
        return
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.Error:
        return
    finally:
        conn.close()
    if "pmsq_meta" not in tables:
        shown = ", ".join(sorted(tables)[:5]) or "no tables"
        raise CommandError(
            f"{path} is a SQLite database but holds no pmsq store ({shown}); "
            "point the command at the file your app passes to pmsq.connect()"
        )


def open_store(url: str, routes: dict[str, str] | None = None) -> pmsq.Broker:
    """Connect to an existing store (with ``routes``: to several); never creates one.

    Raises:
        CommandError: there is no store at ``url`` or at a routed SQLite URL.
        StorageError: the file is corrupt, foreign or unreadable (with advice).
        ConfigurationError: unknown URL scheme or a bad route.
    """
    from pmsq.backends.routed.routes import parse_routes

    for each in parse_routes(url, routes).urls:  # a bad pattern fails before any probe
        path = sqlite_path(each)
        if path is not None:
            probe_sqlite(path)
    return pmsq.connect(url, routes=routes)


def require_queue(broker: pmsq.Broker, name: str) -> str:
    """Return ``name`` if the store has that queue.

    Raises:
        CommandError: naming the queues the store does have.
    """
    check_queue_name(name)
    if broker.backend.queue_config(name) is None:
        names = [q.name for q in broker.queues()]
        known = ", ".join(names) if names else "none yet"
        raise CommandError(f"no queue {name!r} in this store (queues: {known})")
    return name


def parse_json(text: str, what: str = "payload") -> Any:
    """Parse JSON given on the command line (``-`` reads standard input).

    Raises:
        CommandError: the text is not JSON, with the position and a quoting hint.
    """
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(
            f"{what} is not valid JSON ({exc}); quote it for the shell, e.g. "
            "'{\"booking_id\": 1}', or pass - to read standard input"
        ) from None


def confirm(question: str, *, yes: bool) -> bool:
    """Ask ``question`` on the terminal; ``--yes`` answers for the operator.

    Raises:
        CommandError: no terminal to ask on and no ``--yes``.
    """
    if yes:
        return True
    if not sys.stdin.isatty():
        raise CommandError(
            f"refusing to {question.rstrip('?')} without confirmation: there is no terminal "
            "to ask on; pass --yes to confirm"
        )
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def positive_seconds(text: str) -> float:
    """An argparse type: seconds > 0 (and at most a day)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not (0 < value <= 86400):
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 86400], got {text!r}")
    return value


def nonneg_seconds(text: str) -> float:
    """An argparse type: seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not (0 <= value < 1e10):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value
