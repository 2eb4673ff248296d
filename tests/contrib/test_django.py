"""pmsq.contrib.django against a real Django project on SQLite (tests/contrib/djproject)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("django")
pytest.importorskip("django_tasks")

from ._django import HERE, PROJECT, fresh_database, setup_django

setup_django()

from django.core import checks  # noqa: E402
from django.db import IntegrityError, connection, transaction  # noqa: E402
from djproject.bookings import tasks  # noqa: E402
from djproject.bookings.models import Booking, Confirmation  # noqa: E402

import pmsq  # noqa: E402
from pmsq.clock import ManualClock  # noqa: E402
from pmsq.contrib.django import broker  # noqa: E402


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "app.sqlite3"
    with fresh_database(path):
        yield path


def _waiting(queue: str) -> list[object]:
    return [m.payload for m, _state in broker().queue(queue).peek(100)]


class Boom(Exception):
    pass


@pytest.mark.parametrize("via", ["put", "publish"])
def test_atomic_commit_keeps_the_row_and_the_message(db: Path, via: str) -> None:
    with transaction.atomic():
        booking = Booking.objects.create(guest="Ada")
        if via == "put":
            broker().queue("confirmations").put({"booking": booking.id}, connection=connection)
        else:
            broker().publish("booking.created", {"booking": booking.id}, connection=connection)
    assert Booking.objects.count() == 1
    assert _waiting("confirmations") == [{"booking": booking.id}]


@pytest.mark.parametrize("via", ["put", "publish"])
def test_atomic_rollback_keeps_neither(db: Path, via: str) -> None:
    with pytest.raises(Boom), transaction.atomic():
        booking = Booking.objects.create(guest="Ada")
        if via == "put":
            broker().queue("confirmations").put({"booking": booking.id}, connection=connection)
        else:
            broker().publish("booking.created", {"booking": booking.id}, connection=connection)
        raise Boom
    assert Booking.objects.count() == 0
    assert _waiting("confirmations") == []


def test_connections_by_alias_works_like_the_default_proxy(db: Path) -> None:
    from django.db import connections

    with transaction.atomic(using="default"):
        broker().queue("confirmations").put({"booking": 6}, connection=connections["default"])
    assert _waiting("confirmations") == [{"booking": 6}]


def test_a_savepoint_rolled_back_takes_its_message_with_it(db: Path) -> None:
    with transaction.atomic():
        Booking.objects.create(guest="kept")
        broker().queue("confirmations").put({"booking": 1}, connection=connection)
        with pytest.raises(Boom), transaction.atomic():
            broker().queue("confirmations").put({"booking": 2}, connection=connection)
            raise Boom
    assert _waiting("confirmations") == [{"booking": 1}]


def test_outside_atomic_the_put_autocommits_like_any_django_write(db: Path) -> None:
    assert connection.get_autocommit()
    broker().queue("confirmations").put({"booking": 5}, connection=connection)
    # Not left in an open transaction that closing the connection would roll back.
    assert not connection.in_atomic_block
    connection.close()
    assert _waiting("confirmations") == [{"booking": 5}]


def test_a_failed_atomic_block_is_refused(db: Path) -> None:
    from django.db import IntegrityError

    with transaction.atomic():
        Booking.objects.create(id=1, guest="Ada")
        try:
            with transaction.atomic(savepoint=False):
                Booking.objects.create(id=1, guest="again")
        except IntegrityError:
            pass
        with pytest.raises(pmsq.ConfigurationError, match="roll back"):
            broker().queue("confirmations").put({"booking": 1}, connection=connection)
        transaction.set_rollback(True)
    assert _waiting("confirmations") == []


def test_once_through_the_django_connection(db: Path) -> None:
    broker().queue("confirmations").put({"booking": 3})
    with broker().queue("confirmations").get() as delivery:
        assert delivery is not None
        msg = delivery.message
        for expected_first in (True, False):
            with transaction.atomic(), broker().once(msg, connection=connection) as first:
                assert first is expected_first
                if first:
                    Confirmation.objects.create(message_id=msg.id, booking_id=3)
    assert list(Confirmation.objects.values_list("message_id", flat=True)) == [msg.id]


def test_once_outside_atomic_commits_the_record_with_the_body(db: Path) -> None:
    broker().queue("confirmations").put({"booking": 4})
    msg = broker().queue("confirmations").peek(1)[0][0]
    with pytest.raises(Boom), broker().once(msg, connection=connection) as first:
        assert first
        Confirmation.objects.create(message_id=msg.id, booking_id=4)
        raise Boom
    # The body failed: neither the record nor its write stayed.
    assert Confirmation.objects.count() == 0
    with broker().once(msg, connection=connection) as first:
        assert first
        Confirmation.objects.create(message_id=msg.id, booking_id=4)
    with broker().once(msg, connection=connection) as first:
        assert not first
    assert Confirmation.objects.count() == 1


def test_a_store_in_another_file_is_refused_and_reported(db: Path, tmp_path: Path) -> None:
    from django.test import override_settings

    other = tmp_path / "queues.sqlite3"
    with override_settings(PMSQ={"URL": f"sqlite:///{other}", "DATABASE": "default"}):
        with pytest.raises(pmsq.ConfigurationError, match="same file"), transaction.atomic():
            Booking.objects.create(guest="Ada")
            broker().queue("confirmations").put({"booking": 1}, connection=connection)
        ids = [e.id for e in checks.run_checks(tags=["pmsq"])]
        assert ids == ["pmsq.E003"]
    assert Booking.objects.count() == 0


def test_system_check_passes_on_a_good_setup(db: Path) -> None:
    assert checks.run_checks(tags=["pmsq"]) == []


def test_an_in_memory_database_cannot_hold_the_store(db: Path) -> None:
    conn = connection
    conn.close()
    old = conn.settings_dict["NAME"]
    conn.settings_dict["NAME"] = ":memory:"
    try:
        found = checks.run_checks(tags=["pmsq"])
        assert [e.id for e in found] == ["pmsq.E003"]
        assert "in-memory" in found[0].msg
    finally:
        conn.close()
        conn.settings_dict["NAME"] = old


def test_the_store_follows_the_database_to_a_test_database(db: Path, tmp_path: Path) -> None:
    # What Django's test runner does: point the connection at another NAME.
    first = broker()
    broker().queue("confirmations").put({"booking": 1})
    connection.close()
    old = connection.settings_dict["NAME"]
    connection.settings_dict["NAME"] = str(tmp_path / "test_app.sqlite3")
    try:
        assert broker() is not first
        assert _waiting("confirmations") == []
        with transaction.atomic():
            broker().queue("confirmations").put({"booking": 2}, connection=connection)
        assert _waiting("confirmations") == [{"booking": 2}]
    finally:
        connection.close()
        connection.settings_dict["NAME"] = old
    assert _waiting("confirmations") == [{"booking": 1}]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, "pmsq.E001"),
        ({}, "pmsq.E001"),
        ({"URL": ""}, "pmsq.E001"),
        ({"URL": "sqlite:///x.db", "COLOR": "red"}, "pmsq.E001"),
        ({"URL": "sqlite:///x.db", "DATABASE": "replica"}, "pmsq.E001"),
        ({"URL": "nosuch://somewhere"}, "pmsq.E002"),
    ],
)
def test_system_check_reports_a_misconfigured_store(
    db: Path, setting: object, expected: str
) -> None:
    from django.test import override_settings

    with override_settings(PMSQ=setting):
        found = checks.run_checks(tags=["pmsq"])
    assert [e.id for e in found] == [expected], found
    assert all(e.level == checks.ERROR for e in found)


def test_system_check_reports_an_unreadable_store(db: Path, tmp_path: Path) -> None:
    from django.test import override_settings

    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    with override_settings(PMSQ={"URL": f"sqlite:///{junk}"}):
        found = checks.run_checks(tags=["pmsq"])
    assert [e.id for e in found] == ["pmsq.E002"]
    assert str(junk) in found[0].msg


def test_tasks_enqueue_in_the_transaction_then_run(db: Path) -> None:
    with pytest.raises(Boom), transaction.atomic():
        tasks.record.enqueue(booking=1, note="rolled back")
        raise Boom
    assert _waiting("default") == []

    with transaction.atomic():
        result = tasks.record.enqueue(7, note="kept")
        assert result.status == "READY"
    assert result.id == broker().queue("default").peek(1)[0][0].id

    assert _drain("default") == 1
    assert list(Confirmation.objects.values_list("message_id", "booking_id")) == [("task:kept", 7)]
    assert _waiting("default") == []


def test_a_failing_task_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    clock = ManualClock()
    with fresh_database(tmp_path / "app.sqlite3", OPTIONS={"clock": clock}):
        result = tasks.record.enqueue(booking=None, note="x")  # NOT NULL column: it fails
        for _ in range(2):  # the queue's max_attempts
            with pytest.raises(IntegrityError):
                _drain("default")
            clock.advance(3600)
        assert _drain("default") == 0
        dead = broker().queue("default").dead_letters().list()
        assert [d.message.id for d in dead] == [result.id]


def test_a_task_with_context_sees_its_attempt(db: Path) -> None:
    tasks.record_attempt.enqueue(booking=2)
    assert _drain("default") == 1
    assert list(Confirmation.objects.values_list("message_id", flat=True)) == ["attempt:1"]


def test_a_message_naming_no_task_is_dead_lettered_at_once(db: Path) -> None:
    broker().queue("default").put({"task": "djproject.bookings.tasks.nosuch", "args": []})
    with pytest.raises(pmsq.Reject, match="nosuch"):
        _drain("default")
    assert _drain("default") == 0
    assert len(broker().queue("default").dead_letters().list()) == 1


def _drain(queue: str) -> int:
    """Run the queue's handler (registered by broker()) over what is ready, in this thread."""
    b = broker()
    fn = b.handlers[queue].fn
    handled = 0
    while True:
        try:
            delivery = b.queue(queue).get(timeout=0)
        except pmsq.Empty:
            return handled
        with delivery:
            handled += 1
            fn(delivery.message)


