"""Payload codecs. JSON by default; bytes pass through untouched.

A codec turns a payload into bytes plus a short format tag stored beside it,
so a store can hold payloads written by different codecs. pmsq never
unpickles anything unless the user installs a pickle codec themselves.

What the JSON codec takes, and what a handler gets back:

* ``dict`` with ``str`` keys, ``list``, ``str``, ``int``, ``float``, ``bool``
  and ``None`` come back equal to what was put.
* A ``tuple`` is a JSON array and comes back as a ``list``; subclasses of
  ``str``, ``int``, ``float``, ``dict`` and ``list`` (an ``enum.IntEnum``
  member, say) come back as the plain type. Both keep their value, which is
  what a payload crossing a process boundary can promise.
* Refused at put with ``SerializationError`` (nothing is stored), because the
  handler would get something else or nothing at all: a key that is not a
  ``str`` (JSON would turn ``1`` into ``"1"`` and silently merge it with a
  ``"1"`` beside it), NaN and infinities, a string with a lone surrogate, an
  int of more than 4,300 digits, any other type, and nesting deeper than
  :data:`MAX_DEPTH` containers (a reader on a deeper stack could not decode it).
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from pmsq.errors import SerializationError

__all__ = ["BYTES_FORMAT", "MAX_DEPTH", "Codec", "JsonCodec", "decode_headers", "encode_headers"]

BYTES_FORMAT = "bytes"

#: Deepest nesting of dicts and lists the JSON codec accepts. Python's decoder
#: recurses once per level against the interpreter's recursion limit (1,000 by
#: default), so a value that encodes on a shallow stack may not decode in a
#: worker: a fixed limit well inside that budget makes every stored payload readable.
MAX_DEPTH = 200


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


_CONTAINERS = (dict, list, tuple)


def _check_shape(value: Any, what: str) -> None:
    """Refuse what ``json`` encodes but cannot give back: non-str keys, deep nesting.

    Walks the containers level by level, without recursion, so a deep value
    cannot exhaust the stack here either. Runs after a successful encode,
    which has already refused cycles and unknown types.

    Raises:
        SerializationError: naming the key or the depth limit.
    """
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise SerializationError(
                f"{what} is nested too deeply: more than {MAX_DEPTH} levels "
                "(pmsq.codec.MAX_DEPTH), which a reader could not decode; flatten it or "
                "store the document elsewhere and put a reference"
            )
        below: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                try:
                    "".join(node)  # every key a str, checked at C speed
                except TypeError:
                    _refuse_key(node, what)
                children: Any = node.values()
            else:
                children = node
            for child in children:
                if isinstance(child, _CONTAINERS):
                    below.append(child)
        level = below


def _refuse_key(node: dict[Any, Any], what: str) -> None:
    key = next(k for k in node if not isinstance(k, str))
    # The encoder let it through, so it is an int, float, bool or None,
    # which JSON would silently turn into a string.
    as_text = next(iter(json.loads(_ENCODER.encode({key: 0}))))
    raise SerializationError(
        f"{what} is not JSON-serialisable: keys must be str, got the "
        f"{type(key).__name__} key {key!r}, which would be delivered as the string {as_text!r}"
    )


class JsonCodec:
    """Strict JSON: no NaN or infinities, string keys only, UTF-8, at most
    :data:`MAX_DEPTH` levels deep; tuples come back as lists (see the module doc)."""

    format = "json"

    def encode(self, payload: Any) -> bytes:
        """Encode ``payload`` as compact JSON.

        Raises:
            SerializationError: for values JSON cannot give back as they were
                (NaN, non-string keys, objects, nesting over ``MAX_DEPTH``).
        """
        try:
            text = _ENCODER.encode(payload)
            # Inside the try: a lone surrogate ("\ud800") dumps fine but has no UTF-8 form.
            data = text.encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"payload is not JSON-serialisable: {exc}") from exc
        except RecursionError as exc:
            raise SerializationError(
                f"payload is nested too deeply to serialise (limit: {MAX_DEPTH} levels, "
                "pmsq.codec.MAX_DEPTH)"
            ) from exc
        _check_shape(payload, "payload")
        return data

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
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"headers are not JSON-serialisable: {exc}") from exc
    _check_shape(headers, "headers")
    return text


def decode_headers(text: str | None) -> dict[str, Any]:
    """Decode headers written by :func:`encode_headers`."""
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}
