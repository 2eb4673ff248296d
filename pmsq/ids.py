"""Message ids: 26 characters, time-ordered, random (ULID-like, Crockford base32)."""

from __future__ import annotations

import base64
import os
import time

__all__ = ["new_message_id"]

# Map RFC 4648 base32 onto Crockford's alphabet, which sorts like the bits it encodes.
_TABLE = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def new_message_id(now: float | None = None) -> str:
    """Return a new unique id: 48 bits of milliseconds then 80 random bits.

    Ids never repeat (80 random bits per millisecond) and sort by creation
    time to the millisecond, which keeps them readable in logs and the CLI.
    """
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    raw = ms.to_bytes(6, "big") + os.urandom(10)
    return base64.b32encode(raw).translate(_TABLE)[:26].decode("ascii")
