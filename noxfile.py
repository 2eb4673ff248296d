"""The single entry point for checks: ``nox`` runs the default sessions CI runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import nox

nox.options.sessions = ["lint", "mypy", "tests", "postgres", "rabbitmq"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (unit, conformance, property, process and fault tests; docs examples)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "not slow", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def mypy(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy>=1.10")
    session.run("mypy")


@nox.session(python=PYTHON)
def torture(session: nox.Session) -> None:
    """Long fault and soak runs (not run by default)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """pmsq against persist-queue, huey and litequeue (not run by default)."""
    session.install("-e", ".", "persist-queue", "huey", "litequeue")
    session.run("python", "bench/run.py", *session.posargs)


def _plugin_sessions(path: str) -> ModuleType:
    """Each backend plugin keeps its nox session beside its code; load it from there."""
    spec = importlib.util.spec_from_file_location(Path(path).parent.name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


postgres = nox.session(python=PYTHON, name="postgres")(
    _plugin_sessions("plugins/pmsq-postgres/nox_session.py").postgres
)
rabbitmq = nox.session(python=PYTHON, name="rabbitmq")(
    _plugin_sessions("plugins/pmsq-rabbitmq/nox_session.py").rabbitmq
)
