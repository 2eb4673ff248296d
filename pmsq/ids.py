"""Message ids: 26-character, time-ordered, random (ULID layout, Crockford base32)."""

from __future__ import annotations

import os
import time

__all__ = ["new_message_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_message_id(now: float | None = None) -> str:
    """Return a new unique id: 48 bits of milliseconds then 80 random bits.

    Ids never repeat (80 random bits per millisecond) and sort roughly by
    creation time, which keeps them readable in logs and the CLI.
    """
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
