"""Settings of the Django project the contrib tests run (SQLite; the path comes from the env)."""

from __future__ import annotations

import os
import tempfile

_DB = os.environ.get("PMSQ_TEST_DB") or os.path.join(tempfile.gettempdir(), "pmsq-dj.sqlite3")

SECRET_KEY = "pmsq-tests"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django_tasks",
    "pmsq.contrib.django",
    "djproject.bookings",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _DB,
        # The outbox writes in the app's transaction: IMMEDIATE takes the write
        # lock at BEGIN, so a booking transaction never fails half-way on SQLITE_BUSY.
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 10},
    }
}
PMSQ = {
    "URL": f"sqlite:///{_DB}",
    "DATABASE": "default",
    "OPTIONS": {"durability": "normal", "busy_timeout": 10.0},
    "QUEUES": {"confirmations": {"max_attempts": 3}, "default": {}},
    "SUBSCRIPTIONS": {"booking.*": ["confirmations"]},
}
TASKS = {
    "default": {
        "BACKEND": "pmsq.contrib.django.tasks.PmsqBackend",
        "QUEUES": ["default"],
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
