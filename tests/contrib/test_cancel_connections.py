"""``Queue.cancel(connection=)`` through the app's SQLAlchemy session and Django connection.

The cookbook's story: a booking is cancelled and its reminders withdrawn in
one transaction. A rollback keeps both the booking and its reminders; a
commit removes the reminders with the booking's update.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import pmsq
from pmsq.clock import ManualClock


@pytest.fixture
def store(db_path: Path, clock: ManualClock) -> Iterator[pmsq.Broker]:
    with pmsq.connect(str(db_path), clock=clock, durability="normal", busy_timeout=5.0) as b:
        b.declare_queue("reminders")
        yield b


def _reminders(store: pmsq.Broker, booking: str, n: int = 3) -> list[str]:
    q = store.queue("reminders")
    return [q.put({"n": i}, key=booking, tenant="acme", delay=3600.0 * i) for i in range(n)]


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
@pytest.mark.parametrize("how", ["session", "core"])
def test_sqlalchemy_cancel_commits_or_rolls_back_with_the_app(
    store: pmsq.Broker, db_path: Path, commit: bool, how: str
) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.orm import Session

    engine = sqlalchemy.create_engine(f"sqlite:///{db_path}", connect_args={"timeout": 5.0})
    try:
        with engine.begin() as c:
            c.execute(sqlalchemy.text("CREATE TABLE bookings (id TEXT PRIMARY KEY, status TEXT)"))
            c.execute(sqlalchemy.text("INSERT INTO bookings VALUES ('8812', 'confirmed')"))
        mids = _reminders(store, "booking:8812")
        q = store.tenant("acme").queue("reminders")
        update = sqlalchemy.text("UPDATE bookings SET status = 'cancelled' WHERE id = '8812'")
        if how == "session":
            with Session(engine) as session:
                session.execute(update)
                assert q.cancel(key="booking:8812", connection=session) == 3
                if commit:
                    session.commit()
                else:
                    session.rollback()
        else:
            with engine.connect() as conn:
                conn.execute(update)
                assert q.cancel(mids[0], connection=conn) is True
                if commit:
                    conn.commit()
                else:
                    conn.rollback()
        with engine.connect() as c:
            status = c.execute(sqlalchemy.text("SELECT status FROM bookings")).scalar_one()
    finally:
        engine.dispose()
    assert status == ("cancelled" if commit else "confirmed")
    left = store.stats("reminders").depth
    if not commit:
        assert left == 3, "a rolled-back cancel withdrew reminders"
    else:
        assert left == (0 if how == "session" else 2)


def test_django_cancel_joins_the_atomic_block(tmp_path: Path) -> None:
    pytest.importorskip("django")
    pytest.importorskip("django_tasks")
    from ._django import fresh_database, setup_django

    setup_django()
    from django.db import connection, transaction
    from djproject.bookings.models import Booking

    from pmsq.contrib.django import broker

    class Boom(Exception):
        pass

    with fresh_database(tmp_path / "app.sqlite3"):
        booking = Booking.objects.create(guest="Ada")
        q = broker().queue("reminders")
        key = f"booking:{booking.id}"
        mids = [q.put({"n": i}, key=key, delay=3600.0) for i in range(2)]
        with pytest.raises(Boom), transaction.atomic():
            Booking.objects.filter(id=booking.id).update(guest="cancelled")
            assert q.cancel(key=key, connection=connection) == 2
            raise Boom
        assert Booking.objects.get(id=booking.id).guest == "Ada"
        assert q.stats().depth == 2
        with transaction.atomic():
            Booking.objects.filter(id=booking.id).update(guest="cancelled")
            assert q.cancel(mids[0], connection=connection) is True
        assert q.stats().depth == 1
