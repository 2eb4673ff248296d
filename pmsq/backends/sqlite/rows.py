"""The SQLite backend's message columns (the kit's, plus the payload checksum)."""

from __future__ import annotations

from pmsq.backends.sqlkit import rows

__all__ = ["MESSAGE_COLUMNS"]

# Columns selected wherever a full row is read: the kit's, and the payload's
# CRC-32 that a claim checks before delivering it.
MESSAGE_COLUMNS = rows.MESSAGE_COLUMNS + ", crc"
