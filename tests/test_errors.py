"""The error tree: what user code can catch, and what it must never swallow by accident."""

from __future__ import annotations

import pytest

import pmsq

ERRORS = [
    pmsq.ConfigurationError,
    pmsq.SerializationError,
    pmsq.PayloadTooLarge,
    pmsq.QueueFull,
    pmsq.Unroutable,
    pmsq.LeaseLost,
    pmsq.Empty,
    pmsq.StorageError,
    pmsq.OutcomeUnknown,
    pmsq.BackendUnavailable,
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
def test_every_error_derives_from_pmsq_error(error: type[Exception]) -> None:
    assert issubclass(error, pmsq.PmsqError)
    assert not issubclass(error, pmsq.HandlerSignal)


def test_configuration_error_is_a_value_error() -> None:
    # Code written against the stdlib convention ("bad argument value") keeps working.
    with pytest.raises(ValueError, match="max_attempts"):
        pmsq.QueueConfig(name="q", max_attempts=0)


def test_serialization_error_is_a_type_error(broker: pmsq.Broker) -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        broker.queue("q").put(object())


def test_outcome_unknown_is_a_storage_error() -> None:
    assert issubclass(pmsq.OutcomeUnknown, pmsq.StorageError)


@pytest.mark.parametrize("signal", [pmsq.Retry(), pmsq.Retry(delay=0), pmsq.Reject("no")])
def test_handler_signals_are_not_errors(signal: pmsq.HandlerSignal) -> None:
    assert not isinstance(signal, pmsq.PmsqError)
    caught_by_pmsq_error = False
    with pytest.raises(type(signal)):
        try:
            raise signal
        except pmsq.PmsqError:  # what user code writes around its own pmsq calls
            caught_by_pmsq_error = True
    assert not caught_by_pmsq_error


def test_signal_raised_inside_a_pmsq_error_handler_block_propagates(broker: pmsq.Broker) -> None:
    """A handler that wraps its pmsq calls in ``except PmsqError`` still retries."""
    q = broker.declare_queue("q", backoff=pmsq.Backoff(base=5, jitter=False))
    q.put({"n": 1})
    with pytest.raises(pmsq.Retry), q.get(timeout=0) as d:
        try:
            raise pmsq.Retry(delay=30)
        except pmsq.PmsqError:  # pragma: no cover - must not happen
            pytest.fail("except PmsqError swallowed a Retry")
    assert d.settled == "retried"
    assert q.stats().delayed == 1


def test_reject_and_retry_keep_their_arguments() -> None:
    assert pmsq.Retry(delay=2.5).delay == 2.5
    assert pmsq.Retry().delay is None
    assert pmsq.Reject("card declined").reason == "card declined"


@pytest.mark.parametrize("delay", [-1, float("nan"), float("-inf")])
def test_retry_with_a_bad_delay_is_a_configuration_error(delay: float) -> None:
    with pytest.raises(pmsq.ConfigurationError, match="delay"):
        pmsq.Retry(delay=delay)


def test_public_names_are_exported() -> None:
    for error in [*ERRORS, pmsq.PmsqError, pmsq.HandlerSignal, pmsq.Retry, pmsq.Reject]:
        assert getattr(pmsq, error.__name__) is error
        assert error.__name__ in pmsq.__all__