# -- manage.py pmsq_worker as a real process ------------------------------------------------


def _manage(db: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    full = dict(os.environ, PMSQ_TEST_DB=str(db), DJANGO_SETTINGS_MODULE="djproject.settings")
    full["PYTHONPATH"] = os.pathsep.join([str(HERE), full.get("PYTHONPATH", "")])
    full.update(env)
    return subprocess.Popen(
        [sys.executable, str(PROJECT / "manage.py"), *args],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _count(db: Path, sql: str) -> int:
    with sqlite3.connect(db, timeout=10) as conn:
        return int(conn.execute(sql).fetchone()[0])


def test_pmsq_worker_stops_on_sigterm_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "worker.sqlite3"
    n = 40
    with fresh_database(db):
        with transaction.atomic():
            for i in range(n):
                booking = Booking.objects.create(guest=f"g{i}")
                broker().publish("booking.created", {"booking": booking.id}, connection=connection)
    # 40 messages x 0.2 s over 2 threads: about 4 s of work, so the signal lands mid-run.
    proc = _manage(db, "pmsq_worker", "--concurrency", "2", PMSQ_TEST_HANDLER_DELAY="0.2")
    try:
        deadline = time.monotonic() + 60
        while _count(db, "SELECT COUNT(*) FROM bookings_confirmation") < 2:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the worker handled nothing within 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out.decode()
    done = _count(db, "SELECT COUNT(*) FROM bookings_confirmation")
    assert 2 <= done < n, "the SIGTERM landed after the worker had finished everything"
    with fresh_database(db):
        # Nothing in flight is left behind, and what was not handled is still waiting.
        states = [s for _m, s in broker().queue("confirmations").peek(100)]
        assert states == ["ready"] * (n - done)
    # A second worker finishes the rest; every booking is confirmed exactly once.
    proc = _manage(db, "pmsq_worker", "--queues", "confirmations")
    try:
        deadline = time.monotonic() + 60
        while _count(db, "SELECT COUNT(*) FROM bookings_confirmation") < n:
            assert proc.poll() is None
            assert time.monotonic() < deadline, "the second worker did not finish within 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out.decode()
    assert _count(db, "SELECT COUNT(DISTINCT booking_id) FROM bookings_confirmation") == n
    assert _count(db, "SELECT COUNT(*) FROM bookings_confirmation") == n


def test_pmsq_worker_refuses_bad_options(tmp_path: Path) -> None:
    db = tmp_path / "opts.sqlite3"
    with fresh_database(db):
        pass
    proc = _manage(db, "pmsq_worker", "--queues", "nosuch")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert b"no handler for queue(s) nosuch" in out


def test_pmsq_worker_supervises_several_processes(tmp_path: Path) -> None:
    db = tmp_path / "procs.sqlite3"
    n = 20
    with fresh_database(db):
        with transaction.atomic():
            for i in range(n):
                broker().publish("booking.created", {"booking": i}, connection=connection)
    proc = _manage(db, "pmsq_worker", "--processes", "2", "--concurrency", "2")
    try:
        deadline = time.monotonic() + 90
        while _count(db, "SELECT COUNT(*) FROM bookings_confirmation") < n:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the supervised workers did not finish in 90 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out.decode()
    # Two children, each a process of its own: the supervisor names their pids. (Not
    # the children's own "worker started" lines: one child may drain all 20 messages
    # and be stopped before the other finished starting Django.)
    pids = {
        line.rsplit("(pid ", 1)[1].rstrip(")")
        for line in out.decode().splitlines()
        if "supervisor: started worker process" in line
    }
    assert len(pids) == 2, out.decode()
    assert _count(db, "SELECT COUNT(DISTINCT booking_id) FROM bookings_confirmation") == n
