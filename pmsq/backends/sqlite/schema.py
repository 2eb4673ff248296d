"""The SQLite schema, its version, and opening checks.

Invariants the indexes encode (every claim, ack and put relies on them):

- ``state``: 0 ready, 1 in flight, 2 dead, 3 scheduled (waiting for
  ``available_at``: a delay or a retry backoff).
- ``line`` = 1 while a keyed message occupies its key's line (not yet acked,
  and not dead unless its queue blocks keys on failure). ``head`` = 1 for the
  line's first message, and always for unkeyed messages. Only heads are ever
  claimed, so claiming never looks at messages queued behind a hot key.
- ``ix_ready`` holds exactly the claimable messages, per tenant in delivery
  order (priority desc, put order), so a claim is an index seek whatever the
  backlog.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

from pmsq.backends.sqlite import journal, pauses
from pmsq.backends.sqlite.counters import COUNTERS_DDL, DROP_TRIGGERS
from pmsq.backends.sqlite.journal import JOURNAL_DDL
from pmsq.backends.sqlite.presence import PRESENCE_DDL
from pmsq.backends.sqlite.schedules import SCHEDULES_DDL
from pmsq.backends.sqlkit.states import DEAD, IN_FLIGHT, READY, SCHEDULED, WAITING

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "check_file_size",
    "create_or_migrate",
    "inspect_file",
]

# "pmsq" in ASCII, written to the header so foreign tools can tell the file's owner.
APPLICATION_ID = 0x706D7371
SCHEMA_VERSION = 8


_V1 = f"""
CREATE TABLE IF NOT EXISTS pmsq_meta (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS pmsq_queues (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    rr_tenant TEXT
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS pmsq_bindings (
    pattern TEXT NOT NULL,
    queue TEXT NOT NULL,
    PRIMARY KEY (pattern, queue)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS pmsq_messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key TEXT,
    priority INTEGER NOT NULL,
    state INTEGER NOT NULL,
    head INTEGER NOT NULL,
    line INTEGER NOT NULL,
    available_at REAL NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    lease_token TEXT,
    lease_expires REAL,
    enqueued_at REAL NOT NULL,
    format TEXT NOT NULL,
    payload BLOB NOT NULL,
    crc INTEGER NOT NULL,
    headers TEXT,
    dedup_id TEXT,
    topic TEXT,
    correlation_id TEXT,
    causation_id TEXT,
    error_type TEXT,
    error TEXT,
    dead_reason TEXT,
    dead_at REAL
);

CREATE INDEX IF NOT EXISTS pmsq_ix_ready
    ON pmsq_messages (queue, tenant, priority DESC, seq) WHERE state = {READY:d} AND head = 1;
CREATE INDEX IF NOT EXISTS pmsq_ix_scheduled
    ON pmsq_messages (queue, available_at) WHERE state = {SCHEDULED:d};
CREATE INDEX IF NOT EXISTS pmsq_ix_leases
    ON pmsq_messages (queue, lease_expires) WHERE state = {IN_FLIGHT:d};
CREATE INDEX IF NOT EXISTS pmsq_ix_keys
    ON pmsq_messages (queue, tenant, key, seq) WHERE line = 1 AND key IS NOT NULL;
CREATE INDEX IF NOT EXISTS pmsq_ix_dead
    ON pmsq_messages (queue, tenant, dead_at) WHERE state = {DEAD:d};
CREATE INDEX IF NOT EXISTS pmsq_ix_waiting
    ON pmsq_messages (queue, tenant, enqueued_at) WHERE state IN {WAITING};

CREATE TABLE IF NOT EXISTS pmsq_dedup (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at REAL,
    PRIMARY KEY (queue, tenant, dedup_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pmsq_ix_dedup_expiry
    ON pmsq_dedup (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS pmsq_metrics (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    slot INTEGER NOT NULL,
    processed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    retried INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    hist TEXT,
    PRIMARY KEY (queue, tenant, slot)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS pmsq_rate (
    queue TEXT NOT NULL,
    scope TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pmsq_ix_rate ON pmsq_rate (queue, scope, ts);
"""


def _split(script: str) -> list[str]:
    # executescript() would COMMIT the caller's transaction; run statements one by one.
    return [s.strip() for s in script.split(";") if s.strip()]


# Version 6: ``oldest_age`` counts from the due time, so the waiting messages
# are indexed by ``available_at`` (an indexed MIN per queue and tenant). It
# replaces the index by ``enqueued_at``, which served only the old oldest_age;
# quotas count waiting messages through either by its (queue, tenant) prefix.
# The metrics slots also count puts and the waits from due to first delivery.
_DUE_DDL = f"""
DROP INDEX IF EXISTS pmsq_ix_waiting;
CREATE INDEX IF NOT EXISTS pmsq_ix_due
    ON pmsq_messages (queue, tenant, available_at) WHERE state IN {WAITING}
"""


def _version_6(conn: sqlite3.Connection) -> None:
    for statement in (*_split(PRESENCE_DDL), *_split(_DUE_DDL)):
        conn.execute(statement)
    # ADD COLUMN has no IF NOT EXISTS; a step must be safe to run again.
    have = {r[1] for r in conn.execute("PRAGMA table_info(pmsq_metrics)")}
    if "put" not in have:
        conn.execute("ALTER TABLE pmsq_metrics ADD COLUMN put INTEGER NOT NULL DEFAULT 0")
    if "wait_hist" not in have:
        conn.execute("ALTER TABLE pmsq_metrics ADD COLUMN wait_hist TEXT")


# Forward migrations: MIGRATIONS[n] upgrades a store from version n to n + 1,
# as a script of plain statements, as a sequence of statements (for those,
# like triggers, that hold semicolons), or as a function of the connection
# (for a step that must look first: ALTER TABLE ADD COLUMN is not idempotent).
# A new store is created at version 1 and migrated forward like an old one, so
# every store runs the same statements.
MIGRATIONS: dict[int, str | tuple[str, ...] | Callable[[sqlite3.Connection], None]] = {
    1: JOURNAL_DDL,  # version 2: the message journal (pmsq trace)
    2: SCHEDULES_DDL,  # version 3: recurring schedules
    3: COUNTERS_DDL,  # version 4: maintained counts for stats() (counters.py)
    4: pauses.migrate,  # version 5: expiry, pauses, circuit breakers (pauses.py)
    5: _version_6,  # version 6: worker presence, lateness, puts and waits
    6: DROP_TRIGGERS,  # version 7: the code counts, not triggers (counters.py)
    7: journal.migrate,  # version 8: one journal row per delivery outcome (journal.py)
}


class SchemaError(Exception):
    """The file is not a usable pmsq store; the message says why."""


def check_file_size(path: str) -> None:
    """Refuse a file cut short in the middle of a page (read-only check).

    SQLite rounds a partial last page up and reads the missing bytes as
    zeros, so such a file opens and fails only later, on whatever lived in
    that page. A database file is always a whole number of pages. With a
    WAL file present another process may be checkpointing (growing the file)
    right now, so the check is left to SQLite then.

    Raises:
        SchemaError: the file's size is not a multiple of its page size.
    """
    if os.path.exists(f"{path}-wal"):
        return
    try:
        with open(path, "rb") as f:
            header = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return  # missing or unreadable: SQLite reports that in its own words
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return  # empty (a new store) or not SQLite: SQLite reports that
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size >= 512 and size % page_size:
        raise SchemaError(
            f"it is truncated or damaged: {size:,} bytes is not a whole number of its "
            f"{page_size:,}-byte pages; restore it from a backup"
        )


def inspect_file(conn: sqlite3.Connection) -> int | None:
    """Check, without writing, that pmsq may use this file; return its schema version.

    ``None`` means no pmsq schema yet (an empty file, or an app's own file).
    Run it before anything that writes, the switch to WAL mode included, so
    a file pmsq refuses is left byte-for-byte untouched.

    Raises:
        SchemaError: the file belongs to another application or a newer pmsq.
    """
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pmsq_meta'"
    ).fetchone()
    if not has_meta:
        if app_id not in (0, APPLICATION_ID):
            raise SchemaError(
                f"the file belongs to another application (SQLite application_id "
                f"{app_id:#x}); give pmsq a file of its own or your app's own database"
            )
        return None
    row = conn.execute("SELECT v FROM pmsq_meta WHERE k = 'schema_version'").fetchone()
    if row is None or not str(row[0]).isdigit():
        raise SchemaError(
            "its pmsq_meta table has no valid schema_version; restore it from a backup "
            "or give pmsq another file"
        )
    found = int(row[0])
    if found > SCHEMA_VERSION:
        raise SchemaError(
            f"it was written by a newer pmsq (schema version {found}, this pmsq reads "
            f"up to {SCHEMA_VERSION}); upgrade pmsq to open it"
        )
    return found


def create_or_migrate(conn: sqlite3.Connection) -> int:
    """Create the schema in an empty or app-owned file, or migrate it forward.

    Must run inside a write transaction. Returns the version found before.

    Raises:
        SchemaError: the file belongs to another application or a newer pmsq.
    """
    found = inspect_file(conn)
    if found is None:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        for statement in _split(_V1):
            conn.execute(statement)
        conn.execute("INSERT INTO pmsq_meta (k, v) VALUES ('schema_version', '1')")
        if app_id == 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        _migrate(conn, 1)
        return 0
    _migrate(conn, found)
    return found


def _migrate(conn: sqlite3.Connection, found: int) -> None:
    version = found
    while version < SCHEMA_VERSION:
        step = MIGRATIONS[version]
        if callable(step):
            step(conn)
        else:
            for statement in _split(step) if isinstance(step, str) else step:
                conn.execute(statement)
        version += 1
    if found != version:
        conn.execute(
            "UPDATE pmsq_meta SET v = ? WHERE k = 'schema_version'", (str(SCHEMA_VERSION),)
        )
