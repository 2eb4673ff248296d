"""``pmsq worker module:broker [--concurrency N] [--prefetch N] [--processes N] [--queues Q,...]``.

Imports the app module (the current directory is put on ``sys.path``),
finds its ``Broker`` and runs a ``pmsq.Worker`` for its handlers until
SIGTERM or SIGINT (a graceful drain; a second signal stops at once). With
``--processes N`` it supervises N such worker processes instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

from pmsq.broker import Broker
from pmsq.cli._common import CommandError
from pmsq.worker.options import select_handlers
from pmsq.worker.supervisor import Supervisor, die_with_parent
from pmsq.worker.thread import Worker

__all__ = ["add_worker_options", "load_broker", "register"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"


def register(subparsers: Any) -> None:
    """Add the ``worker`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "worker",
        help="run workers for an app",
        description=(
            "Run the handlers an app registered with @broker.handler. SIGTERM or SIGINT "
            "finishes in-flight handlers and hands back unstarted messages; a second "
            "signal stops at once."
        ),
    )
    parser.add_argument(
        "target",
        metavar="MODULE:BROKER",
        help="the app module and its Broker attribute, e.g. myapp.tasks:broker "
        "(':BROKER' may be left out when the module has exactly one Broker)",
    )
    add_worker_options(parser)
    parser.set_defaults(func=run)


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """Add the options every worker command takes (``pmsq worker``, ``manage.py pmsq_worker``)."""
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        metavar="N",
        help="handlers at once per process (default 8)",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=None,
        metavar="N",
        help="messages claimed ahead of the free handler slots per process, at most "
        "(default: adaptive, about a tenth of a second of work; 0: only what can start)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="worker processes to run and restart when they die (default 1)",
    )
    parser.add_argument(
        "--queues",
        default=None,
        metavar="Q,...",
        help="comma-separated queues to serve (default: every queue with a handler)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="grace period for in-flight handlers on SIGTERM (default 30)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def load_broker(target: str) -> Broker:
    """Import ``module[:attribute]`` and return the ``Broker`` it names.

    Raises:
        CommandError: no such module or attribute, or it is not a Broker.
    """
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise CommandError(
            f"give the app as MODULE:BROKER (e.g. myapp.tasks:broker), got {target!r}"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # the app itself failed to import something: its traceback helps
        raise CommandError(
            f"cannot import {module_name!r}: no such module in {cwd} or on sys.path "
            "(run from the app's directory or set PYTHONPATH)"
        ) from None
    if attr:
        obj: Any = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise CommandError(f"module {module_name!r} has no attribute {attr!r}") from None
        if not isinstance(obj, Broker):
            raise CommandError(
                f"{target} is not a pmsq Broker (it is a {type(obj).__name__}); "
                "name the object pmsq.connect() returned"
            )
        return obj
    found = sorted(name for name, value in vars(module).items() if isinstance(value, Broker))
    if len(found) != 1:
        which = f"several ({', '.join(found)})" if found else "none"
        raise CommandError(
            f"module {module_name!r} has {which} Broker attributes; name one as {module_name}:NAME"
        )
    broker: Broker = getattr(module, found[0])
    return broker


def _queues(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [q.strip() for q in text.split(",") if q.strip()]
    if not names:
        raise CommandError("--queues needs at least one queue name")
    return names


def run(args: argparse.Namespace) -> int:
    """Run one worker, or supervise ``--processes`` of them."""
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    if args.concurrency < 1:
        raise CommandError(f"--concurrency must be at least 1, got {args.concurrency}")
    prefetch = getattr(args, "prefetch", None)
    if prefetch is not None and prefetch < 0:
        raise CommandError(f"--prefetch must be at least 0, got {prefetch}")
    if args.processes < 1:
        raise CommandError(f"--processes must be at least 1, got {args.processes}")
    if args.shutdown_timeout < 0:
        raise CommandError(f"--shutdown-timeout must be >= 0, got {args.shutdown_timeout}")
    queues = _queues(args.queues)
    if args.processes > 1:
        # Load the app once here so a typo fails now, not in a restart loop.
        broker = load_broker(args.target)
        try:
            select_handlers(broker, queues)
        finally:
            broker.close()
        command = [
            sys.executable,
            "-m",
            "pmsq",
            "worker",
            args.target,
            "--concurrency",
            str(args.concurrency),
            "--shutdown-timeout",
            str(args.shutdown_timeout),
            "--log-level",
            args.log_level,
        ]
        if args.queues is not None:
            command += ["--queues", args.queues]
        if prefetch is not None:
            command += ["--prefetch", str(prefetch)]
        return Supervisor(command, args.processes, shutdown_timeout=args.shutdown_timeout).run()
    die_with_parent()
    broker = load_broker(args.target)
    try:
        Worker(broker, args.concurrency, queues, prefetch=prefetch).run(
            shutdown_timeout=args.shutdown_timeout
        )
    finally:
        broker.close()
    return 0
