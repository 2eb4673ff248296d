"""The routing table, and what a publish across stores raises when stores fail."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import pmsq
from pmsq.backends.routed import RoutedBackend, parse_routes
from pmsq.backends.types import Envelope


def test_patterns_are_tried_in_order_and_the_rest_goes_to_the_default() -> None:
    routes = parse_routes(
        "main.db", {"payments.cards": "cards.db", "payments.#": "pay.db", "*.audit": "pay.db"}
    )
    assert routes.urls == ("main.db", "cards.db", "pay.db")
    assert routes.url_for("payments.cards") == "cards.db"  # first match wins
    assert routes.url_for("payments") == "pay.db"  # '#' matches zero words
    assert routes.url_for("payments.refunds.eu") == "pay.db"
    assert routes.url_for("booking.audit") == "pay.db"
    assert routes.url_for("email") == "main.db"
    assert routes.url_for("payments-eu") == "main.db"  # a different word


def test_two_spellings_of_one_file_are_one_store(tmp_path: Path) -> None:
    main = tmp_path / "main.db"
    routes = parse_routes(str(main), {"a.#": f"sqlite:///{main}", "b.#": ":memory:"})
    assert routes.urls == (str(main), ":memory:")
    assert routes.url_for("a.x") == str(main)


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[pmsq.Broker]:
    with pmsq.connect(
        str(tmp_path / "a.db"),
        routes={"b.#": str(tmp_path / "b.db"), "c.#": str(tmp_path / "c.db")},
        durability="normal",
    ) as broker:
        for q in ("a", "b", "c"):
            broker.subscribe("booking.*", queue=q)
        yield broker


def _fail(broker: pmsq.Broker, index: int, error: pmsq.PmsqError) -> None:
    backend = broker.backend
    assert isinstance(backend, RoutedBackend)

    def put_many(envelopes: Sequence[Envelope], *, now: float) -> list[str]:
        raise error

    backend.stores[index].put_many = put_many  # type: ignore[method-assign]


def test_when_every_store_fails_the_first_error_is_raised_as_with_one_store(
    routed: pmsq.Broker,
) -> None:
    for i in range(3):
        _fail(routed, i, pmsq.QueueFull(f"store {i} is full"))
    with pytest.raises(pmsq.QueueFull, match="store 0"):
        routed.publish("booking.created", {"n": 1})


def test_an_unknown_outcome_is_named_as_such_and_the_others_still_get_their_copy(
    routed: pmsq.Broker, tmp_path: Path
) -> None:
    _fail(routed, 1, pmsq.OutcomeUnknown("the commit's fsync failed"))
    with pytest.raises(pmsq.PartialPublish) as info:
        routed.publish("booking.created", {"n": 1}, dedup_id="d-1")
    err = info.value
    assert set(err.stored) == {str(tmp_path / "a.db"), str(tmp_path / "c.db")}
    assert "outcome unknown" in str(err)
    assert routed.stats("a").ready == routed.stats("c").ready == 1
