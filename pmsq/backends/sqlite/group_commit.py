"""Group commit: concurrent writers share one transaction and one fsync.

Puts, claims, settlements and lease extensions all go through here. A thread
that finds a commit under way queues its request; whoever leads next commits
every queued request in one transaction (a savepoint each, so one caller's
error undoes only its own work) and one fsync. Each caller returns only
after the commit that holds its own work, so a put is durable, an ack final
and a claim's lease committed when the call returns.

The linger rule: while writers contend (others are queued now, or one had
to queue within the last ``recent`` seconds), a leader waits up to
``linger`` (0.3 ms by default) for as many writers as its predecessor's
batch held, so the writers the previous commit just woke join this one
instead of starting a commit of their own; it stops waiting as soon as they
are in. A lone writer never finds anyone queued, so it never waits.

A batch that mixes claims (which need no sync, see ``Store.write``) with
writes that do commits the claims first without a sync and wakes them, then
the rest with one: a claim never waits for somebody else's fsync.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pmsq.backends.sqlite.journal import Journal
from pmsq.backends.sqlkit.metrics import Metrics
from pmsq.errors import PmsqError

__all__ = ["LINGER", "RECENT", "GroupCommit"]

T = TypeVar("T")

#: Seconds a leader waits for more writers while writers contend.
LINGER = 0.0003
#: Seconds after a writer last had to queue during which leaders still linger.
RECENT = 0.002


class Write(Protocol):
    """Runs a function in one write transaction of the store and returns its result."""

    def __call__(self, fn: Callable[[sqlite3.Connection], Any], *, sync: bool) -> Any: ...


class _Request:
    """One caller's write (a put, a claim, an ack, an extension...) waiting for group commit."""

    __slots__ = ("done", "error", "event", "fn", "now", "rerunnable", "result", "sync")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        now: float,
        rerunnable: bool,
        sync: bool,
    ) -> None:
        self.fn = fn
        self.now = now
        # Its only effects outside the transaction are journal rows (dropped on
        # rollback), so it may run again after a rollback.
        self.rerunnable = rerunnable
        # False: its commit need not wait for the disk (a claim; see Store.write).
        self.sync = sync
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        # Made only for a request that has to wait (most run as their own leader).
        self.event: threading.Event | None = None

    def wake(self) -> None:
        # Only requests queued behind a leader are woken, and they all have an event.
        assert self.event is not None
        self.event.set()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class _RequestFailed(Exception):
    """A request of an unisolated batch failed: roll back and run the batch isolated."""


