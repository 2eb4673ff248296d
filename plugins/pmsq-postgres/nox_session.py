"""The nox session of the PostgreSQL plugin; ``noxfile.py`` registers it as ``postgres``.

The tests start a throwaway PostgreSQL server of their own from the Debian
binaries (``/usr/lib/postgresql/*/bin``; ``scripts/install-test-deps.sh``
installs the ``postgresql`` package), so no server needs to be running.
Without the binaries the tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import glob
from typing import Any

PLUGIN = "plugins/pmsq-postgres"


def postgres(session: Any) -> None:
    """PostgreSQL backend: conformance suite, concurrency and multi-process tests."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        session.warn("PostgreSQL server binaries not found: apt-get install -y postgresql")
    session.install("-e", ".[test]", "-e", f"{PLUGIN}[test]", "mypy>=1.10")
    session.run("mypy", f"{PLUGIN}/pmsq_postgres")
    session.run("pytest", f"{PLUGIN}/tests", "-m", "not slow", *session.posargs)
