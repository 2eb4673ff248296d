"""Payload codecs. JSON by default; bytes pass through untouched.

A codec turns a payload into bytes plus a short format tag stored beside it,
so a store can hold payloads written by different codecs. pmsq never
unpickles anything unless the user installs a pickle codec themselves.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from pmsq.errors import SerializationError

__all__ = ["BYTES_FORMAT", "Codec", "JsonCodec", "decode_headers", "encode_headers"]

BYTES_FORMAT = "bytes"


@runtime_checkable
class Codec(Protocol):
    """Encodes payloads to bytes and back. ``format`` names what it writes."""

    format: str

    def encode(self, payload: Any) -> bytes:
        """Encode ``payload``; raise ``SerializationError`` when it cannot."""
        ...

    def decode(self, data: bytes) -> Any:
        """Decode bytes written by :meth:`encode`."""
        ...


# One encoder for every call: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


class JsonCodec:
    """Strict JSON: no NaN or infinities, string keys only, UTF-8."""

    format = "json"

    def encode(self, payload: Any) -> bytes:
        """Encode ``payload`` as compact JSON.

        Raises:
            SerializationError: for values JSON cannot represent exactly
                (NaN, non-string keys, objects, nesting too deep).
        """
        try:
            text = _ENCODER.encode(payload)
            # Inside the try: a lone surrogate ("\ud800") dumps fine but has no UTF-8 form.
            return text.encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"payload is not JSON-serialisable: {exc}") from exc
        except RecursionError as exc:
            raise SerializationError("payload is nested too deeply to serialise") from exc

    def decode(self, data: bytes) -> Any:
        """Decode JSON bytes.

        Raises:
            SerializationError: if the bytes are not valid JSON.
        """
        try:
            # Stored JSON is always UTF-8 (see encode): skip json.loads' encoding sniffing.
            return json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
        except (ValueError, RecursionError) as exc:
            raise SerializationError(f"stored payload is not valid JSON: {exc}") from exc


def encode_headers(headers: dict[str, Any] | None) -> str | None:
    """Encode headers as JSON text (``None`` for no headers).

    Raises:
        SerializationError: if headers are not a str-keyed JSON object.
    """
    if not headers:
        return None
    if not isinstance(headers, dict) or not all(isinstance(k, str) for k in headers):
        raise SerializationError(f"headers must be a dict with str keys, got {headers!r}")
    try:
        text = _ENCODER.encode(headers)
        # A lone surrogate would fail only when SQLite binds the text, inside a
        # group commit shared with other callers' puts: refuse it here.
        text.encode("utf-8")
        return text
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"headers are not JSON-serialisable: {exc}") from exc


def decode_headers(text: str | None) -> dict[str, Any]:
    """Decode headers written by :func:`encode_headers`."""
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}
