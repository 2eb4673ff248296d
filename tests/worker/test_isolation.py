"""``isolation="process"``: handlers in child processes, killed at their timeout.

Real processes throughout: a handler that hangs forever is killed, retried
and dead-lettered; a child that exits or is SIGKILLed by the test fails its
message and the worker carries on; a key's next message starts only once
the killed process is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pmsq
from pmsq.context import current_message
from worker import process_handlers
from worker._support import Running, log_records, wait_for

Start = Callable[..., Running]
_NOW = pmsq.Backoff(base=0, jitter=False)


def _events(log: Path) -> list[tuple[str, int, int, str]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        mid, attempt, pid, event = line.split()
        out.append((mid, int(attempt), int(pid), event))
    return out


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (an orphan nobody reaps here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_hung_handler_is_killed_at_its_timeout_retried_then_dead_lettered_in_key_order(
    live: pmsq.Broker, start: Start, tmp_path: Path, flavour: str, kind: str
) -> None:
    if flavour == "async" and kind != "thread":
        pytest.skip("the child runs an async handler the same way whatever the driver")
    log = tmp_path / "events"
    fn = process_handlers.behave if flavour == "sync" else process_handlers.behave_async
    live.declare_queue("pdf", max_attempts=2, backoff=_NOW)
    live.handler("pdf", timeout=1.5, isolation="process")(fn)
    q = live.queue("pdf")
    hung = q.put({"log": str(log), "do": "hang"}, key="booking:1")
    after = q.put({"log": str(log)}, key="booking:1")
    run = start(live, concurrency=4)
    wait_for(lambda: live.stats("pdf").depth == 0, what="both messages settled")
    [dead] = live.dead_letters("pdf").list()
    assert dead.message.id == hung
    assert dead.attempts == 2
    assert dead.error_type == "TimeoutError"
    assert "killed" in dead.reason
    events = _events(log)
    # Two attempts of the hung message, each in its own process, then the next
    # message of the key: it started only after both were killed and gone.
    assert [(m, a, e) for m, a, _, e in events] == [
        (hung, 1, "start"),
        (hung, 2, "start"),
        (after, 1, "start"),
        (after, 1, "done"),
    ]
    hung_pids = [pid for m, _, pid, _ in events if m == hung]
    assert len(set(hung_pids)) == 2
    assert all(_gone(pid) for pid in hung_pids)
    assert os.getpid() not in hung_pids
    run.stop()
    assert live.stats("pdf").processed == 1


@pytest.mark.parametrize("how", ["os._exit", "SIGKILL"])
def test_a_handler_process_that_dies_fails_its_message_and_the_worker_survives(
    live: pmsq.Broker, start: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    caplog.set_level(logging.INFO, logger="pmsq.worker")
    log = tmp_path / "events"
    live.declare_queue("psp", max_attempts=3, backoff=_NOW)
    live.handler("psp", isolation="process")(process_handlers.behave)
    do = "exit" if how == "os._exit" else "wait-for-kill"
    mid = live.queue("psp").put({"log": str(log), "do": do})
    run = start(live)
    if how == "SIGKILL":
        wait_for(lambda: _events(log), what="the handler to start")
        [(_, _, pid, _)] = _events(log)
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: live.stats("psp").processed == 1, what="the retry to succeed")
    [failure] = log_records(caplog, "failure")
    assert failure["message_id"] == mid
    assert failure["attempt"] == 1
    expected = "exited with code 3" if how == "os._exit" else "was killed by SIGKILL"
    assert "HandlerProcessDied" in failure["error"]
    assert expected in failure["error"]
    assert [(a, e) for _, a, _, e in _events(log)] == [(1, "start"), (2, "start"), (2, "done")]
    # The worker lives on, with a fresh child for the next message.
    nxt = live.queue("psp").put({"log": str(log)})
    wait_for(lambda: live.stats("psp").processed == 2, what="the next message")
    assert (nxt, 1, "done") in [(m, a, e) for m, a, _, e in _events(log)]
    run.stop()


class _Seen(pmsq.Middleware):
    def __init__(self) -> None:
        self.before: list[bool] = []
        self.after: list[tuple[str, str | None]] = []

    def before_process(self, message: pmsq.Message) -> None:
        self.before.append(current_message.get() == message)

    def after_process(
        self, message: pmsq.Message, outcome: Any, error: BaseException | None, duration_ms: float
    ) -> None:
        self.after.append((message.id, None if error is None else type(error).__name__))


def test_signals_errors_and_system_exit_from_a_child_settle_like_in_a_thread(
    live: pmsq.Broker, start: Start, tmp_path: Path
) -> None:
    log = tmp_path / "events"
    live.declare_queue("jobs", max_attempts=2, backoff=_NOW)
    live.handler("jobs", isolation="process")(process_handlers.behave)
    q = live.queue("jobs")
    reject = q.put({"log": str(log), "do": "reject"})
    fail = q.put({"log": str(log), "do": "fail", "n": 7})
    retry = q.put({"log": str(log), "do": "retry"})
    leave = q.put({"log": str(log), "do": "sys-exit"})
    hooks = _Seen()
    start(live, concurrency=4, middleware=[hooks])
    wait_for(lambda: live.stats("jobs").depth == 0, what="all settled")
    # Seven attempts: the reject once, the others twice.
    wait_for(lambda: len(hooks.after) == 7, what="the after_process hooks")
    assert hooks.before == [True] * 7  # hooks run in the worker, with the message current
    assert set(hooks.after) == {
        (reject, "Reject"),
        (fail, "RemoteError"),  # carries the child's ValueError and its traceback
        (retry, "Retry"),
        (retry, None),
        (leave, "RemoteError"),
        (leave, None),
    }
    assert current_message.get() is None
    dead = {d.message.id: d for d in live.dead_letters("jobs").list()}
    assert set(dead) == {reject, fail}
    assert dead[reject].reason == "no such booking"
    assert dead[reject].attempts == 1
    assert dead[fail].error_type == "ValueError"
    assert "invoice 7 is broken" in dead[fail].reason
    assert dead[fail].traceback is not None
    assert "process_handlers.py" in dead[fail].traceback  # the child's own traceback
    done = {(m, a) for m, a, _, e in _events(log) if e == "done"}
    assert {(retry, 2), (leave, 2)} <= done  # Retry and SystemExit: attempt 1 failed


def test_stop_kills_a_handler_process_still_running_after_the_grace_period(
    live: pmsq.Broker, tmp_path: Path
) -> None:
    log = tmp_path / "events"
    live.handler("stuck", isolation="process")(process_handlers.behave)
    live.queue("stuck").put({"log": str(log), "do": "hang"})
    worker = pmsq.Worker(live)
    worker.start()
    wait_for(lambda: _events(log), what="the handler to start")
    [(_, _, pid, _)] = _events(log)
    assert worker.stop(timeout=0.1) is False
    assert _gone(pid)  # killed and reaped, not left behind
    s = live.stats("stuck")
    assert (s.in_flight, s.processed) == (1, 0)  # not settled: its lease runs out


def _nested_handler() -> Callable[[pmsq.Message], None]:
    def nested(message: pmsq.Message) -> None:
        pass

    return nested


def test_isolation_is_checked(broker: pmsq.Broker) -> None:
    with pytest.raises(
        pmsq.ConfigurationError, match="isolation must be one of 'thread', 'process', got 'fork'"
    ):
        broker.handler("a", isolation="fork")(process_handlers.behave)
    with pytest.raises(pmsq.ConfigurationError, match="top level of an importable module"):
        broker.handler("b", isolation="process")(lambda message: None)
    with pytest.raises(pmsq.ConfigurationError, match="nested"):
        broker.handler("c", isolation="process")(_nested_handler())
    # A function that its module name does not lead back to is refused when a worker starts.
    renamed = process_handlers.behave
    original = renamed.__qualname__
    renamed.__qualname__ = "no_such_function"
    try:
        broker.handler("d", isolation="process")(renamed)
        with pytest.raises(pmsq.ConfigurationError, match="cannot be imported"):
            pmsq.Worker(broker).start()
    finally:
        renamed.__qualname__ = original
    assert "a" not in broker.handlers
    assert "b" not in broker.handlers


_WORKER_SCRIPT = """
import sys
import pmsq
from worker import process_handlers

broker = pmsq.connect(sys.argv[1], durability="normal", poll_interval=0.02)
broker.handler("orphan", isolation="process")(process_handlers.behave)
pmsq.Worker(broker).run()
"""


def test_a_handler_process_whose_worker_is_sigkilled_exits_by_itself(tmp_path: Path) -> None:
    db, log = tmp_path / "w.db", tmp_path / "events"
    with pmsq.connect(str(db), durability="normal") as b:
        b.queue("orphan").put({"log": str(log), "do": "hang"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    worker = subprocess.Popen([sys.executable, "-c", _WORKER_SCRIPT, str(db)], env=env)
    try:
        wait_for(lambda: _events(log), what="the handler to start in its child")
        [(_, _, child, _)] = _events(log)
        assert child != worker.pid
        worker.kill()  # SIGKILL: the worker cannot kill its child
        worker.wait(30)
        wait_for(lambda: _gone(child), what="the orphaned handler process to exit")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
