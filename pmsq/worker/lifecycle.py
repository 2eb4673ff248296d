"""The one claim → invoke → settle lifecycle that both worker drivers run.

``Lifecycle`` holds everything a worker decides, free of threads and event
loops: how many messages to claim from which queue (handler slots plus the
prefetch bound, per-handler ``concurrency``, ``tenant_concurrency``, rotation
over queues), which claimed message starts next,
what to do with each claimed message, and when it is done. Its two
generators, :meth:`Lifecycle.claim_round` and :meth:`Lifecycle.process`,
yield *effects* (``pmsq.worker.effects``) instead of doing I/O themselves,
and the loops that drive them (``pmsq.worker.loops``) are generators too.

The driver sends each effect's result back (or throws its exception in), so
the decisions (``pmsq.policy.decide`` through ``Delivery.outcome_for``),
settlement batching, hooks and bookkeeping exist once. Drivers add only
scheduling: where handlers run, how to wait, how to stop.

Settlement batching: a finished handler's ``Settle`` is *parked*
(:meth:`Lifecycle.park`), its generator left open; the dispatcher (in the
``AsyncWorker``, a settle task) commits everything parked meanwhile in one
transaction (:meth:`Lifecycle.commit_parked`: one fsync) and resumes each
generator with its own result. With many short handlers this turns one
commit per message into one per round.

Prefetch (claiming ahead of free handler slots): a claim round may take
more messages than there are free slots; the rest wait in the *held*
queue, in claim order, leased in the store (so their keys stay blocked) and
kept alive by the heartbeat like running ones. A handler that ends takes the
next held message at once (:meth:`Lifecycle.next_job`), without waiting for
the dispatcher's next store round trip, and the dispatcher claims again only
when the held queue has run down to half its bound, so one claim
transaction serves many messages. A stop hands held messages back
(``release``: no attempt spent). The bound is fixed (``prefetch=N``) or
adaptive (see :meth:`Lifecycle.prefetch_bound`).

A message gone under a running handler (cancelled, or its lease lost) is
never settled, and a held one found gone is never started: see
``pmsq.worker.gone``.

Thread safety: the counters are guarded by one lock, because the thread
Worker calls in from its dispatcher, handler and heartbeat threads.
"""

from __future__ import annotations

import functools
import logging
import math
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pmsq.delivery import Delivery, release_many, settle_many
from pmsq.errors import LeaseLost, PmsqError
from pmsq.handlers import HandlerSpec
from pmsq.leases import get_many
from pmsq.worker.effects import PARKED, Call, Effect, Invoke, Job, Settle, drive
from pmsq.worker.gone import HeldKeys, discarded_at_settle, log_discarded, notice_gone
from pmsq.worker.heartbeat import Heartbeats, PresenceBeat, beat_interval
from pmsq.worker.invoke import HandlerAbandoned, Invocation
from pmsq.worker.isolation import ProcessPool
from pmsq.worker.middleware import Hooks
from pmsq.worker.prefetch import Prefetch

if TYPE_CHECKING:
    from pmsq.broker import Broker

__all__ = ["PARKED", "Call", "Effect", "Invoke", "Job", "Lifecycle", "Settle", "drive"]

log = logging.getLogger("pmsq.worker")
#: Busy workers serving more queues than this also claim only where the store
#: says work may be: one readiness query costs less than a probe per queue.
_READINESS_ABOVE = 16

# A queue whose every claimed message belonged to tenants at their
# tenant_concurrency is left alone for a while (doubling up to this) or until
# one of its handlers finishes: claiming it again at once would only hand the
# same messages back.
_MAX_TENANT_BACKOFF = 1.0


