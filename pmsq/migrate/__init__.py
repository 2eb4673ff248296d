"""``pmsq migrate``: move queues, bindings, messages and dead letters between stores.

Sources are pmsq stores of any backend that can export (SQLite,
PostgreSQL) and persist-queue ``SQLiteAckQueue`` files; destinations are
stores whose backend can import. See ``docs/moving-to-postgresql.md``.
"""

from __future__ import annotations

from pmsq.migrate.copy import MigrationResult, QueueCheck, check_queues, copy, verify
from pmsq.migrate.persistqueue import PersistQueueSource, parse_persistqueue_url
from pmsq.migrate.sources import (
    BackendSource,
    Counts,
    OneQueue,
    Source,
    require_export,
    require_import,
)

__all__ = [
    "BackendSource",
    "Counts",
    "MigrationResult",
    "OneQueue",
    "PersistQueueSource",
    "QueueCheck",
    "Source",
    "check_queues",
    "copy",
    "parse_persistqueue_url",
    "require_export",
    "require_import",
    "verify",
]
