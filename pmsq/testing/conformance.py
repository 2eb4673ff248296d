"""``BrokerConformance``: the suite every backend runs (modelled on zarr's ``StoreTests``).

A backend's test module subclasses it and provides one factory::

    class TestMyBackend(BrokerConformance):
        missing_capabilities = frozenset({"priorities"})   # what it declares it lacks

        def make_broker(self, clock: pmsq.ManualClock) -> pmsq.Broker:
            return pmsq.connect(f"mybackend://127.0.0.1/{self.store_id}", clock=clock)

Each test gets a fresh store (name it after :attr:`store_id` or put it in
:attr:`tmp_path`); ``make_broker`` may be called again within a test to
reopen the same store. Override :meth:`drop_store` to remove a server-side
store afterwards. A test of a capability the backend declares missing (a
semantic flag) or does not implement (a family of ``pmsq.backends.families``)
checks that using it raises ``ConfigurationError`` naming the capability.

Schedules (:mod:`pmsq.testing._schedule_tests`) run against backends that mix
in ``pmsq.backends.schedule_family.ScheduleStore``; for others the suite
checks that every schedule call raises ``ConfigurationError`` naming the
backend and ``schedules``.

Message control (:mod:`pmsq.testing._control_tests`, pauses and circuit
breakers in :mod:`pmsq.testing._pause_tests`) runs against backends
with ``pmsq.backends.control_family.Control``; for others the suite checks
that every control call raises ``ConfigurationError`` naming the backend
and ``control``.

Besides one test per guarantee, the class runs the hypothesis state machine
of :mod:`pmsq.testing.stateful` against :class:`pmsq.testing.QueueModel`:
:attr:`stateful_settings` by default, :attr:`stateful_settings_slow` in the
test marked ``slow``.
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from pmsq.broker import Broker
from pmsq.testing._control_tests import ControlTests
from pmsq.testing._delivery_tests import DeliveryTests
from pmsq.testing._family_tests import FamilyTests
from pmsq.testing._operator_tests import OperatorTests
from pmsq.testing._order_tests import OrderTests
from pmsq.testing._pause_tests import PauseTests
from pmsq.testing._put_tests import PutTests
from pmsq.testing._schedule_tests import ScheduleTests
from pmsq.testing._transfer_tests import TransferTests
from pmsq.testing.stateful import BrokerStateMachine, ScratchStore, make_state_machine

__all__ = ["BrokerConformance"]

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


class BrokerConformance(
    DeliveryTests,
    OrderTests,
    PutTests,
    OperatorTests,
    TransferTests,
    ScheduleTests,
    ControlTests,
    PauseTests,
    FamilyTests,
):
    """Subclass, implement ``make_broker``, and pytest runs the whole conformance suite.

    Class attributes to set: ``missing_capabilities``, ``reopens`` (False
    for stores that die with their broker), ``exact_claim_order`` (False if
    equal-priority messages of a tenant may come out of put order),
    ``stateful_settings`` / ``stateful_settings_slow`` (hypothesis settings).
    """

    stateful_settings: ClassVar[settings] = settings(
        max_examples=300,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=_QUIET,
    )
    stateful_settings_slow: ClassVar[settings] = settings(
        max_examples=1000,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=_QUIET,
    )

    def state_machine(self) -> type[BrokerStateMachine]:
        """The state machine class for this backend; every run gets a fresh store."""
        numbers = itertools.count()

        def new_store() -> ScratchStore:
            if next(numbers):
                self.enter_new_store()  # the fixture's own store serves the first run
            return ScratchStore(open=self.make_broker, drop=self.drop_store)

        return make_state_machine(
            new_store, reopen=self.reopens, exact_order=self.exact_claim_order
        )

    def test_behaves_like_the_model(self, broker: Broker) -> None:
        broker.close()  # the machine opens the store itself
        run_state_machine_as_test(self.state_machine(), settings=self.stateful_settings)

    @pytest.mark.slow
    def test_behaves_like_the_model_long_run(self, broker: Broker) -> None:
        broker.close()
        run_state_machine_as_test(self.state_machine(), settings=self.stateful_settings_slow)
