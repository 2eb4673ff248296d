"""Holds the write lock of a SQLite file until told to let go.

Usage: ``hold_lock.py DB``. Takes ``BEGIN IMMEDIATE`` with a plain sqlite3
connection, prints ``locked``, waits for a line (or EOF) on stdin, rolls back,
prints ``released`` and exits.
"""

from __future__ import annotations

import sqlite3
import sys


def main() -> int:
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("ROLLBACK")
    conn.close()
    print("released", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
