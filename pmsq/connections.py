"""What ``connection=`` accepts: the app's own database connection, whatever wraps it.

``put``, ``put_many``, ``publish`` and ``once`` write through the app's
connection so the message (or the exactly-once record) commits with the
app's own rows. Backends take the DB-API connection (``sqlite3.Connection``,
``psycopg.Connection``); web apps hold it inside a framework object. This
module unwraps, without importing any framework until it is handed one:

* a DB-API connection is passed through;
* a SQLAlchemy 2 ``Connection`` joins its transaction (one is begun when
  none is, so the app's ``commit()`` commits the message: a ``Connection``
  that never began one would treat ``commit()`` as a no-op and the message
  would be rolled back when the connection went back to the pool);
* a SQLAlchemy ``Session`` (ORM) gives its connection, which begins the
  session's transaction when none is begun yet: ``session.commit()`` then
  commits the message with the session's rows;
* a Django connection (``django.db.connection``, ``connections[alias]``)
  joins the ``transaction.atomic`` block it is in; outside one, Django
  autocommits every write, and so does pmsq: the put runs in its own
  ``atomic`` block, and for ``once`` that block spans the ``with`` body,
  so the record and the body's writes commit together.

The backend then checks that the unwrapped connection reaches the store's
own database (SQLite: the same file; PostgreSQL: the same database on the
same server) and refuses any other with ``ConfigurationError``: a message
written elsewhere would commit separately from the app's rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from pmsq.errors import ConfigurationError

__all__ = ["app_connection", "bindings_through", "joined_once"]


def _family(connection: Any) -> str:
    """``"sqlalchemy"`` or ``"django"`` when ``connection``'s class comes from one (or "")."""
    # The MRO, not the class alone: apps subclass Session (class AppSession(Session)).
    for cls in type(connection).__mro__:
        top = cls.__module__.partition(".")[0]
        if top in ("sqlalchemy", "django"):
            return top
    return ""


@contextlib.contextmanager
def app_connection(connection: Any, what: str = "connection=") -> Iterator[Any]:
    """Yield the DB-API connection behind ``connection``, inside the app's transaction.

    ``None`` yields ``None`` (the broker's own connection is used).

    Args:
        connection: A DB-API connection, a SQLAlchemy ``Connection`` or
            ``Session``, or a Django database connection.
        what: How the caller names the argument in errors (``"once(connection=...)"``).

    Yields:
        The DB-API connection the backend writes through.

    Raises:
        ConfigurationError: ``connection`` is an object that cannot join a
            transaction (a SQLAlchemy ``Engine``, an async session, a closed
            connection, a Django block marked for rollback).
    """
    family = _family(connection)
    if family == "sqlalchemy":
        yield _sqlalchemy(connection, what)
    elif family == "django":
        with _django(connection, what) as raw:
            yield raw
    else:
        yield connection


@contextlib.contextmanager
def joined_once(
    connection: Any, record: Callable[[Any], contextlib.AbstractContextManager[bool]]
) -> Iterator[bool]:
    """``broker.once`` on any :func:`app_connection` value: ``record(raw)`` inside it.

    Args:
        connection: What the app passed as ``once(connection=...)``.
        record: The backend's ``once`` context manager, given the DB-API connection.

    Yields:
        Whether the message is new for the consumer (``record``'s value).
    """
    with app_connection(connection, "once(connection=...)") as raw, record(raw) as first:
        yield first


def bindings_through(backend: Any, connection: Any) -> list[tuple[str, str]]:
    """The store's topic bindings, for a ``publish`` that writes through ``connection``.

    A backend with ``bindings_on(raw)`` (SQLite) reads them through the app's
    connection: the app's transaction may hold the store's write lock, and a
    read through the backend's own connection would queue behind the
    backend's writers, which wait for that very lock (an in-process worker
    and a request deadlocked until ``busy_timeout``).

    Args:
        backend: The broker's backend.
        connection: What the app passed as ``connection=``, or ``None``.

    Returns:
        ``(pattern, queue)`` pairs.
    """
    reader = getattr(backend, "bindings_on", None)
    if connection is None or reader is None:
        return backend.bindings()  # type: ignore[no-any-return]
    with app_connection(connection) as raw:
        return reader(raw)  # type: ignore[no-any-return]


def _sqlalchemy(connection: Any, what: str) -> Any:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import Session, scoped_session

    # By name: importing sqlalchemy.ext.asyncio needs greenlet, which sync apps may lack.
    if type(connection).__name__ in ("AsyncConnection", "AsyncSession", "AsyncEngine"):
        raise ConfigurationError(
            f"{what} got a SQLAlchemy {type(connection).__name__}: the outbox writes through "
            "a sync DB-API connection; use a sync Session or Connection for this work "
            "(FastAPI runs plain `def` endpoints in a thread pool)"
        )
    if isinstance(connection, Engine):
        raise ConfigurationError(
            f"{what} got a SQLAlchemy Engine, which has no transaction to join; pass the "
            "Connection (`with engine.begin() as conn:`) or the Session the app commits"
        )
    if isinstance(connection, (Session, scoped_session)):
        # Begins the session's transaction if none is begun: session.commit() ends it.
        connection = connection.connection()
    if not isinstance(connection, Connection):
        raise ConfigurationError(
            f"{what} got a SQLAlchemy {type(connection).__name__}; pass a Connection or a Session"
        )
    if connection.closed or connection.invalidated:
        raise ConfigurationError(f"{what}: the SQLAlchemy Connection is closed")
    if not connection.in_transaction():
        connection.begin()
    return connection.connection.driver_connection


@contextlib.contextmanager
def _django(connection: Any, what: str) -> Iterator[Any]:
    from django.db import transaction
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.utils.connection import ConnectionProxy

    if isinstance(connection, ConnectionProxy):
        connection = connection._connections[connection._alias]
    if not isinstance(connection, BaseDatabaseWrapper):
        raise ConfigurationError(
            f"{what} got a Django {type(connection).__name__}; pass "
            "django.db.connection or django.db.connections[alias]"
        )
    if connection.in_atomic_block:
        if connection.needs_rollback:
            raise ConfigurationError(
                f"{what}: this transaction.atomic block already failed and will roll back; "
                "nothing written in it can commit"
            )
        connection.ensure_connection()
        yield connection.connection
        return
    # Outside atomic Django autocommits each write; a block of our own does the same
    # for the message (and, for once, for the record and the body's writes together).
    with transaction.atomic(using=connection.alias):
        connection.ensure_connection()
        yield connection.connection
