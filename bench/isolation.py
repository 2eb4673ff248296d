"""Isolation: a payments queue's latency while an analytics burst runs, one store vs two.

Usage: ``python bench/isolation.py [--burst 8] [--baseline 4] [--no-postgres] [--write]``

Three layouts of the same two queues (``payments``, ``analytics.events``):

- one file: both in ``pms.db``;
- two files: ``pmsq.connect("pms.db", routes={"analytics.#": "analytics.db"})``;
- SQLite + PostgreSQL: ``routes={"payments.#": "postgresql://..."}`` (a
  throwaway cluster on loopback, fsync on), analytics in ``pms.db``.

In each, a producer puts one payment every 10 ms (recording how long ``put``
took) and a worker process handles payments (recording put-to-handler
time). First alone (baseline), then while an analytics burst runs: two
processes of four threads putting analytics events one at a time as fast as
they can, and a worker process consuming them. Every store uses
``durability="full"``. Prints percentiles; ``--write`` puts them into the
"Several stores" section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import multiprocessing as mp
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pmsq

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN, END = "<!-- isolation:begin -->", "<!-- isolation:end -->"
PAYMENT_EVERY = 0.01
BURST_PROCESSES, BURST_THREADS = 2, 4

Layout = tuple[str, dict[str, str] | None]


def _connect(layout: Layout) -> pmsq.Broker:
    url, routes = layout
    return pmsq.connect(url, routes=routes, durability="full")


def _burst(layout: Layout, ready: Any, go: Any, stop: Any, counts: Any) -> None:
    with _connect(layout) as b:
        q = b.queue("analytics.events")
        made = [0] * BURST_THREADS
        ready.set()
        go.wait()

        def put(i: int) -> None:
            while not stop.is_set():
                q.put({"event": "page_view", "n": made[i]})
                made[i] += 1

        threads = [threading.Thread(target=put, args=(i,)) for i in range(BURST_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        counts.put(sum(made))


def _worker(layout: Layout, queue: str, ready: Any, stop: Any, out: Any) -> None:
    waits: list[float] = []
    with _connect(layout) as b:

        @b.handler(queue)
        def handle(msg: pmsq.Message) -> None:
            if queue == "payments":
                waits.append(time.time() - msg.payload["t"])

        with pmsq.Worker(b, concurrency=4):
            ready.set()
            stop.wait()
            time.sleep(1.0)  # the last payments still arrive
    out.put(waits)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    qs = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": qs[49] * 1e3, "p95": qs[94] * 1e3, "p99": qs[98] * 1e3, "max": max(values) * 1e3}


def _phase(layout: Layout, seconds: float, burst: bool) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out, counts = ctx.Queue(), ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    plan: list[tuple[Any, tuple[Any, ...]]] = [(_worker, (layout, "payments"))]
    if burst:
        plan.append((_worker, (layout, "analytics.events")))
        plan += [(_burst, (layout,))] * BURST_PROCESSES
    children, readies = [], []
    for target, head in plan:
        ready = ctx.Event()
        extra = (ready, go, stop, counts) if target is _burst else (ready, stop, out)
        children.append(ctx.Process(target=target, args=(*head, *extra)))
        readies.append(ready)
    for c in children:
        c.start()
    for ready in readies:  # every child connected (and its worker started) before timing
        if not ready.wait(120):
            raise RuntimeError("a benchmark process did not start")
    go.set()
    if burst:
        time.sleep(0.5)  # the burst is under way before the first payment
    start_at = time.time()
    stop_at = start_at + seconds
    put_times: list[float] = []
    with _connect(layout) as b:
        q = b.queue("payments")
        next_at = start_at
        while time.time() < stop_at:
            t0 = time.time()
            q.put({"t": t0, "amount": 100})
            put_times.append(time.time() - t0)
            next_at += PAYMENT_EVERY
            time.sleep(max(0.0, next_at - time.time()))
    stop.set()
    results = [out.get(timeout=120) for _ in range(2 if burst else 1)]
    burst_count = sum(counts.get(timeout=120) for _ in range(BURST_PROCESSES)) if burst else 0
    for c in children:
        c.join(timeout=30)
    waits = max(results, key=len)  # the analytics worker reports an empty list
    return {
        "put": _percentiles(put_times),
        "e2e": _percentiles(waits),
        "payments": len(put_times),
        "handled": len(waits),
        "burst_per_s": burst_count / (seconds + 0.5),
    }


def _layouts(tmp: Path, pg_url: str | None) -> dict[str, Layout]:
    out: dict[str, Layout] = {
        "one file": (str(tmp / "one" / "pms.db"), None),
        "two files": (
            str(tmp / "two" / "pms.db"),
            {"analytics.#": str(tmp / "two" / "analytics.db")},
        ),
    }
    if pg_url is not None:
        out["SQLite + PostgreSQL"] = (str(tmp / "pg" / "pms.db"), {"payments.#": pg_url})
    for url, _ in out.values():
        Path(url).parent.mkdir(parents=True, exist_ok=True)
    return out


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table(rows: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [
        "| layout | phase | put p50 / p95 / p99 (ms) | put → handler p50 / p95 / p99 (ms) "
        "| payments | analytics puts/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, phases in rows.items():
        for phase, r in phases.items():
            put, e2e = r["put"], r["e2e"]
            lines.append(
                f"| {name} | {phase} | {put['p50']:.1f} / {put['p95']:.1f} / {put['p99']:.1f} "
                f"| {e2e['p50']:.1f} / {e2e['p95']:.1f} / {e2e['p99']:.1f} "
                f"| {r['handled']}/{r['payments']} "
                f"| {r['burst_per_s']:,.0f} |"
            )
    return "\n".join(lines)


def _write(table: str, argv: list[str]) -> None:
    section = (
        f"{BEGIN}\n## Several stores: isolation of a payments queue\n\n"
        f"`python bench/isolation.py {' '.join(argv)}` on {dt.date.today().isoformat()}, "
        "2 cores shared with other jobs: one payment every 10 ms (put latency, and put → "
        "handler time in a worker process) alone, then during an analytics burst of "
        f"{BURST_PROCESSES} processes x {BURST_THREADS} threads putting one event at a time "
        'plus a worker consuming them. `durability="full"` everywhere; PostgreSQL with '
        "fsync on, on loopback.\n\n"
        f"{table}\n\nOne run; other jobs shared the machine, so compare the rows of one run. "
        "`payments` is handled/put: fewer puts than planned means the producer fell behind.\n"
        f"{END}"
    )
    text = RESULTS.read_text()
    if BEGIN in text:
        text = re.sub(
            re.escape(BEGIN) + ".*?" + re.escape(END), lambda _m: section, text, flags=re.S
        )
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=float, default=8.0, help="seconds of burst")
    parser.add_argument("--baseline", type=float, default=4.0, help="seconds alone")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pmsq-isolation-"))
    server: Any = None
    pg_url = None
    try:
        if not args.no_postgres:
            pg = _load(ROOT / "plugins/pmsq-postgres/tests/pgserver.py")
            bindir = pg.find_bindir()
            if bindir is None:
                sys.exit("PostgreSQL binaries not found (apt-get install -y postgresql)")
            server = pg.PgServer(bindir, durable=True)
            server.start()
            pg_url = f"{server.url}?schema=isolation&pool_min=1"
        rows: dict[str, dict[str, dict[str, Any]]] = {}
        for name, layout in _layouts(tmp, pg_url).items():
            rows[name] = {
                "alone": _phase(layout, args.baseline, burst=False),
                "during burst": _phase(layout, args.burst, burst=True),
            }
            print(_table({name: rows[name]}).splitlines()[-2:], flush=True)
        table = _table(rows)
        print(table)
        if args.write:
            _write(table, sys.argv[1:] if argv is None else argv)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
