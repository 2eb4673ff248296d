"""pmsq against persist-queue, huey and litequeue, measured in one run.

Usage: ``python bench/run.py [--repeat 3] [--quick] [--only NAME,...]`` (or
``nox -s bench``). Every measurement runs in a fresh subprocess on a fresh
file (durability "full" / synchronous=FULL for everyone), is repeated, and
the median is reported. The table of medians and ratios is printed and
written to ``bench/RESULTS.md`` with the machine, versions and command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402

import pmsq  # noqa: E402
from pmsq import benchmark  # noqa: E402

SIZES = {
    "full": {"n": 3000, "backlog": 200_000, "e2e": 20_000, "mem": 1_000_000},
    "quick": {"n": 1000, "backlog": 20_000, "e2e": 5_000, "mem": 100_000},
}


def _pmsq(path: str) -> Callable[[], pmsq.Broker]:
    return lambda: pmsq.connect(path, durability="full")


def _peer(name: str) -> type:
    return {p.name: p for p in peers.PEERS}[name]


def _fill_pmsq(path: str, total: int, key: str | None = None) -> None:
    # Filling is not what is measured: use the fastest safe way.
    with pmsq.connect(path, durability="normal") as b:
        q = b.queue("bench")
        for start in range(0, total, 1000):
            q.put_many(
                [pmsq.NewMessage({"i": i}, key=key) for i in range(start, min(total, start + 1000))]
            )


def _threads(count: int, fn: Callable[[int], None]) -> float:
    pool = [threading.Thread(target=fn, args=(i,)) for i in range(count)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start


# -- one measurement, in a subprocess ---------------------------------------------
def measure(system: str, scenario: str, size: dict[str, int], path: str) -> dict[str, Any]:
    n = size["n"]
    if system == "pmsq":
        c = _pmsq(path)
        if scenario == "put1":
            return {"rate": benchmark.put_single(c, n)}
        if scenario == "put16":
            return {"rate": benchmark.put_parallel(c, n * 4, 16)}
        if scenario == "put_many100":
            return {"rate": benchmark.put_many(c, n * 20, 100)}
        if scenario == "get_ack":
            return {"rate": benchmark.get_ack(c, n)}
        if scenario in ("get_ack_1k", "get_ack_200k"):
            backlog = 1000 if scenario == "get_ack_1k" else size["backlog"]
            _fill_pmsq(path, backlog + n)
            return {"rate": _drain_pmsq(c, n)}
        if scenario == "e2e_drain":
            return {"rate": benchmark.end_to_end(c, size["e2e"], concurrency=8)}
        if scenario == "e2e_4x4":
            return {"rate": _e2e_pmsq_producers(c, size["e2e"] // 2)}
        if scenario in ("keys_plain", "keys_hot"):
            if scenario == "keys_hot":
                _fill_pmsq(path, size["backlog"] // 2, key="hot")
            return {"rate": _other_keys(c, n)}
        if scenario == "latency":
            lat = benchmark.latency(c, 300)
            return {"p50_ms": statistics.median(lat), "p95_ms": sorted(lat)[int(len(lat) * 0.95)]}
        if scenario in ("mem_small", "mem_big"):
            total = 1000 if scenario == "mem_small" else size["mem"]
            # Filled by a child process, so the peak RSS measured is the worker's alone.
            pid = os.fork()
            if pid == 0:
                try:
                    _fill_pmsq(path, total)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            return {"rss_mb": _worker_rss(c, min(5000, total))}
    else:
        P = _peer(system)
        if scenario == "put1":
            q = P(path)
            start = time.perf_counter()
            for i in range(n):
                q.put({"i": i})
            return {"rate": n / (time.perf_counter() - start)}
        if scenario == "put16":
            per = n * 4 // 16
            shared = P(path)

            def put(_: int) -> None:
                for i in range(per):
                    shared.put({"i": i})

            return {"rate": per * 16 / _threads(16, put)}
        if scenario == "get_ack":
            q = P(path)
            for i in range(n):
                q.put({"i": i})
            start = time.perf_counter()
            got = 0
            while q.get_ack() is not None:
                got += 1
            return {"rate": got / (time.perf_counter() - start)}
        if scenario == "e2e_4x4":
            return {"rate": _e2e_peer(P, path, size["e2e"] // 2)}
    return {"skip": True}


def _drain_pmsq(c: Callable[[], pmsq.Broker], n: int) -> float:
    with c() as b:
        q = b.queue("bench")
        start = time.perf_counter()
        for _ in range(n):
            q.get(timeout=5).ack()
        return n / (time.perf_counter() - start)


def _other_keys(c: Callable[[], pmsq.Broker], n: int) -> float:
    with c() as b:
        q = b.queue("bench")
        for start in range(0, n, 500):
            q.put_many(
                [pmsq.NewMessage({"i": i}, key=f"k{i % 50}") for i in range(start, start + 500)]
            )
        held: list[pmsq.Delivery] = []
        start = time.perf_counter()
        done = 0
        while done < n:
            d = q.get(timeout=5)
            if d.message.key == "hot":
                # The hot key's head stays in flight (a slow handler), so the
                # 100,000 behind it wait; the other keys must flow as fast as without.
                d.extend(3600)
                held.append(d)
                continue
            d.ack()
            done += 1
        return n / (time.perf_counter() - start)


def _e2e_pmsq_producers(c: Callable[[], pmsq.Broker], n: int) -> float:
    with c() as b:
        count = [0]
        lock = threading.Lock()
        finished = threading.Event()
        total = (n // 4) * 4

        @b.handler("bench")
        def handle(_: pmsq.Message) -> None:
            with lock:
                count[0] += 1
                if count[0] >= total:
                    finished.set()

        q = b.queue("bench")
        start = time.perf_counter()
        with pmsq.Worker(b, concurrency=8):
            _threads(4, lambda _: [q.put({"i": i}) for i in range(n // 4)] and None)
            finished.wait(600)
        return count[0] / (time.perf_counter() - start)


def _e2e_peer(P: type, path: str, n: int) -> float:
    q = P(path)
    per = n // 4
    total = per * 4
    got = [0]
    lock = threading.Lock()

    def work(i: int) -> None:
        if i < 4:
            for j in range(per):
                q.put({"i": j})
            return
        while True:
            with lock:
                if got[0] >= total:
                    return
            if q.get_ack() is None:
                time.sleep(0.0005)
                continue
            with lock:
                got[0] += 1

    return total / _threads(8, work)


def _worker_rss(c: Callable[[], pmsq.Broker], n: int) -> float:
    with c() as b:
        count = [0]
        finished = threading.Event()

        @b.handler("bench")
        def handle(_: pmsq.Message) -> None:
            count[0] += 1
            if count[0] >= n:
                finished.set()

        with pmsq.Worker(b, concurrency=8):
            finished.wait(600)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the driver -----------------------------------------------------------------------
ROWS: list[tuple[str, str, str, str]] = [
    # (label, scenario, metric, compared with)
    ("single put, 1 thread (msg/s)", "put1", "rate", "persist-queue"),
    ("put from 16 threads (msg/s)", "put16", "rate", "persist-queue:put1"),
    ("put_many, batches of 100 (msg/s)", "put_many100", "rate", "persist-queue:put1"),
    ("get + ack one at a time (msg/s)", "get_ack", "rate", "persist-queue"),
    ("end to end, 4 producers + consumers (msg/s)", "e2e_4x4", "rate", "huey"),
    ("end to end, Worker(8) draining a backlog (msg/s)", "e2e_drain", "rate", "huey:e2e_4x4"),
    ("get + ack, 1,000 waiting (msg/s)", "get_ack_1k", "rate", ""),
    ("get + ack, 200,000 waiting (msg/s)", "get_ack_200k", "rate", "pmsq:get_ack_1k"),
    ("other keys, no hot key (msg/s)", "keys_plain", "rate", ""),
    ("other keys, 100,000 behind a hot key (msg/s)", "keys_hot", "rate", "pmsq:keys_plain"),
    ("put → handler latency p50 (ms)", "latency", "p50_ms", ""),
    ("put → handler latency p95 (ms)", "latency", "p95_ms", ""),
    ("worker peak RSS, 1,000 waiting (MB)", "mem_small", "rss_mb", ""),
    ("worker peak RSS, 1,000,000 waiting (MB)", "mem_big", "rss_mb", "pmsq:mem_small"),
]
SYSTEMS = ("pmsq", "persist-queue", "huey", "litequeue")


def run_one(system: str, scenario: str, quick: bool, timeout: float = 300) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "queue.db")
        cmd = [sys.executable, __file__, "--one", system, scenario, path]
        if quick:
            cmd.append("--quick")
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            # A peer that collapses (litequeue under a backlog) must not stall the run.
            return {"error": f"did not finish within {timeout:g} s"}
        if out.returncode != 0:
            return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--only", default="", help="comma-separated scenarios")
    ap.add_argument(
        "--one", nargs=3, metavar=("SYSTEM", "SCENARIO", "PATH"), help=argparse.SUPPRESS
    )
    ap.add_argument("--output", default=str(HERE / "RESULTS.md"))
    ap.add_argument(
        "--timeout", type=float, default=300, help="seconds one measurement may take (default 300)"
    )
    args = ap.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    if args.one:
        print(json.dumps(measure(*args.one[:2], size, args.one[2])))
        return 0
    only = set(filter(None, args.only.split(",")))
    scenarios = sorted({r[1] for r in ROWS if not only or r[1] in only})
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    for scenario in scenarios:
        for system in SYSTEMS:
            for _ in range(args.repeat):
                res = run_one(system, scenario, args.quick, args.timeout)
                if res.get("skip"):
                    break
                if "error" in res:
                    print(f"{system} {scenario}: {res['error']}", file=sys.stderr)
                    break
                for k, v in res.items():
                    results.setdefault((system, scenario), {}).setdefault(k, []).append(v)
            print(
                f"  {scenario:14} {system:14} {results.get((system, scenario), '-')}",
                file=sys.stderr,
            )
    write_report(results, args)
    return 0


def _median(
    results: dict[tuple[str, str], dict[str, list[float]]], system: str, scenario: str, metric: str
) -> float | None:
    vals = results.get((system, scenario), {}).get(metric)
    return statistics.median(vals) if vals else None


def write_report(
    results: dict[tuple[str, str], dict[str, list[float]]], args: argparse.Namespace
) -> None:
    def fmt(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:,.0f}" if v >= 100 else f"{v:,.2f}"

    lines = [
        "| measure | pmsq | persist-queue | huey | litequeue | pmsq ratio | vs |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, scenario, metric, versus in ROWS:
        if (("pmsq", scenario) not in results) and not any(
            (s, scenario) in results for s in SYSTEMS
        ):
            continue
        vals = [_median(results, s, scenario, metric) for s in SYSTEMS]
        ratio, vs_text = "", ""
        if versus and vals[0] is not None:
            sys_name, _, other = versus.partition(":")
            ref = _median(results, sys_name, other or scenario, metric)
            if ref:
                ratio = f"{vals[0] / ref:.2f}x"
                vs_text = f"{sys_name} {other or scenario}"
        lines.append(
            f"| {label} | " + " | ".join(fmt(v) for v in vals) + f" | {ratio} | {vs_text} |"
        )
    table = "\n".join(lines)
    print(table)
    versions = ", ".join(
        f"{p} {metadata.version(p)}" for p in ("pmsq", "persist-queue", "huey", "litequeue")
    )
    cpu = "unknown"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    command = "python bench/run.py " + " ".join(
        a for a in sys.argv[1:] if not a.startswith("--output")
    )
    # The plugins' section (bench/plugins.py) is kept when the peers' table is rewritten.
    kept = ""
    with contextlib.suppress(OSError):
        old = Path(args.output).read_text()
        if "<!-- plugins:begin -->" in old:
            kept = "\n" + old[old.index("<!-- plugins:begin -->") :].rstrip("\n") + "\n"
    Path(args.output).write_text(
        "# Benchmark results\n\n"
        f"Medians of {args.repeat} runs, each in a fresh process on a fresh file, all durable "
        '(pmsq durability="full"; peers with synchronous=FULL).\n\n'
        f"- machine: {platform.platform()}, {os.cpu_count()} cores, {cpu}\n"
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}\n"
        f"- versions: {versions}\n"
        f"- command: `{command.strip()}`{' (quick sizes)' if args.quick else ''}\n"
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
        f"{table}\n{kept}"
    )


if __name__ == "__main__":
    sys.exit(main())
