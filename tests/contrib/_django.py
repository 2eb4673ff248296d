"""Start the test Django project once per process; give each test a fresh database file."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "djproject"


def setup_django() -> None:
    """``django.setup()`` with the test project's settings (idempotent)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproject.settings")
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()


@contextmanager
def fresh_database(path: Path, **pmsq: Any) -> Iterator[None]:
    """Point the default database and the store at ``path``; create the app's tables."""
    from django.core.management import call_command
    from django.db import connections
    from django.test import override_settings

    from pmsq.contrib.django import reset

    conn = connections["default"]
    conn.close()
    old = conn.settings_dict["NAME"]
    # The same dict as settings.DATABASES["default"]: the system check sees it too.
    conn.settings_dict["NAME"] = str(path)
    settings = {
        # No URL: the store lives in DATABASES["default"], wherever that points.
        "DATABASE": "default",
        "OPTIONS": {"durability": "normal", "busy_timeout": 10.0},
        "QUEUES": {"confirmations": {"max_attempts": 3}, "default": {"max_attempts": 2}},
        "SUBSCRIPTIONS": {"booking.*": ["confirmations"]},
    }
    settings.update(pmsq)
    try:
        with override_settings(PMSQ=settings):
            call_command("migrate", run_syncdb=True, verbosity=0)
            yield
    finally:
        reset()
        conn.close()
        conn.settings_dict["NAME"] = old
