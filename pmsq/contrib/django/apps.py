"""The Django app: system checks, handler discovery, settings-change reset."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig

__all__ = ["PmsqConfig"]


class PmsqConfig(AppConfig):
    """``pmsq.contrib.django`` in ``INSTALLED_APPS``."""

    name = "pmsq.contrib.django"
    label = "pmsq"
    verbose_name = "pmsq message queues"

    def ready(self) -> None:
        from django.core import checks
        from django.core.signals import setting_changed
        from django.db.backends.signals import connection_created

        from pmsq.contrib.django.checks import check_store

        checks.register(check_store, "pmsq")
        setting_changed.connect(_on_setting_changed, dispatch_uid="pmsq-settings")
        connection_created.connect(_on_connection_created, dispatch_uid="pmsq-connection")


def _on_connection_created(*, connection: Any, **kwargs: Any) -> None:
    # Opening a SQLite store takes the write lock for a moment. Opened lazily
    # inside the app's first transaction.atomic, it would wait for the lock
    # that very transaction holds; so open it with the app's first connection
    # to the outbox database, before that connection begins anything.
    if connection.vendor != "sqlite":
        return
    from pmsq.contrib.django.conf import read_settings
    from pmsq.contrib.django.registry import broker
    from pmsq.errors import PmsqError

    try:
        if read_settings().database == connection.alias:
            broker()
    except PmsqError:
        pass  # reported by the system check, and raised where the broker is used


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("PMSQ", "TASKS", "DATABASES"):
        from pmsq.contrib.django.registry import reset

        reset()
