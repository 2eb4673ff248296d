"""Queue configs, topic bindings and ``pmsq_meta`` entries, each read or written on a connection."""

from __future__ import annotations

import json
import sqlite3

from pmsq.backends.sqlite.puts import ConfigReader, dump_config
from pmsq.config import QueueConfig
from pmsq.errors import ConfigurationError

__all__ = [
    "bind",
    "bindings",
    "check_meta_key",
    "declare_queue",
    "ensure_queue",
    "get_meta",
    "list_queues",
    "queue_config",
    "set_meta",
    "unbind",
]


def declare_queue(conn: sqlite3.Connection, config: QueueConfig) -> None:
    """Store ``config``, replacing the queue's current one."""
    conn.execute(
        "INSERT INTO pmsq_queues (name, config) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET config = excluded.config",
        (config.name, dump_config(config)),
    )


def ensure_queue(conn: sqlite3.Connection, config: QueueConfig) -> None:
    """Store ``config`` unless the queue is declared already."""
    conn.execute(
        "INSERT OR IGNORE INTO pmsq_queues (name, config) VALUES (?, ?)",
        (config.name, dump_config(config)),
    )


def queue_config(conn: sqlite3.Connection, name: str) -> QueueConfig | None:
    """The stored config of queue ``name``, or ``None``."""
    row = conn.execute("SELECT config FROM pmsq_queues WHERE name = ?", (name,)).fetchone()
    return None if row is None else QueueConfig.from_dict(json.loads(row[0]))


def list_queues(conn: sqlite3.Connection) -> list[QueueConfig]:
    """Every declared queue's config, by name."""
    rows = conn.execute("SELECT config FROM pmsq_queues ORDER BY name").fetchall()
    return [QueueConfig.from_dict(json.loads(r[0])) for r in rows]


def bind(conn: sqlite3.Connection, configs: ConfigReader, pattern: str, queue: str) -> None:
    """Route topics matching ``pattern`` to ``queue`` (declared with defaults if new)."""
    configs.get(conn, queue)
    conn.execute(
        "INSERT OR IGNORE INTO pmsq_bindings (pattern, queue) VALUES (?, ?)", (pattern, queue)
    )


def unbind(conn: sqlite3.Connection, pattern: str, queue: str) -> bool:
    """Remove a binding; whether there was one."""
    cur = conn.execute(
        "DELETE FROM pmsq_bindings WHERE pattern = ? AND queue = ?", (pattern, queue)
    )
    return cur.rowcount > 0


def bindings(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """Every ``(pattern, queue)`` binding, sorted."""
    rows = conn.execute("SELECT pattern, queue FROM pmsq_bindings ORDER BY 1, 2")
    return [(r[0], r[1]) for r in rows]


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    """The ``pmsq_meta`` value of ``key``, or ``None``."""
    row = conn.execute("SELECT v FROM pmsq_meta WHERE k = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def check_meta_key(key: str) -> None:
    """Refuse keys that pmsq's own migrations own.

    Raises:
        ConfigurationError: ``key`` is reserved.
    """
    if key == "schema_version":
        raise ConfigurationError("pmsq_meta key 'schema_version' is reserved for migrations")


def set_meta(conn: sqlite3.Connection, key: str, value: str | None) -> None:
    """Set (or with ``None`` delete) ``key`` in ``pmsq_meta``."""
    if value is None:
        conn.execute("DELETE FROM pmsq_meta WHERE k = ?", (key,))
        return
    conn.execute(
        "INSERT INTO pmsq_meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        (key, value),
    )
