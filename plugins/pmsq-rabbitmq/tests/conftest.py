"""Fixtures: one RabbitMQ node for the session, a fresh prefix (store) per test.

Set ``PMSQ_RABBITMQ_URL`` to test against a running server instead. Without
a server the tests skip with the reason, except under CI (``CI=true``),
where a missing server fails the run: CI must install ``rabbitmq-server``.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from rabbitmq_node import RabbitNode, find_scripts


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must install the Debian package rabbitmq-server)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def rabbit_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode | None]:
    """The session's node (``None`` when ``PMSQ_RABBITMQ_URL`` names an outside server)."""
    if os.environ.get("PMSQ_RABBITMQ_URL"):
        yield None
        return
    scripts = find_scripts()
    if scripts is None:
        _missing("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    assert scripts is not None
    node = RabbitNode(scripts, tmp_path_factory.mktemp("rabbitmq"))
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture(scope="session")
def rabbitmq_url(rabbit_node: RabbitNode | None) -> str:
    """The server's URL, without pmsq options."""
    return os.environ.get("PMSQ_RABBITMQ_URL") or (rabbit_node.url if rabbit_node else "")


@pytest.fixture
def store_url(rabbitmq_url: str) -> Iterator[str]:
    """A URL with a prefix of its own: an empty store, deleted after the test."""
    import pmsq

    url = f"{rabbitmq_url}?prefix=t{uuid.uuid4().hex[:12]}"
    yield url
    try:
        with pmsq.connect(url) as b:
            b.backend.delete_all()  # type: ignore[attr-defined]
    except pmsq.PmsqError:
        pass
