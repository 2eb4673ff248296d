"""The SQLite backend, pmsq's reference store."""

from pmsq.backends.sqlite.backend import SQLiteBackend, parse_sqlite_url

__all__ = ["SQLiteBackend", "parse_sqlite_url"]
