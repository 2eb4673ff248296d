"""Storage backends: the ``Backend`` interface and URL-scheme resolution."""

from pmsq.backends.base import (
    Backend,
    Capabilities,
    Claimed,
    Envelope,
    Receipt,
    StoredDeadLetter,
)
from pmsq.backends.registry import installed_schemes, open_backend

__all__ = [
    "Backend",
    "Capabilities",
    "Claimed",
    "Envelope",
    "Receipt",
    "StoredDeadLetter",
    "installed_schemes",
    "open_backend",
]
