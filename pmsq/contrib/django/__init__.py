"""pmsq inside a Django project: ``INSTALLED_APPS += ["pmsq.contrib.django"]``.

Settings (``settings.PMSQ``)::

    PMSQ = {
        "URL": "sqlite:///" + str(BASE_DIR / "db.sqlite3"),  # required
        "DATABASE": "default",      # the store lives in this DATABASES entry (outbox)
        "OPTIONS": {"busy_timeout": 5.0},  # keyword arguments of pmsq.connect
        "QUEUES": {"emails": {"max_attempts": 8}},  # declared when the broker opens
        "SUBSCRIPTIONS": {"booking.*": ["emails"]},  # topic pattern -> queues
        "HANDLERS_MODULE": "pmsq_handlers",  # looked up in every installed app
    }

:func:`broker` opens the store on first use (not at import or startup) and
registers the handlers of every installed app's ``pmsq_handlers`` module,
which use :func:`handler`; ``manage.py pmsq_worker`` runs them.
"""

from __future__ import annotations

from pmsq.contrib.django.registry import broker, handler, reset

__all__ = ["broker", "handler", "reset"]
