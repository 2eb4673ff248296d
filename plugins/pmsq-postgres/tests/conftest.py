"""Fixtures: one PostgreSQL server per test session, a fresh schema per test."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pmsq
from pmsq.clock import ManualClock

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgserver import PgServer, drop_schema, find_bindir

_schemas = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server on 127.0.0.1 and a free port, stopped after the session.

    Missing binaries fail the run in CI (``CI=true``) and skip it elsewhere.
    """
    bindir = find_bindir()
    if bindir is None:
        reason = (
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); "
            "install them with: apt-get install -y postgresql"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def schema(pg_server: PgServer) -> Iterator[str]:
    """A schema name no other test uses, dropped afterwards."""
    name = f"t{os.getpid()}_{next(_schemas)}"
    try:
        yield name
    finally:
        drop_schema(pg_server.url, name)


@pytest.fixture
def pg_url(pg_server: PgServer, schema: str) -> str:
    """The store URL of this test (its own schema)."""
    return f"{pg_server.url}?schema={schema}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def connect(pg_url: str, clock: ManualClock) -> Iterator[Callable[..., pmsq.Broker]]:
    """Open brokers on this test's store (manual clock by default); all closed afterwards."""
    opened: list[pmsq.Broker] = []

    def make(**kwargs: object) -> pmsq.Broker:
        kwargs.setdefault("clock", clock)
        b = pmsq.connect(pg_url, **kwargs)  # type: ignore[arg-type]
        opened.append(b)
        return b

    try:
        yield make
    finally:
        for b in opened:
            b.close()


@pytest.fixture
def broker(connect: Callable[..., pmsq.Broker]) -> pmsq.Broker:
    return connect()
