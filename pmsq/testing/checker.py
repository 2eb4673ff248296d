"""A Jepsen-style checker for queue histories.

Producer and consumer processes append events to history files (one JSON
object per line, see :class:`History`); after the run, :func:`check` reads
them together with the final contents of the store and names every anomaly.

Events (``op`` field; every event has ``t`` = wall-clock seconds and ``proc``):

- ``put_invoke`` ``v`` (a value unique to this put attempt), ``key``,
  ``tenant``, ``dedup_id``; ``put_ok`` ``v``, ``id``; ``put_fail`` ``v``
  (definitely not stored); ``put_unknown`` ``v`` (outcome unknown: crash,
  ``OutcomeUnknown``).
- ``delivered`` ``id``, ``v``, ``attempt``, ``lease_expires``, optional
  ``scope`` (the tenant a scoped consumer asked for), ``tenant``, ``key``.
- ``process_start`` / ``process_done`` ``id``, ``attempt``.
- ``settle_invoke`` ``id``, ``attempt``, ``how`` (``ack``, ``retry``,
  ``dead``, ``release``): logged just *before* calling the settle verb, so
  it bounds the commit from below (an event logged after a call cannot).
- ``ack_ok`` / ``ack_rejected`` ``id``, ``attempt``. An ack invoked without
  either answer (its process was killed) may have committed: the message
  being gone then is not ``lost``.
- ``cancel_invoke`` ``ids``: logged just before ``Queue.cancel``;
  ``cancel_ok`` ``ids`` (those the cancel says it removed). A cancelled
  message is neither lost nor may it be delivered after its cancel returned,
  nor may any delivery's ack be accepted: a handler that had already
  started may finish, but its outcome must be discarded (``LeaseLost``). A
  cancel without an answer may have removed its messages.

Anomalies reported (``Anomaly.kind``): ``lost``, ``unexpected``,
``duplicate``, ``double_ack``, ``acked_unprocessed``, ``stale_ack_accepted``,
``delivered_after_ack`` (a delivery that began after an ack of the message
had returned), ``overlapping_leases``, ``order``, ``bad_dead_letter``,
``tenant_leak``, ``stuck``; with cancellations ``delivered_after_cancel``,
``acked_after_cancel`` and ``uncancelled`` (still stored after a cancel
said it removed it).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

__all__ = ["Anomaly", "FinalState", "History", "check", "read_histories"]


class History:
    """Appends events to a JSONL file, fsynced per event so a SIGKILL loses nothing written.

    Args:
        path: The file to append to (one per process).
        proc: This process's name in the events.
    """

    def __init__(self, path: str | os.PathLike[str], proc: str) -> None:
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        self._proc = proc
        self._lock = threading.Lock()

    def log(self, op: str, **fields: Any) -> None:
        """Append one event (``t`` and ``proc`` are added)."""
        line = json.dumps({"t": time.time(), "proc": self._proc, "op": op, **fields})
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


def read_histories(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """All events of several files, sorted by time. A torn last line (killed writer) is skipped."""
    events: list[dict[str, Any]] = []
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    events.sort(key=lambda e: e["t"])
    return events


@attrs.frozen
class FinalState:
    """What the store holds after the run.

    Attributes:
        waiting: Message id -> ``v`` of messages still waiting or in flight.
        dead: Message id -> ``(v, attempts, reason)`` of dead letters.
    """

    waiting: Mapping[str, Any] = attrs.field(factory=dict)
    dead: Mapping[str, tuple[Any, int, str]] = attrs.field(factory=dict)


@attrs.frozen
class Anomaly:
    """One violation: its kind, the message concerned and a human explanation."""

    kind: str
    message_id: str | None
    detail: str


def check(
    events: list[dict[str, Any]],
    final: FinalState,
    *,
    max_attempts: int,
    expect_drained: bool = True,
    clock_skew: float = 0.05,
) -> list[Anomaly]:
    """Return every anomaly in a history (empty list = valid).

    Args:
        events: Events from :func:`read_histories`, sorted by time.
        final: The store's final contents.
        max_attempts: The queue's ``max_attempts`` (dead letters with fewer
            attempts must have been rejected explicitly).
        expect_drained: Whether the run ended by draining the queue
            (anything left waiting is then ``stuck``).
        clock_skew: Seconds of slack when comparing times from different processes.
    """
    out: list[Anomaly] = []
    invoked: dict[Any, dict[str, Any]] = {}
    put_ok: dict[Any, dict[str, Any]] = {}
    failed: set[Any] = set()
    id_of_v: dict[Any, str] = {}
    v_of_id: dict[str, Any] = {}
    deliveries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    started: set[tuple[str, int, str]] = set()
    done: set[tuple[str, int, str]] = set()
    acks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    settles: dict[str, list[dict[str, Any]]] = defaultdict(list)
    dedup_ids: dict[Any, set[str]] = defaultdict(set)
    answered: set[tuple[str, Any, str]] = set()
    cancel_tried: set[str] = set()
    cancelled: dict[str, float] = {}

    for e in events:
        op = e["op"]
        if op == "put_invoke":
            invoked[e["v"]] = e
        elif op == "put_fail":
            failed.add(e["v"])
        elif op == "put_ok":
            put_ok[e["v"]] = e
            id_of_v[e["v"]] = e["id"]
            v_of_id.setdefault(e["id"], e["v"])
            dd = invoked.get(e["v"], {}).get("dedup_id")
            if dd is not None:
                dedup_ids[dd].add(e["id"])
        elif op == "delivered":
            deliveries[e["id"]].append(e)
            v_of_id.setdefault(e["id"], e.get("v"))
            if e.get("v") not in invoked or e.get("v") in failed:
                out.append(
                    Anomaly("unexpected", e["id"], f"delivered value {e.get('v')!r} was never put")
                )
            scope = e.get("scope")
            if scope is not None and e.get("tenant") != scope:
                out.append(
                    Anomaly(
                        "tenant_leak",
                        e["id"],
                        f"consumer scoped to {scope!r} received a message of {e.get('tenant')!r}",
                    )
                )
        elif op == "process_start":
            started.add((e["id"], e["attempt"], e["proc"]))
        elif op == "process_done":
            done.add((e["id"], e["attempt"], e["proc"]))
        elif op == "settle_invoke":
            settles[e["id"]].append(e)
        elif op == "ack_ok":
            acks[e["id"]].append(e)
            answered.add((e["id"], e.get("attempt"), e["proc"]))
        elif op == "ack_rejected":
            answered.add((e["id"], e.get("attempt"), e["proc"]))
        elif op == "cancel_invoke":
            cancel_tried.update(e["ids"])
        elif op == "cancel_ok":
            for mid in e["ids"]:
                cancelled.setdefault(mid, e["t"])

    # Dedup: one dedup id, one stored message, however often the put was retried.
    for dd, ids in dedup_ids.items():
        if len(ids) > 1:
            out.append(
                Anomaly("duplicate", sorted(ids)[0], f"dedup_id {dd!r} stored as {sorted(ids)}")
            )

    for mid, ack_list in acks.items():
        if len(ack_list) > 1:
            out.append(Anomaly("double_ack", mid, f"acked {len(ack_list)} times"))
        for a in ack_list:
            if (mid, a["attempt"], a["proc"]) not in done:
                out.append(
                    Anomaly(
                        "acked_unprocessed",
                        mid,
                        f"attempt {a['attempt']} acked before processing finished",
                    )
                )
            # An ack deletes the message, so a later-numbered delivery either began
            # before the ack was invoked (the ack used a stale token) or after it
            # committed (the ack did not delete). Between invoke and return, a
            # delivery inside the acked lease cannot be the stale case.
            held = [
                d
                for d in deliveries[mid]
                if d["attempt"] == a["attempt"] and d["proc"] == a["proc"]
            ]
            lease_end = min((d["lease_expires"] for d in held), default=float("inf"))
            invoked_at = max(
                (
                    x["t"]
                    for x in settles.get(mid, [])
                    if x["attempt"] == a["attempt"]
                    and x["proc"] == a["proc"]
                    and x.get("how") == "ack"
                    and x["t"] <= a["t"]
                ),
                default=a["t"],
            )
            for d in deliveries[mid]:
                if d["attempt"] <= a["attempt"]:
                    continue
                after = d["t"] > a["t"] + clock_skew or (
                    d["t"] >= invoked_at and d["t"] < lease_end - clock_skew
                )
                if after:
                    out.append(
                        Anomaly(
                            "delivered_after_ack",
                            mid,
                            f"attempt {d['attempt']} delivered after attempt "
                            f"{a['attempt']} was acked",
                        )
                    )
                else:
                    out.append(
                        Anomaly(
                            "stale_ack_accepted",
                            mid,
                            f"ack of attempt {a['attempt']} accepted although attempt "
                            f"{d['attempt']} was delivered",
                        )
                    )
                break

    # Leases: a delivery may start only after the previous one's lease expired
    # or its holder began to settle it. Deliveries pair up in store order (each
    # claim numbers its attempt one higher; a release hands its number back,
    # and then the log time orders the two), not by log time: a holder stopped
    # between its claim and its log line logs late. A delivery's log time comes
    # after the store granted it, so comparing it with the previous lease never
    # blames the store for a claim that waited for the lock.
    for mid, ds in deliveries.items():
        ds.sort(key=lambda d: (d["attempt"], d["t"]))
        for prev, nxt in itertools.pairwise(ds):
            begun = [
                x["t"]
                for x in settles.get(mid, [])
                if x["attempt"] == prev["attempt"]
                and x["proc"] == prev["proc"]
                and x["t"] >= prev["t"]
            ]
            end = min([prev["lease_expires"], *begun])
            if nxt["t"] < end - clock_skew:
                out.append(
                    Anomaly(
                        "overlapping_leases",
                        mid,
                        f"attempt {nxt['attempt']} delivered while attempt {prev['attempt']} "
                        "held a live lease",
                    )
                )

    # Loss and leftovers.
    acked_ids = set(acks)
    # An ack invoked by a process killed before it logged the answer may have
    # committed: its message being gone is no loss.
    maybe_acked = {
        x["id"]
        for xs in settles.values()
        for x in xs
        if x.get("how") == "ack" and (x["id"], x.get("attempt"), x["proc"]) not in answered
    }
    for v, ok in put_ok.items():
        mid = ok["id"]
        if mid in acked_ids or mid in final.dead or mid in maybe_acked:
            continue
        if mid in cancel_tried and mid not in final.waiting:
            continue  # withdrawn (or, without an answer, maybe withdrawn): not lost
        if mid in final.waiting:
            if expect_drained:
                out.append(Anomaly("stuck", mid, "still in the store after the drain"))
            continue
        out.append(
            Anomaly("lost", mid, f"put of value {v!r} returned but the message is gone unacked")
        )
    for mid, (_, attempts, reason) in final.dead.items():
        if (
            attempts < max_attempts
            and "reject" not in reason.lower()
            and "checksum" not in reason.lower()
        ):
            out.append(
                Anomaly(
                    "bad_dead_letter",
                    mid,
                    f"dead after {attempts} < {max_attempts} attempts: {reason}",
                )
            )

    out.extend(_cancel_anomalies(cancelled, deliveries, acks, final, clock_skew))
    out.extend(_order_anomalies(invoked, put_ok, deliveries, acks, settles, final, clock_skew))
    return out


def _cancel_anomalies(
    cancelled: dict[str, float],
    deliveries: dict[str, list[dict[str, Any]]],
    acks: dict[str, list[dict[str, Any]]],
    final: FinalState,
    skew: float,
) -> list[Anomaly]:
    """A cancel that returned is final: no later delivery, no accepted ack, nothing left."""
    out: list[Anomaly] = []
    for mid, at in cancelled.items():
        late = [d for d in deliveries.get(mid, []) if d["t"] > at + skew]
        if late:
            out.append(
                Anomaly(
                    "delivered_after_cancel",
                    mid,
                    f"attempt {late[0]['attempt']} delivered after the cancel returned",
                )
            )
        # Before the cancel, an accepted ack would have left nothing to cancel;
        # after it, the holder's lease is gone: either way the two cannot both hold.
        if acks.get(mid):
            out.append(
                Anomaly(
                    "acked_after_cancel",
                    mid,
                    f"attempt {acks[mid][0]['attempt']} acked although the message was cancelled",
                )
            )
        if mid in final.waiting or mid in final.dead:
            out.append(Anomaly("uncancelled", mid, "still stored after its cancel returned"))
    return out


def _order_anomalies(
    invoked: dict[Any, dict[str, Any]],
    put_ok: dict[Any, dict[str, Any]],
    deliveries: dict[str, list[dict[str, Any]]],
    acks: dict[str, list[dict[str, Any]]],
    settles: dict[str, list[dict[str, Any]]],
    final: FinalState,
    skew: float,
) -> list[Anomaly]:
    """Per key: if A's put returned before B's put began, B is first delivered
    only after the holder of A's acked delivery began to ack it."""
    by_key: dict[tuple[Any, Any], list[tuple[float, float, str]]] = defaultdict(list)
    for v, ok in put_ok.items():
        inv = invoked.get(v)
        if inv is None or inv.get("key") is None:
            continue
        puts = by_key[(inv.get("tenant"), inv["key"])]
        # A put retried with its dedup id returns the first one's id: one message, one place.
        if all(mid != ok["id"] for _, _, mid in puts):
            puts.append((inv["t"], ok["t"], ok["id"]))
    out: list[Anomaly] = []
    for (tenant, key), puts in by_key.items():
        puts.sort()
        for i, (_, a_ok, a_id) in enumerate(puts):
            if a_id in final.waiting:
                # A was never settled, so nothing behind it may have been delivered.
                for b_inv, _, b_id in puts[i + 1 :]:
                    if b_inv > a_ok + skew and deliveries.get(b_id):
                        out.append(
                            Anomaly(
                                "order",
                                b_id,
                                f"key {key!r} (tenant {tenant!r}): delivered while earlier "
                                f"{a_id} still waits",
                            )
                        )
                continue
            if a_id in final.dead or not acks.get(a_id):
                continue  # dead letters free the key by policy
            acked = acks[a_id][0]
            began = [
                x["t"]
                for x in settles.get(a_id, [])
                if x["attempt"] == acked["attempt"]
                and x["proc"] == acked["proc"]
                and x.get("how") == "ack"
            ]
            a_settled = min(began, default=acked["t"])
            for b_inv, _, b_id in puts[i + 1 :]:
                if b_inv <= a_ok + skew:
                    continue  # concurrent puts: no order is promised between them
                first = min((d["t"] for d in deliveries.get(b_id, [])), default=None)
                if first is not None and first < a_settled - skew:
                    out.append(
                        Anomaly(
                            "order",
                            b_id,
                            f"key {key!r} (tenant {tenant!r}): delivered before earlier "
                            f"{a_id} was acked",
                        )
                    )
    return out
