"""Several connections on one file against the model, with the clock jumping both ways.

``pmsq.testing``'s stateful machine drives one broker; here three ``Broker``
objects share one SQLite file (as three processes would) and every step runs
on whichever the machine switched to last, while deliveries stay with the
connection that claimed them: one connection claims, another claims the same
queue after the lease ran out, the first settles late. The shared
``ManualClock`` also jumps backwards (an NTP step), which must not resurrect
or lose anything the model would not. Reopen closes and reopens only the
current connection (its held deliveries are abandoned, as by a process that
exits); redrive and purge run through any of them. The model is the same
``QueueModel`` the conformance suite uses.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule, run_state_machine_as_test

import pmsq
from pmsq.testing._stateful_setup import FALLBACK, QUEUES, TENANTS
from pmsq.testing.model import ModelPut
from pmsq.testing.stateful import BrokerStateMachine, ScratchStore

CONNECTIONS = 3


def _scratch(root: Path) -> ScratchStore:
    path = root / f"{uuid.uuid4().hex}.db"

    def drop() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    return ScratchStore(
        open=lambda clock: pmsq.connect(str(path), clock=clock, durability="normal"),
        drop=drop,
    )


class MultiConnectionMachine(BrokerStateMachine):
    """The conformance machine with several connections and a clock that can go back."""

    def __init__(self) -> None:
        super().__init__()
        self.brokers = [self.broker] + [self.store.open(self.clock) for _ in range(CONNECTIONS - 1)]
        self.current = 0
        self.high_water = self.clock.time()

    @rule(i=st.integers(0, CONNECTIONS - 1))
    def switch_connection(self, i: int) -> None:
        """The next steps run on connection ``i`` (held deliveries keep their own)."""
        self.current = i
        self.broker = self.brokers[i]

    @rule(seconds=st.sampled_from((0.5, 2.0, 9.0, 12.0, 40.0)))
    def clock_jumps_back(self, seconds: float) -> None:
        """The wall clock is stepped back (leases, delays and dedup windows look younger)."""
        self.high_water = max(self.high_water, self.clock.time())
        self.clock.advance(-seconds)

    def _put_args(self, drawn: dict[str, Any]) -> tuple[dict[str, Any], ModelPut]:
        # A dedup window that had run out before the clock went back may or may
        # not be remembered: expired dedup entries are deleted by housekeeping,
        # whenever it last ran. Such ids are not reused; every other one is.
        dd, now = drawn["dedup_id"], self.clock.time()
        ambiguous = any(
            k[1:] == (drawn["tenant"], dd) and exp is not None and now < exp <= self.high_water
            for k, (_, exp) in self.model.dedup.items()
        )
        return super()._put_args({**drawn, "dedup_id": None} if ambiguous else drawn)

    @precondition(lambda self: self.steps - self.reopened_at >= 4)
    @rule(downtime=st.sampled_from((0.0, 11.0)))
    def close_and_reopen(self, downtime: float) -> None:
        """Close and reopen the current connection only; its held deliveries are abandoned."""
        old = self.broker
        old.close()
        self.held = [h for h in self.held if h.delivery._runtime is not old.runtime]
        self.clock.advance(downtime)
        self.broker = self.brokers[self.current] = self.store.open(self.clock)
        self.reopened_at = self.steps

    def check_stats(self) -> None:
        """Depth and dead counts per queue and tenant match the model.

        Outcome totals are left out: each connection buffers its counts for
        up to a second of real time before writing them (see the SQLite
        backend), so another connection's snapshot may lag behind them.
        """
        snap = self.broker.stats()
        for queue in (*QUEUES, FALLBACK):
            qs = snap.queues[queue]
            for tenant, s in [(None, qs), *((t, qs.tenants.get(t)) for t in TENANTS)]:
                got = (0, 0) if s is None else (s.depth, s.dead)
                want = (
                    self.model.depth(queue, tenant),
                    len(self.model.dead_letters(queue, tenant)),
                )
                assert got == want, (
                    f"{queue!r} tenant {tenant!r}: (depth, dead) {got}, model {want}"
                )
        self._check_fallback()

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None:
                self._drain()
        finally:
            try:
                for b in self.brokers:
                    b.close()
            finally:
                self.store.drop()


@pytest.mark.timeout(300)
def test_several_connections_on_one_file_agree_with_the_model(tmp_path: Path) -> None:
    root = tmp_path
    machine: Any = type(
        "MultiConnectionRun",
        (MultiConnectionMachine,),
        {"new_store": staticmethod(lambda: _scratch(root))},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=100,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            database=None,
        ),
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_several_connections_long(tmp_path: Path) -> None:
    root = tmp_path
    machine: Any = type(
        "MultiConnectionRunLong",
        (MultiConnectionMachine,),
        {"new_store": staticmethod(lambda: _scratch(root))},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=600,
            stateful_step_count=60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            database=None,
        ),
    )
