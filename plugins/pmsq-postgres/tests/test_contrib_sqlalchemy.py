"""``connection=`` with real SQLAlchemy 2 (Core and ORM) on a PostgreSQL store."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

pytest.importorskip("sqlalchemy")

from pgserver import PgServer
from sqlalchemy import Integer, String, create_engine, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import pmsq


class Base(DeclarativeBase):
    pass


class Booking(Base):
    __tablename__ = "sa_bookings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guest: Mapped[str] = mapped_column(String(80))


class Effect(Base):
    __tablename__ = "sa_effects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(40))


def _sa_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def engine(pg_server: PgServer, broker: pmsq.Broker) -> Iterator[Engine]:
    eng = create_engine(_sa_url(pg_server.url))
    Base.metadata.drop_all(eng)
    Base.metadata.create_all(eng)
    try:
        yield eng
    finally:
        Base.metadata.drop_all(eng)
        eng.dispose()


@pytest.fixture
def store(broker: pmsq.Broker) -> pmsq.Broker:
    broker.declare_queue("calendar")
    broker.subscribe("booking.*", queue="calendar")
    return broker


def _stored(store: pmsq.Broker) -> list[object]:
    return [m.payload for m, _state in store.queue("calendar").peek(10)]


def _bookings(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM sa_bookings")).scalar_one())


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
@pytest.mark.parametrize("via", ["put", "publish"])
def test_orm_session_commits_or_rolls_back_row_and_message(
    store: pmsq.Broker, engine: Engine, commit: bool, via: str
) -> None:
    with Session(engine) as session:
        # The put is the session's first statement: it begins the session's transaction.
        if via == "put":
            store.queue("calendar").put({"booking": 1}, connection=session)
        else:
            store.publish("booking.created", {"booking": 1}, connection=session)
        session.add(Booking(id=1, guest="Ada"))
        assert _stored(store) == []  # not visible before the app commits
        if commit:
            session.commit()
        else:
            session.rollback()
    assert _bookings(engine) == (1 if commit else 0)
    assert _stored(store) == ([{"booking": 1}] if commit else [])


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_core_connection_commits_or_rolls_back_together(
    store: pmsq.Broker, engine: Engine, commit: bool
) -> None:
    with engine.connect() as conn:
        store.queue("calendar").put({"booking": 2}, connection=conn)
        conn.execute(text("INSERT INTO sa_bookings (id, guest) VALUES (2, 'Lin')"))
        if commit:
            conn.commit()
    # Closing without commit rolls back (the pool resets the connection).
    assert _bookings(engine) == (1 if commit else 0)
    assert _stored(store) == ([{"booking": 2}] if commit else [])


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_a_booking_cancelled_with_its_reminders_in_one_session(
    store: pmsq.Broker, engine: Engine, commit: bool
) -> None:
    q = store.queue("calendar")
    for n in range(3):
        q.put({"reminder": n}, key="booking:8812")
    with Session(engine) as session:
        session.add(Booking(id=8812, guest="Ada"))
        session.commit()
    with Session(engine) as session:
        session.get_one(Booking, 8812).guest = "cancelled"
        assert q.cancel(key="booking:8812", connection=session) == 3
        assert len(_stored(store)) == 3  # not gone before the app commits
        if commit:
            session.commit()
        else:
            session.rollback()
    with Session(engine) as session:
        assert session.get_one(Booking, 8812).guest == ("cancelled" if commit else "Ada")
    assert len(_stored(store)) == (0 if commit else 3)


def test_once_through_the_orm_session(store: pmsq.Broker, engine: Engine) -> None:
    store.queue("calendar").put({"booking": 5})
    with store.queue("calendar").get() as delivery:
        msg = delivery.message
        with Session(engine) as session:
            with store.once(msg, connection=session) as first:
                assert first
                session.add(Effect(message_id=msg.id))
            session.rollback()
        for expected in (True, False):
            with Session(engine) as session:
                with store.once(msg, connection=session) as first:
                    assert first is expected
                    if first:
                        session.add(Effect(message_id=msg.id))
                session.commit()
    with Session(engine) as session:
        assert session.scalars(select(Effect.message_id)).all() == [msg.id]


def test_another_database_on_the_same_server_is_refused(
    store: pmsq.Broker, pg_server: PgServer, schema: str
) -> None:
    # The other database even has a schema of the store's name with its tables:
    # only the database identity tells them apart.
    other = f"other_{schema}"
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{other}"')
    other_url = pg_server.url.rsplit("/", 1)[0] + f"/{other}"
    try:
        pmsq.connect(f"{other_url}?schema={schema}").close()
        eng = create_engine(_sa_url(other_url))
        try:
            with Session(eng) as session:
                with pytest.raises(pmsq.ConfigurationError, match="must reach the database"):
                    store.queue("calendar").put({"booking": 1}, connection=session)
                session.rollback()
                msg = pmsq.Message(id="m1", queue="calendar", payload=None)
                with (
                    pytest.raises(pmsq.ConfigurationError, match="must reach the database"),
                    store.once(msg, connection=session),
                ):
                    pass
        finally:
            eng.dispose()
    finally:
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{other}" WITH (FORCE)')
    assert _stored(store) == []


def test_the_same_database_name_on_another_server_is_refused(
    store: pmsq.Broker, pg_server: PgServer, schema: str
) -> None:
    second = PgServer(pg_server.bindir)
    second.start()
    try:
        # Same database name, same schema, same tables: another server all the same.
        pmsq.connect(f"{second.url}?schema={schema}").close()
        with psycopg.connect(second.url) as conn:
            with pytest.raises(pmsq.ConfigurationError, match="server started"):
                store.queue("calendar").put({"booking": 1}, connection=conn)
            conn.rollback()
    finally:
        second.stop()
    assert _stored(store) == []
