"""The ``pmsq`` command line. Each subcommand lives in its own module with a
``register(subparsers)`` function that adds its parser and sets ``func``."""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import textwrap
from collections.abc import Sequence

from pmsq.errors import PmsqError

__all__ = ["main"]

# Subcommand modules, in help order.
_COMMANDS = (
    "demo",
    "monitor",
    "stats",
    "queues",
    "schedules",
    "put",
    "cancel",
    "pause",
    "resume",
    "pauses",
    "peek",
    "dlq",
    "worker",
    "bench",
    "migrate",
    "doctor",
    "backup",
    "restore",
    "trace",
    "serve",
)


def version() -> str:
    """``pmsq 0.1.0 (Python 3.11.2, SQLite 3.40.1)``: what a bug report needs."""
    import platform
    import sqlite3
    from importlib import metadata

    try:
        number = metadata.version("pmsq")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        from pmsq import __version__ as number
    return f"pmsq {number} (Python {platform.python_version()}, SQLite {sqlite3.sqlite_version})"


def _help_width() -> int:
    # argparse wraps option help to the terminal; prose is easier to read at 80 at most.
    return max(40, min(shutil.get_terminal_size().columns, 80) - 2)


def _wrap_descriptions(parser: argparse.ArgumentParser, width: int) -> None:
    """Wrap every subcommand's description to ``width``, its epilog left as written.

    The subcommands use ``RawDescriptionHelpFormatter`` so that their epilogs
    (tables of columns, example commands) keep their layout; the same
    formatter would print a one-paragraph description as a single line of 200
    characters, so those paragraphs are wrapped here, once for every command.
    """
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in set(action.choices.values()):
            text = child.description
            if text and "\n" not in text and len(text) > width:
                child.description = textwrap.fill(text, width)
            _wrap_descriptions(child, width)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="pmsq",
        description="Durable, ordered message queues for property management systems.",
        epilog="Every URL argument also takes a plain path to a SQLite file.",
    )
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"pmsq.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pmsq.cli.{name}":
                raise
            continue
        module.register(sub)
    _wrap_descriptions(parser, _help_width())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code. Errors are one line on stderr, no traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except PmsqError as exc:
        print(f"pmsq {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `pmsq dlq list ... | head`: the reader left; exit quietly like other Unix tools.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return int(code or 0)
