"""A FastAPI booking app with a durable outbox, run under uvicorn by test_asgi.py.

``PMSQ_TEST_DB`` is the SQLite file holding both the app's tables and the
store; ``PMSQ_TEST_HANDLER_DELAY`` slows the handler so a shutdown lands
while some are in flight.
"""

from __future__ import annotations

import os

import anyio
from fastapi import Depends, FastAPI
from sqlalchemy import Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import pmsq
from pmsq.contrib.asgi import lifespan

DB = os.environ["PMSQ_TEST_DB"]
DELAY = float(os.environ.get("PMSQ_TEST_HANDLER_DELAY", "0"))

engine = create_engine(f"sqlite:///{DB}", connect_args={"timeout": 10})
broker = pmsq.connect(DB, busy_timeout=10.0)
broker.declare_queue("confirmations")
broker.subscribe("booking.*", queue="confirmations")


class Base(DeclarativeBase):
    pass


class Booking(Base):
    __tablename__ = "bookings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guest: Mapped[str] = mapped_column(String(80))


class Confirmation(Base):
    __tablename__ = "confirmations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(40))
    booking_id: Mapped[int] = mapped_column(Integer)


Base.metadata.create_all(engine)


@broker.handler("confirmations", concurrency=4)
async def confirm(message: pmsq.Message) -> None:
    await anyio.sleep(DELAY)

    def record() -> None:
        with Session(engine) as session:
            with broker.once(message, connection=session) as first:
                if first:
                    session.add(
                        Confirmation(message_id=message.id, booking_id=message.payload["booking"])
                    )
            session.commit()

    await anyio.to_thread.run_sync(record)


app = FastAPI(lifespan=lifespan(broker, shutdown_timeout=30.0, close=True))


def session() -> object:
    with Session(engine) as s:
        yield s


@app.post("/bookings")
def create_booking(guest: str, db: Session = Depends(session)) -> dict[str, int]:  # noqa: B008
    booking = Booking(guest=guest)
    db.add(booking)
    db.flush()
    broker.publish("booking.created", {"booking": booking.id}, connection=db)
    db.commit()
    return {"id": booking.id}
