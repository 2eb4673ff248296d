"""The single entry point for checks: ``nox`` runs the default sessions CI runs."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import nox

nox.options.sessions = ["lint", "mypy", "tests", "postgres", "rabbitmq"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
# A session whose interpreter is missing fails the run: nothing is skipped quietly.
nox.options.error_on_missing_interpreters = True

OLDEST = (3, 11)  # pyproject.toml: requires-python = ">=3.11"


def _works(command: str) -> bool:
    # pyenv puts shims on PATH for versions that are installed but not selected.
    if shutil.which(command) is None:
        return False
    try:
        done = subprocess.run([command, "-c", ""], capture_output=True, timeout=30, check=False)
    except OSError:
        return False
    return done.returncode == 0


def session_python() -> str:
    """The one interpreter every session runs on.

    The interpreter running nox when pmsq supports it (``python3.12 -m nox``
    tests on 3.12), so the test command works on any supported Python a
    machine has; under an older one, the newest supported ``python3.X`` on
    PATH. ``nox --force-python 3.13`` picks another.
    """
    if sys.version_info[:2] >= OLDEST:
        return f"{sys.version_info[0]}.{sys.version_info[1]}"
    for minor in range(20, OLDEST[1] - 1, -1):
        if _works(f"python3.{minor}"):
            return f"3.{minor}"
    # None found: nox then fails with "interpreter 3.11 not found".
    return f"{OLDEST[0]}.{OLDEST[1]}"


PYTHON = session_python()


@nox.session(python=[PYTHON])
def tests(session: nox.Session) -> None:
    """The test suite (unit, conformance, property, process and fault tests; docs examples)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "not slow", *session.posargs)


@nox.session(python=[PYTHON])
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=[PYTHON])
def mypy(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy>=1.10")
    session.run("mypy")


@nox.session(python=[PYTHON])
def torture(session: nox.Session) -> None:
    """Long fault and soak runs (not run by default)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session(python=[PYTHON])
def bench(session: nox.Session) -> None:
    """pmsq against persist-queue, huey and litequeue, and the plugins (not run by default)."""
    session.install(
        "-e",
        ".",
        "persist-queue",
        "huey",
        "litequeue",
        "-e",
        "plugins/pmsq-postgres",
        "-e",
        "plugins/pmsq-rabbitmq",
    )
    session.run("python", "bench/run.py", *session.posargs)
    session.run("python", "bench/plugins.py", *session.posargs)


def _plugin_sessions(path: str) -> ModuleType:
    """Each backend plugin keeps its nox session beside its code; load it from there."""
    spec = importlib.util.spec_from_file_location(Path(path).parent.name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


postgres = nox.session(python=[PYTHON], name="postgres")(
    _plugin_sessions("plugins/pmsq-postgres/nox_session.py").postgres
)
rabbitmq = nox.session(python=[PYTHON], name="rabbitmq")(
    _plugin_sessions("plugins/pmsq-rabbitmq/nox_session.py").rabbitmq
)
