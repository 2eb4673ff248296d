"""pmsq.contrib.django with a PostgreSQL database: the store lives in Django's database.

Runs the project of tests/contrib/djproject with ``settings.configure()``
pointing ``DATABASES`` and ``PMSQ`` at this session's server; skipped when
another Django configuration was set up first in this process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")
pytest.importorskip("django_tasks")

from pgserver import PgServer, drop_schema

import pmsq

CONTRIB = Path(__file__).resolve().parents[3] / "tests" / "contrib"


def _database(url: str) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username,
        "HOST": parts.hostname,
        "PORT": str(parts.port),
    }


@pytest.fixture(scope="module")
def django_url(pg_server: PgServer) -> Iterator[str]:
    """A database of its own for Django's tables, dropped after the module."""
    import django
    import psycopg
    from django.conf import settings

    if settings.configured:
        pytest.skip("Django is already configured in this process (run this file on its own)")
    name = f"django_{os.getpid()}"
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = pg_server.url.rsplit("/", 1)[0] + f"/{name}"
    sys.path.insert(0, str(CONTRIB))
    settings.configure(
        SECRET_KEY="pmsq-tests",
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django_tasks",
            "pmsq.contrib.django",
            "djproject.bookings",
        ],
        DATABASES={"default": _database(url)},
        PMSQ={"DATABASE": "default"},
        TASKS={"default": {"BACKEND": "pmsq.contrib.django.tasks.PmsqBackend"}},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", run_syncdb=True, verbosity=0)
    try:
        yield url
    finally:
        from pmsq.contrib.django import reset

        reset()
        connection.close()
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def project(django_url: str, schema: str) -> Iterator[None]:
    """This test's store (its own schema) in Django's database; empty app tables."""
    from django.db import connection
    from django.test import override_settings
    from djproject.bookings.models import Booking, Confirmation

    from pmsq.contrib.django import reset

    Booking.objects.all().delete()
    Confirmation.objects.all().delete()
    with override_settings(
        PMSQ={
            "URL": f"{django_url}?schema={schema}",
            "DATABASE": "default",
            "QUEUES": {"confirmations": {}, "default": {"max_attempts": 2}},
            "SUBSCRIPTIONS": {"booking.*": ["confirmations"]},
        }
    ):
        try:
            yield
        finally:
            reset()
            connection.close()
            drop_schema(django_url, schema)


def _waiting(queue: str) -> list[object]:
    from pmsq.contrib.django import broker

    return [m.payload for m, _state in broker().queue(queue).peek(100)]


class Boom(Exception):
    pass


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_atomic_block_keeps_both_or_neither(project: None, commit: bool) -> None:
    from django.db import connection, transaction
    from djproject.bookings.models import Booking

    from pmsq.contrib.django import broker

    try:
        with transaction.atomic():
            booking = Booking.objects.create(guest="Ada")
            broker().publish("booking.created", {"booking": booking.id}, connection=connection)
            if not commit:
                raise Boom
    except Boom:
        pass
    assert Booking.objects.count() == (1 if commit else 0)
    assert len(_waiting("confirmations")) == (1 if commit else 0)


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_a_cancel_in_an_atomic_block_keeps_both_or_neither(project: None, commit: bool) -> None:
    from django.db import connection, transaction
    from djproject.bookings.models import Booking

    from pmsq.contrib.django import broker

    booking = Booking.objects.create(guest="Ada")
    q = broker().queue("confirmations")
    q.put({"booking": booking.id}, key=f"booking:{booking.id}")
    try:
        with transaction.atomic():
            Booking.objects.filter(id=booking.id).delete()
            assert q.cancel(key=f"booking:{booking.id}", connection=connection) == 1
            if not commit:
                raise Boom
    except Boom:
        pass
    assert Booking.objects.count() == (0 if commit else 1)
    assert len(_waiting("confirmations")) == (0 if commit else 1)


def test_outside_atomic_the_put_autocommits(project: None) -> None:
    from django.db import connection

    from pmsq.contrib.django import broker

    broker().queue("confirmations").put({"booking": 9}, connection=connection)
    connection.close()
    assert _waiting("confirmations") == [{"booking": 9}]


def test_once_through_the_django_connection(project: None) -> None:
    from django.db import connection, transaction
    from djproject.bookings.models import Confirmation

    from pmsq.contrib.django import broker

    broker().queue("confirmations").put({"booking": 3})
    with broker().queue("confirmations").get() as delivery:
        msg = delivery.message
        try:
            with transaction.atomic(), broker().once(msg, connection=connection) as first:
                assert first
                Confirmation.objects.create(message_id=msg.id, booking_id=3)
                raise Boom
        except Boom:
            pass  # the record and the effect rolled back together
        for expected in (True, False):
            with transaction.atomic(), broker().once(msg, connection=connection) as first:
                assert first is expected
                if first:
                    Confirmation.objects.create(message_id=msg.id, booking_id=3)
    assert list(Confirmation.objects.values_list("message_id", flat=True)) == [msg.id]


def test_tasks_round_trip(project: None) -> None:
    from django.db import transaction
    from djproject.bookings import tasks
    from djproject.bookings.models import Confirmation

    from pmsq.contrib.django import broker

    try:
        with transaction.atomic():
            tasks.record.enqueue(1, note="gone")
            raise Boom
    except Boom:
        pass
    with transaction.atomic():
        result = tasks.record.enqueue(2, note="kept")
    b = broker()
    with b.queue("default").get(timeout=0) as delivery:
        assert delivery.message.id == result.id
        assert b.handlers["default"].fn(delivery.message) == "kept"
    assert list(Confirmation.objects.values_list("message_id", "booking_id")) == [("task:kept", 2)]
    assert _waiting("default") == []


def test_a_store_in_another_database_is_refused_and_reported(
    project: None, pg_server: PgServer, schema: str
) -> None:
    import psycopg
    from django.core import checks
    from django.db import connection, transaction
    from django.test import override_settings

    from pmsq.contrib.django import broker

    other = f"other_{schema}"
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{other}"')
    try:
        other_url = pg_server.url.rsplit("/", 1)[0] + f"/{other}?schema={schema}"
        with override_settings(PMSQ={"URL": other_url, "DATABASE": "default"}):
            with (
                pytest.raises(pmsq.ConfigurationError, match="must reach the database"),
                transaction.atomic(),
            ):
                broker().queue("confirmations").put({"booking": 1}, connection=connection)
            assert [e.id for e in checks.run_checks(tags=["pmsq"])] == ["pmsq.E003"]
    finally:
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{other}" WITH (FORCE)')


def test_system_check_passes(project: None) -> None:
    from django.core import checks

    assert checks.run_checks(tags=["pmsq"]) == []


def test_without_a_url_the_store_lives_in_djangos_database(project: None, django_url: str) -> None:
    from django.db import connection, transaction
    from django.test import override_settings

    from pmsq.contrib.django import broker

    try:
        with override_settings(PMSQ={"DATABASE": "default", "QUEUES": {"confirmations": {}}}):
            with transaction.atomic():
                broker().queue("confirmations").put({"booking": 1}, connection=connection)
            assert broker().backend.schema == "pmsq"  # type: ignore[attr-defined]
            assert _waiting("confirmations") == [{"booking": 1}]
    finally:
        drop_schema(django_url, "pmsq")
