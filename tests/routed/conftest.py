"""The routed tests reuse the operator commands' runner."""

from cli.conftest import cli

__all__ = ["cli"]
