"""Copying a source into a destination store, and checking the result.

Safe to interrupt and run again: message ids are kept, and importing an id
the destination already holds is skipped, so a second run copies only
what is missing and never duplicates. Each page is one destination
transaction, so an interruption loses at most the page in progress, which
the next run copies again. Queue declarations and schedules are compared
before anything is written: a destination queue declared with other options,
or a schedule of the same name defined otherwise, stops the migration with
nothing changed. Pauses are set before the messages arrive (a held queue
never flows in the destination meanwhile) and schedules are stored last,
after the dedup ids that guard their slots (``pmsq.migrate.extras``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

from pmsq.backends.base import Backend
from pmsq.backends.families import Transfer
from pmsq.config import QueueConfig
from pmsq.errors import ConfigurationError
from pmsq.migrate.extras import check_extras, copy_pauses, copy_schedules
from pmsq.migrate.sources import Counts, Source

__all__ = ["MigrationResult", "QueueCheck", "check_queues", "copy", "verify"]


@attrs.frozen
class QueueCheck:
    """One queue's counts in the source and the destination after a migration."""

    queue: str
    source_pending: int
    dest_pending: int
    source_dead: int
    dest_dead: int

    @property
    def ok(self) -> bool:
        """Whether the destination holds exactly what the source holds."""
        return (self.source_pending, self.source_dead) == (self.dest_pending, self.dest_dead)


@attrs.frozen
class MigrationResult:
    """What one run did: messages copied now, already present, dedup ids, warnings,
    and the schedules and pauses it added."""

    copied: int
    skipped: int
    dedup_copied: int
    warnings: tuple[str, ...]
    schedules_copied: int = 0
    pauses_copied: int = 0


def _differences(a: QueueConfig, b: QueueConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))


def check_queues(source: Source, dest: Backend, *, declare: bool) -> list[QueueConfig]:
    """Compare the source's declarations with the destination's; return the source's.

    Args:
        declare: The source's declarations are authoritative (a pmsq store);
            otherwise the destination's declaration, if any, is kept.

    Raises:
        ConfigurationError: a queue exists in the destination with other options.
    """
    configs = source.queues()
    if not declare:
        return configs
    conflicts = []
    for cfg in configs:
        theirs = dest.queue_config(cfg.name)
        if theirs is not None and theirs != cfg:
            conflicts.append(f"{cfg.name} ({', '.join(_differences(cfg, theirs))})")
    if conflicts:
        raise ConfigurationError(
            "the destination already declares queue(s) with other options: "
            + "; ".join(conflicts)
            + "; re-declare them there as in the source, or migrate into an empty store"
        )
    return configs


def copy(
    source: Source,
    dest: Backend,
    *,
    batch: int = 500,
    declare: bool = True,
    on_page: Callable[[str, int], None] | None = None,
) -> MigrationResult:
    """Copy declarations, bindings, pauses, messages, dedup ids and schedules into ``dest``.

    Args:
        source: What to read (never written to).
        dest: The store to fill.
        batch: Messages per page (one destination transaction each).
        declare: Declare the source's queue options in ``dest`` (pmsq
            sources); otherwise only create queues ``dest`` lacks.
        on_page: Called with ``(queue, messages in the page)`` after each page.

    Raises:
        ConfigurationError: conflicting declarations, or a backend that cannot export or import.
        SerializationError: a source item that cannot be stored.
        StorageError: either store failed.
    """
    configs = check_queues(source, dest, declare=declare)
    check_extras(source, dest)
    for cfg in configs:
        if declare:
            if dest.queue_config(cfg.name) is None:
                dest.declare_queue(cfg)
        else:
            dest.ensure_queue(cfg)
    for pattern, queue in source.bindings():
        dest.bind(pattern, queue)
    copied = skipped = dedup = 0
    warnings: list[str] = []
    pauses = copy_pauses(source, dest, warnings)
    for cfg in configs:
        for page in source.pages(cfg.name, batch):
            new = Transfer.of(dest, "import_messages").import_messages(page, now=time.time())
            copied += new
            skipped += len(page) - new
            if on_page is not None:
                on_page(cfg.name, len(page))
        try:
            records = source.dedup(cfg.name)
            if records:
                dedup += Transfer.of(dest, "import_dedup").import_dedup(records)
        except ConfigurationError as exc:
            warnings.append(f"dedup ids of {cfg.name!r} not copied: {exc}")
    schedules = copy_schedules(source, dest, warnings)
    return MigrationResult(copied, skipped, dedup, tuple(warnings), schedules, pauses)


def verify(source_counts: Counts, dest: Backend) -> list[QueueCheck]:
    """Compare the source's counts per queue with the destination's now."""
    stats = dest.stats(now=time.time()).queues
    out = []
    for name in sorted(source_counts):
        pending, dead = source_counts[name]
        q = stats.get(name)
        dest_pending = 0 if q is None else q.ready + q.delayed + q.in_flight
        dest_dead = 0 if q is None else q.dead
        out.append(QueueCheck(name, pending, dest_pending, dead, dest_dead))
    return out
