"""OpenTelemetry tracing for pmsq: a PRODUCER span per put, a CONSUMER span per delivery.

Install with ``pip install '.[otel]'`` in a pmsq checkout and instrument a broker once::

    from pmsq.contrib.otel import instrument
    instrument(broker)                      # the global tracer provider, or tracer_provider=

Every message put or published gets a ``send <queue>`` span whose W3C trace
context is written into the message's headers (``traceparent``,
``tracestate``); every delivery handled by a worker gets a ``process
<queue>`` span, child of that context, current while the handler runs, so
messages the handler puts continue the same trace. Attributes follow the
OpenTelemetry messaging semantic conventions: ``messaging.system="pmsq"``,
``messaging.destination.name`` (the queue), ``messaging.message.id``,
``messaging.operation.type`` / ``.name``, ``messaging.message.conversation_id``
(the correlation id), plus ``pmsq.key``, ``pmsq.tenant``, ``pmsq.topic``,
``pmsq.attempt`` and ``pmsq.outcome``.
"""

from __future__ import annotations

import threading
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "pmsq.contrib.otel needs OpenTelemetry: pip install opentelemetry-api "
        "(or the otel extra from a pmsq checkout: pip install '.[otel]')"
    ) from exc

from pmsq.broker import Broker
from pmsq.message import Message
from pmsq.policy import Ack, DeadLetterOutcome, Outcome, RetryAt
from pmsq.worker.middleware import Middleware

__all__ = ["OpenTelemetryMiddleware", "instrument"]

SYSTEM = "pmsq"


def _outcome_name(outcome: Outcome) -> str:
    if isinstance(outcome, Ack):
        return "ack"
    if isinstance(outcome, RetryAt):
        return "snooze" if outcome.snooze else "retry"
    assert isinstance(outcome, DeadLetterOutcome)
    return "dead_letter"


class OpenTelemetryMiddleware(Middleware):
    """Worker middleware and put hook that trace messages end to end.

    Use :func:`instrument` to register both halves on a broker.

    Args:
        tracer_provider: Where spans go (default: the global provider).
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        from pmsq import __version__

        self.tracer = trace.get_tracer("pmsq", __version__, tracer_provider=tracer_provider)
        self._lock = threading.Lock()
        self._spans: dict[tuple[str, int], Any] = {}

    # -- producer side: a put hook ------------------------------------------------------
    def on_put(
        self, queue: str, message_id: str, topic: str | None, headers: dict[str, Any]
    ) -> None:
        """Start and end a PRODUCER span for one message; inject its context into ``headers``."""
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": queue,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.message.id": message_id,
        }
        if topic is not None:
            attributes["pmsq.topic"] = topic
        with self.tracer.start_as_current_span(
            f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            headers.update(carrier)

    # -- consumer side: worker hooks ----------------------------------------------------
    def before_process(self, message: Message) -> None:
        """Start the CONSUMER span, child of the producer's context, current for the handler."""
        carrier = {k: v for k, v in message.headers.items() if isinstance(v, str)}
        parent = propagate.extract(carrier)
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": message.queue,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.id": message.id,
            "pmsq.attempt": message.attempt,
        }
        if message.correlation_id is not None:
            attributes["messaging.message.conversation_id"] = message.correlation_id
        for name, value in (
            ("pmsq.key", message.key),
            ("pmsq.tenant", message.tenant),
            ("pmsq.topic", message.topic),
        ):
            if value is not None:
                attributes[name] = value
        span = self.tracer.start_span(
            f"process {message.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        # before_process runs in the handler's own context (a copy per message),
        # so attaching here makes the span current for the handler and its puts
        # and needs no detach: the context is dropped with the handler.
        otel_context.attach(trace.set_span_in_context(span))
        with self._lock:
            self._spans[(message.id, message.attempt)] = span

    def after_process(
        self,
        message: Message,
        outcome: Outcome,
        error: BaseException | None,
        duration_ms: float,
    ) -> None:
        """End the CONSUMER span with the outcome (and the error, if any)."""
        with self._lock:
            span = self._spans.pop((message.id, message.attempt), None)
        if span is None:
            return
        span.set_attribute("pmsq.outcome", _outcome_name(outcome))
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()

    def on_release(self, message: Message) -> None:
        """A message handed back unstarted has no span to end; drop any left."""
        with self._lock:
            self._spans.pop((message.id, message.attempt), None)


def instrument(broker: Broker, *, tracer_provider: Any = None) -> OpenTelemetryMiddleware:
    """Trace ``broker``'s puts and every worker's deliveries; returns the middleware.

    Call it once per broker, before starting workers.
    """
    middleware = OpenTelemetryMiddleware(tracer_provider)
    broker.middleware.append(middleware)
    broker.add_put_hook(middleware.on_put)
    return middleware
