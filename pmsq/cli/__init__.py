"""The ``pmsq`` command line. Each subcommand lives in its own module with a
``register(subparsers)`` function that adds its parser and sets ``func``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pmsq.errors import PmsqError

__all__ = ["main"]

# Subcommand modules, in help order.
_COMMANDS = (
    "demo",
    "monitor",
    "stats",
    "queues",
    "put",
    "peek",
    "dlq",
    "worker",
    "bench",
    "migrate",
    "doctor",
    "backup",
    "restore",
    "trace",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="pmsq",
        description="Durable, ordered message queues for property management systems.",
        epilog="Every URL argument also takes a plain path to a SQLite file.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"pmsq.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pmsq.cli.{name}":
                raise
            continue
        module.register(sub)
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
