"""Storage backends: the ``Backend`` interface, its families and values, URL resolution.

- :class:`Backend` (``pmsq.backends.base``): the required verbs.
- The optional families (``pmsq.backends.families``): ``TransactionalPut``,
  ``Once``, ``History``, ``Transfer``, ``Settings``, ``Inspect``; message
  control is ``Control`` (``pmsq.backends.control_family``).
- The values crossing the seam (``pmsq.backends.types``): ``Envelope``,
  ``Claimed``, ``Receipt``, ``Settlement``...
"""

from pmsq.backends.base import Backend, Capabilities
from pmsq.backends.control_family import Control
from pmsq.backends.families import (
    Family,
    History,
    Inspect,
    Once,
    Settings,
    TransactionalPut,
    Transfer,
)
from pmsq.backends.registry import installed_schemes, open_backend
from pmsq.backends.types import (
    Claimed,
    DedupRecord,
    Envelope,
    HistoryEvent,
    PauseRecord,
    Readiness,
    Receipt,
    Settlement,
    StoredDeadLetter,
    StoredMessage,
)

__all__ = [
    "Backend",
    "Capabilities",
    "Claimed",
    "Control",
    "DedupRecord",
    "Envelope",
    "Family",
    "History",
    "HistoryEvent",
    "Inspect",
    "Once",
    "PauseRecord",
    "Readiness",
    "Receipt",
    "Settings",
    "Settlement",
    "StoredDeadLetter",
    "StoredMessage",
    "TransactionalPut",
    "Transfer",
    "installed_schemes",
    "open_backend",
]
