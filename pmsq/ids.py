"""Message ids: 26 characters, time-ordered, random (ULID-like, Crockford base32)."""

from __future__ import annotations

import hashlib
import os
import time

__all__ = ["new_message_id", "stable_message_id"]

# Crockford's base32 alphabet sorts like the bits it encodes. Ten bits (two
# characters) per lookup: base64.b32encode is pure Python and was a fifth of
# the cost of a put_many.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = range(120, -1, -10)


def _encode(ms: int, tail: bytes) -> str:
    # 48 bits of milliseconds and 80 bits of ``tail``: 128 bits, padded to 130
    # with two zero bits at the end, make 26 characters.
    n = (((ms & ((1 << 48) - 1)) << 80) | int.from_bytes(tail, "big")) << 2
    return "".join([_PAIRS[(n >> s) & 1023] for s in _SHIFTS])


def new_message_id(now: float | None = None) -> str:
    """Return a new unique id: 48 bits of milliseconds then 80 random bits.

    Ids never repeat (80 random bits per millisecond) and sort by creation
    time to the millisecond, which keeps them readable in logs and the CLI.
    """
    return _encode(int((time.time() if now is None else now) * 1000), os.urandom(10))


def stable_message_id(at: float, seed: bytes) -> str:
    """Return the id a message imported from elsewhere always gets: the same for one ``seed``.

    Time-ordered like :func:`new_message_id` (48 bits of milliseconds of
    ``at``), with 80 bits of a hash of ``seed`` instead of random bits, so
    importing the same item twice yields the same id.
    """
    return _encode(int(at * 1000), hashlib.sha256(seed).digest()[:10])
