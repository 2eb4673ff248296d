"""The CLI runner of the operator-command tests, for ``pmsq migrate``."""

from __future__ import annotations

from tests.cli.conftest import cli

__all__ = ["cli"]
