"""Correlation: every message a booking causes, through handlers that publish, is in its chain."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import pmsq
from pmsq.cli.trace import group

from ._app import run_story


@pytest.fixture
def live(db_path: Path) -> pmsq.Broker:
    b = pmsq.connect(str(db_path), durability="normal", poll_interval=0.01)
    yield b
    b.close()


def test_the_chain_of_a_booking_is_complete(live: pmsq.Broker) -> None:
    root = run_story(live)
    messages = {m.queue: m for m in group(live.backend.history(correlation_id=root))}
    assert set(messages) == {
        "calendar",
        "email",
        "cleaning",
        "accounting",
        "channel",
        "invoices",
        "ledger",
    }
    copies = [messages[q] for q in ("calendar", "email", "cleaning", "accounting")]
    assert all(m.causation_id is None and m.topic == "booking.created" for m in copies)
    assert messages["accounting"].id == root  # the first copy (queue-name order) starts it
    assert messages["channel"].causation_id == messages["calendar"].id
    assert messages["invoices"].causation_id == messages["accounting"].id
    assert messages["invoices"].topic == "invoice.created"
    assert messages["ledger"].causation_id == messages["invoices"].id
    assert {m.correlation_id for m in messages.values()} == {root}
    # Outcomes.
    assert messages["email"].state == "acked"
    assert [e.event for e in messages["email"].events] == [
        "put",
        "delivered",
        "retried",
        "delivered",
        "acked",
    ]
    assert messages["channel"].state == "dead"
    dead = messages["channel"].events[-1]
    assert dead.detail["reason"] == "channel manager refused the dates"
    assert all(messages[q].state == "acked" for q in ("calendar", "cleaning", "ledger"))


def test_failure_log_lines_carry_the_message_fields(
    live: pmsq.Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pmsq.worker")
    root = run_story(live)
    fields = [r.pmsq for r in caplog.records if hasattr(r, "pmsq")]  # type: ignore[attr-defined]
    by_event = {f["event"]: f for f in fields if f.get("queue") in ("email", "channel")}
    failure, dead = by_event["failure"], by_event["dead_letter"]
    assert failure["queue"] == "email"
    assert failure["key"] == "property:4521"
    assert failure["tenant"] == "acme"
    assert failure["attempt"] == 1
    assert failure["correlation_id"] == root
    assert failure["error"] == "ConnectionError: SMTP server not answering"
    assert dead["queue"] == "channel"
    assert dead["correlation_id"] == root
    assert dead["message_id"] in {e.message_id for e in live.backend.history(queue="channel")}
