"""The nox session of the RabbitMQ plugin, for the project's ``noxfile.py``.

Needs the Debian package ``rabbitmq-server`` (the tests start a throwaway
node of their own on free loopback ports; under ``CI=true`` a missing server
fails the run instead of skipping).
"""

from __future__ import annotations

import nox

PLUGIN = "plugins/pmsq-rabbitmq"


def rabbitmq(session: nox.Session) -> None:
    """RabbitMQ plugin: conformance suite, own tests, crash test; mypy --strict on the plugin."""
    session.install("-e", ".[test]", "-e", f"{PLUGIN}[test]", "mypy>=1.10")
    session.run("mypy", f"{PLUGIN}/pmsq_rabbitmq")
    session.run("pytest", f"{PLUGIN}/tests", "-m", "not slow", *session.posargs)
