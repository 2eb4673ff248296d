"""``connection=`` with real SQLAlchemy 2 (Core ``Connection`` and ORM ``Session``) on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")

from sqlalchemy import Integer, String, create_engine, event, select, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column  # noqa: E402

import pmsq  # noqa: E402
from pmsq.clock import ManualClock  # noqa: E402


class Base(DeclarativeBase):
    pass


class Booking(Base):
    __tablename__ = "bookings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guest: Mapped[str] = mapped_column(String(80))


class Effect(Base):
    __tablename__ = "effects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(40))


@pytest.fixture
def store(db_path: Path, clock: ManualClock) -> Iterator[pmsq.Broker]:
    with pmsq.connect(str(db_path), clock=clock, durability="normal", busy_timeout=5.0) as b:
        b.declare_queue("calendar")
        b.subscribe("booking.*", queue="calendar")
        yield b


@pytest.fixture
def engine(db_path: Path, store: pmsq.Broker) -> Iterator[Engine]:
    eng = create_engine(f"sqlite:///{db_path}", connect_args={"timeout": 5.0})
    Base.metadata.create_all(eng)
    try:
        yield eng
    finally:
        eng.dispose()


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _stored(store: pmsq.Broker) -> list[object]:
    return [m.payload for m, _state in store.queue("calendar").peek(10)]


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
@pytest.mark.parametrize("via", ["put", "put_many", "publish"])
def test_session_commits_or_rolls_back_row_and_message_together(
    store: pmsq.Broker, engine: Engine, db_path: Path, commit: bool, via: str
) -> None:
    with Session(engine) as session:
        session.add(Booking(id=8812, guest="Ada"))
        if via == "put":
            store.queue("calendar").put({"booking": 8812}, connection=session)
        elif via == "put_many":
            store.queue("calendar").put_many([{"booking": 8812}], connection=session)
        else:
            store.publish("booking.created", {"booking": 8812}, connection=session)
        # Before the app commits, nothing is visible from another connection.
        assert _count(db_path, "pmsq_messages") == 0
        if commit:
            session.commit()
        else:
            session.rollback()
    assert _count(db_path, "bookings") == (1 if commit else 0)
    assert _stored(store) == ([{"booking": 8812}] if commit else [])


def test_session_with_no_transaction_begun_joins_the_one_it_commits(
    store: pmsq.Broker, engine: Engine, db_path: Path
) -> None:
    # The put is the session's first statement: it must begin the session's
    # transaction, not commit on its own, and not be lost when the session closes.
    with Session(engine) as session:
        assert not session.in_transaction()
        store.queue("calendar").put({"booking": 1}, connection=session)
        assert session.in_transaction()
        session.add(Booking(id=1, guest="Grace"))
        session.commit()
    assert _count(db_path, "bookings") == 1
    assert _stored(store) == [{"booking": 1}]

    with Session(engine) as session:
        store.queue("calendar").put({"booking": 2}, connection=session)
        # Closing without commit: the session's transaction (and the message) rolls back.
    assert _stored(store) == [{"booking": 1}]


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_core_connection_commits_or_rolls_back_together(
    store: pmsq.Broker, engine: Engine, db_path: Path, commit: bool
) -> None:
    with engine.connect() as conn:
        # The put first: a Connection that has begun nothing would make commit()
        # a no-op and drop the message when the connection goes back to the pool.
        store.queue("calendar").put({"booking": 7}, connection=conn)
        conn.execute(text("INSERT INTO bookings (id, guest) VALUES (7, 'Lin')"))
        if commit:
            conn.commit()
        else:
            conn.rollback()
    assert _count(db_path, "bookings") == (1 if commit else 0)
    assert _stored(store) == ([{"booking": 7}] if commit else [])


def test_core_engine_begin_block(store: pmsq.Broker, engine: Engine, db_path: Path) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO bookings (id, guest) VALUES (3, 'Kay')"))
        store.publish("booking.created", {"booking": 3}, connection=conn)
    assert _count(db_path, "bookings") == 1
    assert _stored(store) == [{"booking": 3}]

    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(text("INSERT INTO bookings (id, guest) VALUES (4, 'Max')"))
        store.publish("booking.created", {"booking": 4}, connection=conn)
        raise RuntimeError("the app fails after the put")
    assert _count(db_path, "bookings") == 1
    assert _stored(store) == [{"booking": 3}]


def test_once_through_the_orm_session(store: pmsq.Broker, engine: Engine, db_path: Path) -> None:
    store.queue("calendar").put({"booking": 5})
    with store.queue("calendar").get() as delivery:
        assert delivery is not None
        msg = delivery.message
        # First attempt: the effect and the record are rolled back together.
        with Session(engine) as session:
            with store.once(msg, connection=session) as first:
                assert first
                session.add(Effect(message_id=msg.id))
            session.rollback()
        # Second attempt: still new (nothing was recorded); this one commits.
        with Session(engine) as session:
            with store.once(msg, connection=session) as first:
                assert first
                session.add(Effect(message_id=msg.id))
            session.commit()
        # A redelivery sees the record and skips the effect.
        with Session(engine) as session:
            with store.once(msg, connection=session) as first:
                assert not first
            session.commit()
    with Session(engine) as session:
        assert session.scalars(select(Effect.message_id)).all() == [msg.id]


def test_a_connection_to_another_file_is_refused(
    store: pmsq.Broker, tmp_path: Path, db_path: Path
) -> None:
    other = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    Base.metadata.create_all(other)
    try:
        with Session(other) as session:
            session.add(Booking(id=1, guest="Bo"))
            with pytest.raises(pmsq.ConfigurationError, match="same file"):
                store.queue("calendar").put({"booking": 1}, connection=session)
            with pytest.raises(pmsq.ConfigurationError, match="same file"):
                store.publish("booking.created", {"booking": 1}, connection=session)
            session.commit()
    finally:
        other.dispose()
    assert _stored(store) == []


def test_an_in_memory_engine_is_refused(store: pmsq.Broker) -> None:
    mem = create_engine("sqlite://")
    try:
        with mem.connect() as conn, pytest.raises(pmsq.ConfigurationError, match="in-memory"):
            store.queue("calendar").put(1, connection=conn)
    finally:
        mem.dispose()


def test_an_engine_is_refused_with_what_to_pass(store: pmsq.Broker, engine: Engine) -> None:
    with pytest.raises(pmsq.ConfigurationError, match=r"Engine.*Connection"):
        store.queue("calendar").put(1, connection=engine)
    assert _stored(store) == []


def test_the_app_sees_its_own_uncommitted_message_and_commits_once(
    store: pmsq.Broker, engine: Engine, db_path: Path
) -> None:
    statements: list[str] = []

    @event.listens_for(engine, "commit")
    def count_commits(conn: object) -> None:
        statements.append("COMMIT")

    with Session(engine) as session:
        session.add(Booking(id=9, guest="Ode"))
        session.flush()
        store.queue("calendar").put({"booking": 9}, connection=session)
        inside = session.execute(text("SELECT COUNT(*) FROM pmsq_messages")).scalar_one()
        assert inside == 1
        session.commit()
    assert statements == ["COMMIT"]
    assert _stored(store) == [{"booking": 9}]


def test_an_apps_own_session_subclass_is_understood(
    store: pmsq.Broker, engine: Engine, db_path: Path
) -> None:
    class AppSession(Session):
        pass

    with AppSession(engine) as session:
        session.add(Booking(id=11, guest="Sub"))
        store.queue("calendar").put({"booking": 11}, connection=session)
        session.commit()
    assert _stored(store) == [{"booking": 11}]


def test_a_closed_connection_is_refused(store: pmsq.Broker, engine: Engine) -> None:
    conn = engine.connect()
    conn.close()
    with pytest.raises(pmsq.ConfigurationError, match="closed"):
        store.queue("calendar").put(1, connection=conn)
