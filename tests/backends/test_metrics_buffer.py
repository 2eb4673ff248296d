"""The buffered outcome counters: a batch of acks counts what one add() per ack would."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given

from pmsq.backends.sqlkit.metrics import Metrics

ACKS = st.lists(
    st.tuples(
        st.sampled_from(["calendar", "email"]),
        st.sampled_from(["", "acme"]),
        st.one_of(st.none(), st.floats(0.0, 1e6, allow_nan=False)),
    ),
    max_size=20,
)


@given(before=ACKS, batch=ACKS)
def test_add_processed_counts_a_batch_as_one_add_per_ack(
    before: list[tuple[str, str, float | None]], batch: list[tuple[str, str, float | None]]
) -> None:
    one_by_one, batched = Metrics(), Metrics()
    for m in (one_by_one, batched):
        for queue, tenant, ms in before:
            m.add(queue, tenant, retried=1, duration_ms=ms)
    for queue, tenant, ms in batch:
        one_by_one.add(queue, tenant, processed=1, duration_ms=ms)
    batched.add_processed(batch)
    assert batched.snapshot() == one_by_one.snapshot()
