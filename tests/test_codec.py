"""The JSON codec gives back what it accepts, and refuses what it could not give back."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pmsq
from pmsq.codec import MAX_DEPTH, JsonCodec

codec = JsonCodec()

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()  # NaN and infinities included: they must be refused
    | st.text(max_size=8)  # lone surrogates included: they must be refused
)
keys = st.text(max_size=4) | st.integers(-3, 3) | st.none() | st.booleans() | st.floats(0, 2)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=20,
)


def expected(value: Any) -> Any:
    """What a reader should get back: tuples become lists (documented), the rest equal."""
    if isinstance(value, (list, tuple)):
        return [expected(v) for v in value]
    if isinstance(value, dict):
        return {k: expected(v) for k, v in value.items()}
    return value


def representable(value: Any) -> bool:
    """Whether strict JSON carries ``value`` exactly: str keys, finite floats, UTF-8 text."""
    if isinstance(value, (list, tuple)):
        return all(representable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and representable(k) for k in value) and all(
            representable(v) for v in value.values()
        )
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


@settings(max_examples=500, deadline=None)
@given(value=values)
def test_what_encode_accepts_comes_back_and_the_rest_is_refused(value: Any) -> None:
    try:
        data = codec.encode(value)
    except pmsq.SerializationError:
        assert not representable(value), value
        return
    assert representable(value), value
    assert codec.decode(data) == expected(value)


def _deep(depth: int, leaf: Any = 1) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


@settings(max_examples=50, deadline=None)
@given(depth=st.integers(min_value=1, max_value=MAX_DEPTH + 50))
def test_the_depth_limit_is_exact(depth: int) -> None:
    value = _deep(depth)
    if depth <= MAX_DEPTH:
        assert codec.decode(codec.encode(value)) == value
    else:
        with pytest.raises(pmsq.SerializationError, match="MAX_DEPTH"):
            codec.encode(value)
