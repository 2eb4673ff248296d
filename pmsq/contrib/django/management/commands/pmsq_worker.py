"""``manage.py pmsq_worker [--concurrency N] [--processes N] [--queues Q,...]``.

The Django form of ``pmsq worker``: runs the handlers of the installed apps'
``pmsq_handlers`` modules and the pmsq Tasks queues on the project's broker
(``settings.PMSQ``) until SIGTERM or SIGINT (a graceful drain: in-flight
handlers finish, unstarted messages go back; a second signal stops at once).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pmsq.cli.worker import add_worker_options
from pmsq.errors import PmsqError

__all__ = ["Command"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"


class Command(BaseCommand):
    """Run pmsq workers for this project."""

    help = (
        "Run the pmsq handlers of the installed apps (and the pmsq Tasks queues). "
        "SIGTERM or SIGINT drains; a second signal stops at once."
    )
    requires_system_checks: Any = []  # the worker reports a bad store itself, at once

    def add_arguments(self, parser: CommandParser) -> None:
        """The options of ``pmsq worker``."""
        add_worker_options(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        """Run one worker, or supervise ``--processes`` of them."""
        try:
            self._run(options)
        except PmsqError as exc:
            raise CommandError(str(exc)) from exc

    def _run(self, options: dict[str, Any]) -> None:
        from pmsq.contrib.django.registry import broker, reset
        from pmsq.worker.options import select_handlers
        from pmsq.worker.supervisor import Supervisor, die_with_parent
        from pmsq.worker.thread import Worker

        logging.basicConfig(level=options["log_level"], format=LOG_FORMAT)
        for name, low in (("concurrency", 1), ("processes", 1), ("shutdown_timeout", 0)):
            if options[name] < low:
                flag = "--" + name.replace("_", "-")
                raise CommandError(f"{flag} must be at least {low}, got {options[name]}")
        if options.get("prefetch") is not None and options["prefetch"] < 0:
            raise CommandError(f"--prefetch must be at least 0, got {options['prefetch']}")
        queues = None
        if options["queues"] is not None:
            queues = [q.strip() for q in options["queues"].split(",") if q.strip()]
            if not queues:
                raise CommandError("--queues needs at least one queue name")
        if options["processes"] > 1:
            # Load the handlers once here so a typo fails now, not in a restart loop.
            select_handlers(broker(), queues)
            reset()
            code = Supervisor(
                self._child_command(options),
                options["processes"],
                shutdown_timeout=options["shutdown_timeout"],
            ).run()
            if code:
                raise CommandError(f"a worker process failed (exit status {code})")
            return
        die_with_parent()
        worker = Worker(broker(), options["concurrency"], queues, prefetch=options.get("prefetch"))
        try:
            worker.run(shutdown_timeout=options["shutdown_timeout"])
        finally:
            reset()

    @staticmethod
    def _child_command(options: dict[str, Any]) -> list[str]:
        from django.conf import settings

        # Children are fresh interpreters (a SQLite connection must never cross a
        # fork): they find the project as this process did.
        os.environ["DJANGO_SETTINGS_MODULE"] = settings.SETTINGS_MODULE
        paths = [p for p in sys.path if p] + os.environ.get("PYTHONPATH", "").split(os.pathsep)
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
        command = [
            sys.executable,
            "-m",
            "django",
            "pmsq_worker",
            "--concurrency",
            str(options["concurrency"]),
            "--shutdown-timeout",
            str(options["shutdown_timeout"]),
            "--log-level",
            options["log_level"],
        ]
        if options["queues"] is not None:
            command += ["--queues", options["queues"]]
        if options.get("prefetch") is not None:
            command += ["--prefetch", str(options["prefetch"])]
        return command
