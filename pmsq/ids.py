"""Message ids: 26 characters, time-ordered, random (ULID-like, Crockford base32)."""

from __future__ import annotations

import base64
import hashlib
import os
import time

__all__ = ["new_message_id", "stable_message_id"]

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


def stable_message_id(at: float, seed: bytes) -> str:
    """Return the id a message imported from elsewhere always gets: the same for one ``seed``.

    Time-ordered like :func:`new_message_id` (48 bits of milliseconds of
    ``at``), with 80 bits of a hash of ``seed`` instead of random bits, so
    importing the same item twice yields the same id.
    """
    ms = int(at * 1000) & ((1 << 48) - 1)
    raw = ms.to_bytes(6, "big") + hashlib.sha256(seed).digest()[:10]
    return base64.b32encode(raw).translate(_TABLE)[:26].decode("ascii")
