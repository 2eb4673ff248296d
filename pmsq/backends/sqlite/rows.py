"""The SQLite backend's message columns (the kit's, plus the checksum and the expiry)."""

from __future__ import annotations

from pmsq.backends.sqlkit import rows

__all__ = ["MESSAGE_COLUMNS"]

# Columns selected wherever a full row is read: the kit's, the payload's
# CRC-32 that a claim checks before delivering it, and the expiry it checks too.
MESSAGE_COLUMNS = rows.MESSAGE_COLUMNS + ", crc, " + rows.EXPIRY_COLUMN
