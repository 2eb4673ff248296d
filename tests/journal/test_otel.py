"""The OpenTelemetry integration: PRODUCER spans on put, CONSUMER spans per delivery,
linked through the W3C ``traceparent`` header of each message."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pmsq

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from pmsq.contrib.otel import instrument


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(db_path: Path, exporter: InMemorySpanExporter) -> Iterator[pmsq.Broker]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with pmsq.connect(str(db_path), durability="normal", poll_interval=0.01) as b:
        instrument(b, tracer_provider=provider)
        yield b


def _wait(event: threading.Event) -> None:
    assert event.wait(30.0), "the handlers did not run in time"


def test_producer_and_consumer_spans_are_linked_through_the_headers(
    traced: pmsq.Broker, exporter: InMemorySpanExporter
) -> None:
    done = threading.Event()
    seen: dict[str, Any] = {}
    traced.declare_queue("calendar")
    traced.declare_queue("channel")

    @traced.handler("calendar")
    def calendar(m: pmsq.Message) -> None:
        seen["calendar"] = m
        traced.queue("channel").put({"sync": 1})

    @traced.handler("channel")
    def channel(m: pmsq.Message) -> None:
        seen["channel"] = m
        done.set()

    mid = traced.queue("calendar").put({"booking": 1}, key="property:4521", tenant="acme")
    with pmsq.Worker(traced, concurrency=2):
        _wait(done)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"send calendar", "process calendar", "send channel", "process channel"}
    send, process = spans["send calendar"], spans["process calendar"]
    assert send.kind == SpanKind.PRODUCER
    assert process.kind == SpanKind.CONSUMER
    assert send.attributes is not None
    assert process.attributes is not None
    assert send.attributes["messaging.system"] == "pmsq"
    assert send.attributes["messaging.destination.name"] == "calendar"
    assert send.attributes["messaging.message.id"] == mid
    assert send.attributes["messaging.operation.type"] == "send"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.message.id"] == mid
    assert process.attributes["messaging.message.conversation_id"] == mid
    assert process.attributes["pmsq.key"] == "property:4521"
    assert process.attributes["pmsq.tenant"] == "acme"
    assert process.attributes["pmsq.attempt"] == 1
    assert process.attributes["pmsq.outcome"] == "ack"
    # The consumer continues the producer's trace through the message headers...
    assert "traceparent" in seen["calendar"].headers
    assert process.parent is not None
    assert send.context is not None
    assert process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    # ...and a message put by the handler continues it further.
    child_send, child_process = spans["send channel"], spans["process channel"]
    assert child_send.parent is not None
    assert child_process.parent is not None
    assert child_send.parent.span_id == process.context.span_id
    assert child_process.parent.span_id == child_send.context.span_id
    assert {s.context.trace_id for s in spans.values()} == {send.context.trace_id}


def test_a_failing_handler_marks_its_span_as_an_error(
    traced: pmsq.Broker, exporter: InMemorySpanExporter
) -> None:
    done = threading.Event()
    traced.declare_queue("email", backoff=pmsq.Backoff(base=0.0, factor=1.0, cap=0.0))

    @traced.handler("email")
    def email(m: pmsq.Message) -> None:
        if m.attempt == 1:
            raise ConnectionError("SMTP down")
        done.set()

    traced.queue("email").put("hello")
    with pmsq.Worker(traced, concurrency=1):
        _wait(done)
    process = [s for s in exporter.get_finished_spans() if s.name == "process email"]
    process.sort(key=lambda s: s.attributes["pmsq.attempt"] if s.attributes else 0)
    assert len(process) == 2
    first, second = process
    assert first.status.status_code == StatusCode.ERROR
    assert first.attributes is not None
    assert first.attributes["pmsq.outcome"] == "retry"
    assert [e.name for e in first.events] == ["exception"]
    assert second.status.status_code != StatusCode.ERROR


def test_pmsq_imports_without_opentelemetry() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "import pmsq, pmsq.cli\n"
        "pmsq.cli.build_parser()\n"
        "try:\n"
        "    import pmsq.contrib.otel\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install opentelemetry-api" in out.stdout