class GroupCommit:
    """Queues concurrent writes and commits each batch in one transaction.

    Args:
        write: Runs a function in one write transaction of the store
            (``BEGIN IMMEDIATE`` .. ``COMMIT``) and returns its result;
            ``sync=False`` commits without waiting for the disk.
        journal: The store's journal buffer, rewound for a request that fails.
        after_batch: Runs at the end of each batch's transaction, with the
            time of its first request (buffered metrics, housekeeping).
        metrics: The outcome counts the requests add to; what a rolled-back
            unisolated attempt added is taken back before the batch runs again.
        linger: Seconds a leader waits for more writers while writers contend
            (0: never).
        recent: Seconds after a writer last had to queue during which
            writers count as contending.
        clock: Monotonic seconds (injectable for tests).
        wait: How a leader lingers: ``wait(condition, seconds)`` waits on the
            condition the queueing writers notify (injectable for tests).
    """

    def __init__(
        self,
        write: Write,
        journal: Journal,
        after_batch: Callable[[sqlite3.Connection, float], None],
        metrics: Metrics | None = None,
        *,
        linger: float = LINGER,
        recent: float = RECENT,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Condition, float], object] = threading.Condition.wait,
    ) -> None:
        self._write = write
        self._journal = journal
        self._after_batch = after_batch
        self._metrics = metrics
        self._linger = linger
        self._recent = recent
        self._clock = clock
        self._wait = wait
        self._lock = threading.Lock()
        # Notified when as many writers queued as a lingering leader waits for.
        self._arrived = threading.Condition(self._lock)
        self._leading = False
        self._lingering = False
        # How many writers the last batch held: what a lingering leader waits for.
        self._expected = 1
        # When a writer last found a leader at work and had to queue.
        self._queued_at = -float("inf")
        #: Requests queued behind the current leader.
        self.pending: list[_Request] = []

    def run(
        self,
        fn: Callable[[sqlite3.Connection], T],
        now: float,
        *,
        rerunnable: bool = False,
        sync: bool = True,
    ) -> T:
        """Run ``fn`` in a transaction shared with other threads' concurrent writes.

        Args:
            fn: The caller's work, run inside the transaction.
            now: The caller's clock time (the batch's housekeeping uses the first).
            rerunnable: ``fn`` may run again after a rollback (its only effects
                outside the transaction are journal rows and metrics).
            sync: False if ``fn``'s work need not be on disk when the call
                returns (a batch commits with a sync if any request asks for it).

        Returns:
            What ``fn`` returned, once the commit holding it is done.

        Raises:
            PmsqError: what ``fn`` raised (its own work is undone, the batch's
                other requests are not), or what the commit raised.
        """
        request = _Request(fn, now, rerunnable, sync)
        with self._lock:
            self.pending.append(request)
            lead = not self._leading
            self._leading = True
            if not lead:
                self._queued_at = self._clock()
                # Created under the lock, so the leader that wakes it sees it.
                request.event = threading.Event()
                if self._lingering and len(self.pending) >= self._expected:
                    self._arrived.notify()
        if not lead:
            # A leader is committing; it will either include this request in
            # its transaction or hand leadership to it.
            assert request.event is not None
            request.event.wait()
            if request.done:
                return request.outcome()  # type: ignore[no-any-return]
        with self._lock:
            if self._linger > 0 and self._contended():
                self._linger_for_others()
            batch, self.pending = self.pending, []
            self._expected = len(batch)
        quick = [req for req in batch if not req.sync]
        if quick and len(quick) < len(batch):
            # Claims first, without a sync, and back to their callers at once:
            # a claim never waits for somebody else's fsync.
            batch = [req for req in batch if req.sync]
            try:
                self._commit(quick, sync=False)
            finally:
                self._finish(quick, request)
                if not request.sync:
                    # A claim led: the rest goes to one of its writers, who
                    # leads it (and whatever queued meanwhile) as the next batch.
                    with self._lock:
                        self.pending[:0] = batch
                        batch[0].wake()
            if not request.sync:
                return request.outcome()  # type: ignore[no-any-return]
        try:
            self._commit(batch, sync=any(req.sync for req in batch))
        finally:
            self._finish(batch, request)
            with self._lock:
                if self.pending:
                    self.pending[0].wake()  # the next leader
                else:
                    self._leading = False
        return request.outcome()  # type: ignore[no-any-return]

    @staticmethod
    def _finish(batch: list[_Request], leader: _Request) -> None:
        """Hand each request of a committed (or failed) ``batch`` its outcome."""
        for req in batch:
            req.done = True
            if req is not leader:
                req.wake()

    def _contended(self) -> bool:
        """Whether other writers are queued now or had to queue a moment ago (under the lock)."""
        return len(self.pending) > 1 or self._clock() - self._queued_at < self._recent

    def _linger_for_others(self) -> None:
        """Wait (under the lock) up to ``linger`` for as many writers as the last batch held."""
        deadline = self._clock() + self._linger
        self._lingering = True
        try:
            while len(self.pending) < self._expected:
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._wait(self._arrived, left)
        finally:
            self._lingering = False

    def _commit(self, batch: list[_Request], *, sync: bool) -> None:
        # A batch of rerunnable requests (puts) first runs without a savepoint
        # each: they almost never fail, and two statements less per put count
        # with sixteen threads queuing. If one does fail, the transaction is
        # rolled back and the batch runs again the careful way.
        if len(batch) > 1 and all(req.rerunnable for req in batch):
            # Writers hold the store's lock, so nobody else counts meanwhile.
            saved = self._metrics.snapshot() if self._metrics is not None else None
            try:
                self._write(lambda conn: self._run_batch(conn, batch, isolate=False), sync=sync)
            except _RequestFailed:
                if self._metrics is not None and saved is not None:
                    self._metrics.restore(saved)
            except BaseException as exc:
                _fail(batch, exc)
                return
            else:
                return
        try:
            self._write(
                lambda conn: self._run_batch(conn, batch, isolate=len(batch) > 1), sync=sync
            )
        except BaseException as exc:
            _fail(batch, exc)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Request], *, isolate: bool) -> None:
        """Run ``batch`` in the open transaction; ``isolate``: a savepoint per request."""
        for req in batch:
            # A batch may run again (isolated, or after the store freed a full
            # disk): only this run's outcome counts.
            req.result, req.error = None, None
            if isolate:
                conn.execute("SAVEPOINT pmsq_req")
            mark = self._journal.mark()
            try:
                req.result = req.fn(conn)
            except PmsqError as exc:
                req.result = None
                req.error = exc
                self._journal.rewind(mark)
                if not isolate:
                    if len(batch) > 1:
                        raise _RequestFailed from exc
                    raise
                conn.execute("ROLLBACK TO pmsq_req")
            if isolate:
                conn.execute("RELEASE pmsq_req")
        self._after_batch(conn, batch[0].now)


def _fail(batch: list[_Request], exc: BaseException) -> None:
    # The transaction rolled back: nothing of this batch is stored.
    for req in batch:
        req.result = None
        if req.error is None:
            req.error = exc