class Lifecycle:
    """Claim, invoke and settle for one worker run.

    Args:
        broker: The broker.
        specs: Handler per queue this worker serves.
        concurrency: Handlers running at once, at most.
        hooks: The middleware runner.
        kick: Wakes the driver's waits (thread-safe); called when a finished
            handler frees something a wait may be waiting for.
        prefetch: Messages held (claimed, not started) beyond the running
            handlers, at most; ``None``: adaptive (:meth:`prefetch_bound`);
            ``0``: claim only what can start at once.
    """

    def __init__(
        self,
        broker: Broker,
        specs: Mapping[str, HandlerSpec],
        concurrency: int,
        hooks: Hooks,
        *,
        kick: Callable[[], None],
        prefetch: int | None = 0,
    ) -> None:
        self.broker = broker
        #: This worker's id in the message journal (``pmsq trace`` shows it with the pid).
        self.consumer = f"worker-{secrets.token_hex(3)}"
        self.specs = dict(specs)
        self.queues: tuple[str, ...] = tuple(sorted(specs))
        self._served = frozenset(self.queues)
        self.concurrency = concurrency
        self.prefetch = prefetch
        self._prefetch = Prefetch(concurrency, prefetch)
        self.hooks = hooks
        self.heartbeats: Heartbeats[Job] = Heartbeats()
        #: This worker's row in the store's presence table (``broker.workers()``).
        self.presence = PresenceBeat(
            broker.backend, broker.clock, self.consumer, self.queues, concurrency
        )
        #: Child processes for handlers with ``isolation="process"`` (None: there are none).
        self.processes: ProcessPool | None = None
        if any(spec.isolation == "process" for spec in self.specs.values()):
            self.processes = ProcessPool()
        self._kick = kick
        self._lock = threading.Lock()
        # Handlers started (or about to be) and not ended; settlements to commit.
        self._running = 0
        self._settling = 0
        # Claimed and not started, in claim order (guarded by _lock).
        self._held: deque[Job] = deque()
        # The prefetch bound the last claim round worked with.
        self._bound = 0
        self._per_queue: Counter[str] = Counter()
        self._per_tenant: Counter[tuple[str, str | None]] = Counter()
        self._blocked: dict[str, float] = {}
        self._block_backoff: dict[str, float] = {}
        # Keys of the messages this worker holds, until their handler ended.
        self._keys = HeldKeys()
        self._rotation = 0
        self._claim_errors = 0
        # Settlements parked by finished handlers: (generator, effect), for commit_parked.
        self._parked: list[tuple[Generator[Effect, Any, Any], Settle]] = []
        self._parked_lock = threading.Lock()
        # Idle rounds claim only where the store says work may be (see _ready_queues):
        # the last answer, the change token it was given under, and when it expires.
        self._idle = True
        self._ready: frozenset[str] | None = None
        self._ready_token: object = None
        self._ready_until = math.inf
        # Plain attributes, written without the lock: ``request_stop`` runs in
        # signal handlers, which must never wait for a lock.
        self._news = False
        self.stopping = False
        self.deadline = math.inf
        self.abandoned = False

    # -- state the drivers read ------------------------------------------------
    @property
    def running(self) -> int:
        """Messages this worker has: claimed and not yet settled or handed back."""
        return self._running + self._settling + len(self._held)

    @property
    def held(self) -> int:
        """Messages claimed ahead of the handler slots: leased, not started yet."""
        return len(self._held)

    def idle(self) -> bool:
        """Nothing is held."""
        return self._running + self._settling + len(self._held) == 0

    def free_slots(self) -> int:
        """How many more handlers may start now."""
        return 0 if self.stopping else max(0, self.concurrency - self._running)

    def prefetch_bound(self, lease: float | None = None) -> int:
        """How many messages may be held beyond the running handlers now.

        See :class:`pmsq.worker.prefetch.Prefetch`; ``lease``: the lease to
        cover (default: the shortest this worker's claims were made with).
        """
        return self._prefetch.bound(self._running, time.monotonic(), lease)

    def has_news(self) -> bool:
        """Something the dispatcher cares about happened since :meth:`clear_news`."""
        return self._news or self.stopping

    @property
    def parked(self) -> int:
        """Settlements waiting for the dispatcher to commit them."""
        return len(self._parked)

    def post_news(self) -> None:
        """Tell a waiting driver to look again (thread-safe)."""
        self._news = True
        self._kick()

    def clear_news(self) -> None:
        """Forget news already acted upon (call before deciding to wait)."""
        self._news = False

    def drained_or_late(self) -> bool:
        """The drain is over: nothing held, or the grace period ran out."""
        return self.idle() or time.monotonic() >= self.deadline

    def request_stop(self, timeout: float) -> None:
        """Stop claiming; in-flight handlers get ``timeout`` more seconds at most.

        Safe in signal handlers and from any thread; calling again can only
        shorten the grace period.
        """
        self.deadline = min(self.deadline, time.monotonic() + max(0.0, timeout))
        self.stopping = True
        self._kick()

    def abandon(self) -> None:
        """The drain is over: from now on nothing is settled or released (leases expire).

        Parked settlements are dropped (their leases run out) and the
        heartbeat is woken to end.
        """
        self.abandoned = True
        self.stopping = True
        with self._lock:
            # Left to their leases, like running handlers (a forced stop).
            self._held.clear()
        with self._parked_lock:
            left, self._parked = self._parked, []
        for gen, _ in left:
            gen.close()
        self.heartbeats.on_earlier()

    def close(self) -> None:
        """Release what the run holds outside the store: handler processes still
        running after the drain are killed (blocking; once, after :meth:`abandon`);
        the worker's presence row is deleted."""
        self.presence.leave()
        if self.processes is not None:
            self.processes.close(kill=True)

    def idle_timeout(self) -> float:
        """How long a driver with nothing to do may wait before claiming again."""
        timeout = self.broker.poll_interval
        if self._blocked:
            now = time.monotonic()
            with self._lock:
                soonest = min(self._blocked.values(), default=math.inf)
            timeout = min(timeout, max(0.0, soonest - now))
        return timeout

    def _error_backoff(self) -> float:
        return float(min(5.0, self.broker.poll_interval * 2 ** min(self._claim_errors, 20)))

    def wait_args(self) -> tuple[tuple[str, ...], float]:
        """What a driver that claimed nothing waits for: ``(queues, timeout)``.

        A local put to one of ``queues`` or news (a freed slot, a stop) ends
        the wait early; with queues to watch the broker caps the wait at its
        ``poll_interval``, the bound on noticing another process's puts.
        """
        if self._claim_errors:
            return (), self._error_backoff()
        if not self._wants_claim(self.prefetch_bound()):
            # Only a finished handler (or a held message started) can help,
            # and it brings news; the timeout is a safety net.
            return (), 1.0
        return self.queues, self.idle_timeout()

    # -- claiming ----------------------------------------------------------------
    def _order(self, among: frozenset[str] | None = None) -> list[str]:
        # Rotating the first queue each round keeps a busy queue from taking
        # every free slot round after round while another one waits.
        queues = self.queues if among is None else tuple(sorted(among & self._served))
        if not queues:
            return []
        with self._lock:
            start = self._rotation % len(queues)
            self._rotation += 1
        return list(queues[start:] + queues[:start])

    def _wants_claim(self, bound: int) -> bool:
        """Whether a claim round is due: room, and the held queue down to half its bound.

        Waiting for half keeps claims in batches (one transaction for many
        messages) instead of one claim per finished handler.
        """
        if self.stopping or len(self._held) > bound // 2:
            return False
        return self._running + len(self._held) < self.concurrency + bound

    def _claimable(self, queue: str, bound: int) -> int:
        with self._lock:
            if self.stopping:
                return 0
            until = self._blocked.get(queue)
            if until is not None:
                if time.monotonic() < until:
                    return 0
                del self._blocked[queue]
            free = self.concurrency + bound - self._running - len(self._held)
            limit = self.specs[queue].concurrency
            if limit is not None:
                free = min(free, limit - self._per_queue[queue])
            return max(0, free)

    def _admit(
        self, queue: str, deliveries: Sequence[Delivery]
    ) -> tuple[list[Delivery], list[Delivery], list[Job]]:
        """Admit what this worker may hold; return ``(hold, hand back, holders)``.

        Per-handler ``concurrency`` and ``tenant_concurrency`` count held
        messages with running ones, so any held message may start as soon as
        a handler slot is free.

        ``holders`` are this worker's jobs still running a message of the key
        of one handed back: their message must be gone (the store let the
        key move on), so their next heartbeat is due now.
        """
        limit = self.specs[queue].tenant_concurrency
        keep: list[Delivery] = []
        over: list[Delivery] = []
        holders: list[Job] = []
        with self._lock:
            for d in deliveries:
                slot = (queue, d.message.tenant)
                held, holder = self._keys.held(d.message)
                if held:
                    if holder is not None:
                        holders.append(holder)
                    over.append(d)
                    continue
                if limit is not None and self._per_tenant[slot] >= limit:
                    over.append(d)
                    continue
                self._keys.reserve(d.message)
                self._per_queue[queue] += 1
                self._per_tenant[slot] += 1
                keep.append(d)
            if (over and not keep) or holders:
                back = min(
                    _MAX_TENANT_BACKOFF,
                    2 * self._block_backoff.get(queue, self.broker.poll_interval / 2),
                )
                self._block_backoff[queue] = back
                self._blocked[queue] = time.monotonic() + back
            elif keep:
                self._block_backoff.pop(queue, None)
        return keep, over, holders

    def _unadmit(self, job: Job) -> None:
        """Count ``job`` out of its queue's and tenant's limits (holding ``_lock``)."""
        queue, tenant = job.spec.queue, job.delivery.message.tenant
        self._per_queue[queue] -= 1
        if not self._per_queue[queue]:
            del self._per_queue[queue]
        self._per_tenant[(queue, tenant)] -= 1
        if not self._per_tenant[(queue, tenant)]:
            del self._per_tenant[(queue, tenant)]  # stays small with many tenants

    def _free_slot(self, job: Job, *, settling: bool) -> None:
        """Give back ``job``'s handler slot; ``settling``: its settlement is still to commit."""
        queue = job.spec.queue
        limit = job.spec.concurrency
        with self._lock:
            if job.freed:
                return
            job.freed = True
            # A full worker with held messages refills the slot itself
            # (next_job); only with none held does a freed slot mean "claim".
            was_full = self._running >= self.concurrency and not self._held
            queue_full = limit is not None and self._per_queue[queue] >= limit
            self._running -= 1
            self._settling += int(settling)
            if settling:
                self._prefetch.handler_ended(job.invocation.duration_ms / 1000.0, time.monotonic())
            self._unadmit(job)
            unblocked = self._blocked.pop(queue, None) is not None
            last = self.stopping and self._running + self._settling + len(self._held) == 0
        # Kick only when a wait may be waiting for exactly this: at full load
        # a freed slot means "claim again"; otherwise the dispatcher is busy
        # or polling anyway and a kick would only cost a wake-up.
        if was_full or queue_full or unblocked or last:
            self._news = True
            self._kick()

    def _finished(self, job: Job) -> None:
        self._keys.let_go(job)
        if not job.freed:
            self._free_slot(job, settling=False)
            return
        with self._lock:
            self._settling -= 1
            last = self.stopping and self._running + self._settling + len(self._held) == 0
        if last:
            self._news = True
            self._kick()

    def _start_held(self, most: int) -> list[Job]:
        """Move up to ``most`` held messages, oldest first, into free slots (holding ``_lock``)."""
        out: list[Job] = []
        held = self._held
        while held and len(out) < most and self._running < self.concurrency:
            out.append(held.popleft())
            if not self._running:
                self._prefetch.first_started(time.monotonic())
            self._running += 1
        return out

    def next_job(self) -> Job | None:
        """The next held message to start in the slot of a handler that just ended, if any.

        Drivers call it from the finished handler's thread or task, so a held
        message starts without waiting for the dispatcher. The slot is
        taken (the caller must run the job's :meth:`process`). When this
        leaves the held queue at half its bound, the dispatcher is told to
        claim the next batch.
        """
        if self.stopping or not self._held:
            return None
        half = self._bound // 2  # as of the last claim round: no arithmetic per message
        with self._lock:
            # Stopping from here on: the job's gate refuses it and it is released.
            jobs = self._start_held(1)
            left = len(self._held)
        if jobs and (left == half or not left):
            self.post_news()
        return jobs[0] if jobs else None

    def hand_back_held(self) -> int:
        """Release every held message without spending an attempt (blocking; at a stop).

        Returns:
            How many were handed back.
        """
        with self._lock:
            jobs = list(self._held)
            self._held.clear()
            for job in jobs:
                self._unadmit(job)
        for job in jobs:
            self.heartbeats.remove(job)
            self._keys.let_go(job)
        # The store took back those gone already (cancelled, lease lost).
        back = [job.delivery for job in jobs if job.gone is None]
        for d in drive(self._release(back), _perform_call):
            self.hooks("on_release", d.message)
        if jobs:
            log.info(
                "handed back %d message(s) claimed ahead and not started",
                len(jobs),
                extra={"pmsq": {"event": "handed_back", "count": len(jobs)}},
            )
        return len(jobs)

    @staticmethod
    def _release(deliveries: Sequence[Delivery]) -> Generator[Effect, Any, list[Delivery]]:
        """Hand ``deliveries`` back unstarted in one store call; return those released.

        If the batch fails, each is tried on its own, so one message the
        store refuses does not keep the others leased until they expire.
        """
        try:
            yield Call(functools.partial(release_many, deliveries))
            return list(deliveries)
        except PmsqError:
            pass
        released = []
        for d in deliveries:
            try:
                yield Call(d.release)
            except PmsqError as exc:
                log.warning("could not hand back message %s: %s", d.message.id, exc)
            else:
                released.append(d)
        return released

    def _ready_queues(self) -> frozenset[str]:
        """The served queues that may have work: asked of the store only when it may have changed.

        One ``backend.ready_queues`` call for all queues, and none at all while
        neither the store nor the broker's local puts moved and no delay or
        lease fell due: an idle worker's cost does not grow with its queues.
        """
        broker = self.broker
        token = broker.runtime.wakeups.changes(self.queues)
        now = broker.clock.time()
        if self._ready is not None and token == self._ready_token and now < self._ready_until:
            return self._ready
        try:
            found = broker.backend.ready_queues(self.queues, now=now)
        except PmsqError:
            self._ready = None  # the claims will meet the error and back off
            return frozenset(self.queues)
        self._ready, self._ready_token = found.queues, token
        self._ready_until = math.inf if found.next_due is None else found.next_due
        return self._ready

    def _claim(self, queue: str, n: int) -> list[Delivery]:
        return get_many(self.broker.runtime, queue, n, 0, consumer=self.consumer)

    def claim_round(self) -> Generator[Effect, Any, list[Job]]:
        """Claim what the free slots and the prefetch bound allow; return the jobs to start now.

        Claimed messages join the held queue behind those claimed before,
        and as many as there are free slots start, oldest first. Claims are
        made only when the held queue has run down to half the prefetch
        bound, so other workers and processes share the load and memory
        stays flat whatever the backlog. Messages of tenants at their
        ``tenant_concurrency`` are handed back at once (no attempt spent).
        """
        bound = self._bound = self.prefetch_bound()
        claimed = False
        if self._wants_claim(bound):
            if self._idle or len(self.queues) > _READINESS_ABOVE:
                ready: frozenset[str] = yield Call(self._ready_queues)
                order = self._order(ready)
            else:
                order = self._order()
            for queue in order:
                n = self._claimable(queue, bound)
                if n <= 0:
                    continue
                try:
                    deliveries = yield Call(functools.partial(self._claim, queue, n))
                except PmsqError as exc:
                    # A busy or failing store: keep what this round already holds
                    # and let the driver back off (see wait_args).
                    self._claim_errors += 1
                    log.error(
                        "claiming from queue %r failed (%s); retrying in %.1fs",
                        queue,
                        exc,
                        self._error_backoff(),
                        extra={"pmsq": {"event": "claim_failed", "queue": queue}},
                    )
                    break
                self._claim_errors = 0
                keep, over, holders = self._admit(queue, deliveries)
                for holder in holders:
                    # The store let the key move on, so the holder's message is gone:
                    # look now rather than at its next beat.
                    self.heartbeats.hurry(holder, time.monotonic())
                    log.debug(
                        "a message of key %r came while this worker still runs message %s "
                        "of that key: handed back until that handler ends",
                        holder.delivery.message.key,
                        holder.delivery.message.id,
                        extra={
                            "pmsq": {"event": "key_held", "message_id": holder.delivery.message.id}
                        },
                    )
                if over:
                    yield from self._release(over)
                if keep:
                    claimed = True
                    self._hold(queue, keep)
        self._idle = not claimed
        with self._lock:
            return [] if self.stopping else self._start_held(self.concurrency)

    def _hold(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Make the jobs of admitted deliveries and queue them as held, leases beating."""
        spec = self.specs[queue]
        gate = self._gate
        before = self.hooks.caller("before_process")
        on_claim = self.hooks.has("on_claim")
        jobs = []
        for d in deliveries:
            if on_claim:
                self.hooks("on_claim", d.message)
            job = Job(delivery=d, spec=spec, invocation=Invocation(spec, d.message, gate, before))
            self._keys.bind(job)
            jobs.append(job)
        # Every held message's lease is kept alive from its claim on (a
        # claim's deliveries share its lease length).
        lease = jobs[0].lease
        self._prefetch.claimed(queue, lease)
        self.heartbeats.add_many(jobs, beat_interval(lease), time.monotonic())
        with self._lock:
            self._held.extend(jobs)

    def _gate(self) -> bool:
        return not self.stopping

    # -- one message ---------------------------------------------------------------
    def process(self, job: Job) -> Generator[Effect, Any, None]:
        """Invoke the handler and settle by the policy, or hand the message back unstarted."""
        d, message = job.delivery, job.delivery.message
        try:
            # Its lease has been kept alive since the claim (_hold); one that ran
            # out anyway (the process was frozen or starved past it) may be
            # someone else's now: never started, like a message gone.
            if job.gone is None and d.lease_expires <= self.broker.clock.time():
                job.gone = "lease lost"
                job.invocation.stop_work(job.gone)
            yield Invoke(job.invocation)
            # The handler is over (or given up on): no more heartbeats, so a
            # hung handler's lease runs out even if its thread never returns.
            self.heartbeats.remove(job)
            inv = job.invocation
            if self.abandoned:
                if inv.started:
                    log.warning(
                        "handler of message %s in queue %r ended after the worker stopped; "
                        "not settled, the message comes back when its lease expires",
                        message.id,
                        message.queue,
                    )
                return
            if job.gone is not None:
                self._discard(job)
                return
            # From here on the store's lease guards the key until the release or
            # settlement commits; the local guard is only for a message gone.
            self._keys.let_go(job)
            if not inv.started:
                try:
                    yield Call(d.release)
                except PmsqError as exc:
                    log.warning("could not hand back message %s: %s", message.id, exc)
                else:
                    self.hooks("on_release", message)
                return
            error = inv.error
            if error is None and not inv.returned:
                # Never an ack for a handler that did not return (a driver bug
                # would otherwise lose the message).
                error = HandlerAbandoned("the handler did not return")
            outcome = d.outcome_for(error)
            self.hooks("after_process", message, outcome, error, inv.duration_ms)
            # The handler is done, so its slot is free while the settlement commits:
            # the next claim overlaps this commit, and concurrent settlements share
            # one transaction (group commit). Until it commits the message is
            # still leased in the store, so its key stays blocked and a crash
            # now only brings it back (at-least-once).
            self._free_slot(job, settling=True)
            settle_error: PmsqError | None = None
            try:
                yield Settle(d, outcome, inv.duration_ms)
            except PmsqError as exc:
                settle_error = exc
            if isinstance(settle_error, LeaseLost) and discarded_at_settle(
                self.broker.backend, job
            ):
                return  # cancelled meanwhile: discarded (logged), nothing was applied
            self.hooks("on_settle", message, outcome, settle_error)
        finally:
            self.heartbeats.remove(job)
            self._finished(job)

    def message_gone(self, job: Job) -> None:
        """A heartbeat found ``job``'s lease gone: see :func:`pmsq.worker.gone.notice_gone`."""
        notice_gone(self.broker.backend, job)

    def _discard(self, job: Job) -> None:
        """Log (and tell the hooks) that ``job``'s outcome is not settled: its message is gone."""
        inv = job.invocation
        log_discarded(job)
        if inv.started:
            # The handler did end: hooks that opened something for it (a span)
            # close it. on_settle is not called: nothing was applied.
            outcome = job.delivery.outcome_for(inv.error)
            self.hooks("after_process", job.delivery.message, outcome, inv.error, inv.duration_ms)

    def run_in_process(self, inv: Invocation) -> None:
        """Run a process-isolated handler (blocking, in a thread of the driver)."""
        assert self.processes is not None
        inv.run_in_process(self.processes)

    @staticmethod
    def internal_error(job: Job) -> None:
        """Log a bug that ended ``job``'s lifecycle early (from an ``except`` block)."""
        log.exception(
            "internal error handling message %s; it comes back when its lease expires",
            job.delivery.message.id,
        )

    # -- settlement batching ---------------------------------------------------------
    def park(self, gen: Generator[Effect, Any, Any], effect: Effect) -> bool:
        """The drivers' ``park`` for :func:`drive`: keep a ``Settle`` for :meth:`commit_parked`.

        The caller tells the dispatcher (:meth:`post_news`) once it is free.
        """
        return self.park_noting(gen, effect)[0]

    def park_noting(self, gen: Generator[Effect, Any, Any], effect: Effect) -> tuple[bool, bool]:
        """:meth:`park`, also saying whether this is the first settlement parked since a commit.

        Only the first needs to wake the dispatcher: the others are
        committed with it, so their drivers skip the wake-up.
        """
        if not isinstance(effect, Settle):
            return False, False
        with self._parked_lock:
            first = not self._parked
            self._parked.append((gen, effect))
        return True, first

    def commit_parked(self) -> bool:
        """Commit every parked settlement in one call, then resume their lifecycles.

        Blocking (a ``Call`` of the dispatcher). Returns whether anything was parked.
        """
        with self._parked_lock:
            batch, self._parked = self._parked, []
        if not batch:
            return False
        try:
            errors = self.settle_many([effect for _, effect in batch])
        except Exception as exc:  # a bug, not a store error: each message's lifecycle reports it
            log.exception(
                "settling %d message(s) failed; they come back when their leases expire",
                len(batch),
            )
            errors = [exc] * len(batch)  # type: ignore[list-item]
        for (gen, effect), error in zip(batch, errors, strict=True):
            try:
                # After its Settle a lifecycle only runs hooks and bookkeeping.
                drive(gen, _no_more_effects, error=error)
            except Exception:
                log.exception(
                    "internal error handling message %s; it comes back when its lease expires",
                    effect.delivery.message.id,
                )
        return True

    @staticmethod
    def settle_many(effects: Sequence[Settle]) -> list[PmsqError | None]:
        """Commit several ``Settle`` effects together; per effect, its error or ``None``.

        The driver throws each error into (or sends ``None`` to) the
        generator that yielded the effect.
        """
        return settle_many([(e.delivery, e.outcome, e.duration_ms) for e in effects])


def _perform_call(effect: Effect) -> Any:
    """Perform a ``Call`` at once (the caller is already where blocking I/O belongs)."""
    assert isinstance(effect, Call)
    return effect.fn()


def _no_more_effects(effect: Effect) -> Any:
    raise RuntimeError(f"a lifecycle yielded {effect!r} after its settlement")
