"""What the message journal costs: pmsq end to end with ``history`` on and off.

Usage: ``python bench/history_cost.py [--repeat 3] [--quick]``. Runs the
``e2e_drain`` (a backlog drained by a thread Worker, concurrency 8) and
``e2e_4x4`` (4 producer threads putting one message at a time while the
Worker drains) scenarios of ``bench/run.py`` with durability "full", each in
a fresh subprocess on a fresh file, alternating ``history`` on (the default,
three days) and ``history=None``, and prints the medians and their ratio,
how many journal rows each acked message left (``put`` rows included), and
the process's CPU time per message while the Worker runs (the drain alone;
in ``e2e_4x4`` the producers' puts too): on a shared machine the rates swing
with the neighbours' load, CPU time much less. The ``backend`` scenario
drives the SQLite backend alone, without a Worker or fsyncs
(``durability="normal"``): ``put_many(100)``, then ``claim(8)`` and a
settle of the 8 acks until the queue is empty, and reports CPU time per
message of each (``time.process_time``), where the journal's own cost is
measured most precisely.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SCENARIOS = ("e2e_drain", "e2e_4x4", "backend")
BACKEND_N = 20_000


def one(mode: str, scenario: str, path: str, quick: bool) -> dict[str, float]:
    import run

    import pmsq

    history = None if mode == "off" else pmsq.broker.DEFAULT_HISTORY
    if scenario == "backend":
        out = _backend(pmsq.connect(path, durability="normal", history=history), quick)
        return {**out, **_rows_per_ack(path)}
    run._pmsq = lambda p: lambda: pmsq.connect(p, durability="full", history=history)
    size = run.SIZES["quick" if quick else "full"]
    messages = size["e2e"] if scenario == "e2e_drain" else size["e2e"] // 2 // 4 * 4
    cpu: dict[str, float] = {}

    class Timed(pmsq.Worker):
        """The scenarios' Worker, noting the process's CPU time while it runs."""

        def __enter__(self) -> Timed:
            cpu["start"] = _cpu()
            super().__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            super().__exit__(*exc)  # type: ignore[arg-type]
            cpu["end"] = _cpu()

    pmsq.Worker = Timed  # type: ignore[misc]
    out = {"rate": float(run.measure("pmsq", scenario, size, path)["rate"])}
    out["cpu_us"] = (cpu["end"] - cpu["start"]) / messages * 1e6
    return {**out, **_rows_per_ack(path)}


def _backend(broker: Any, quick: bool) -> dict[str, float]:
    from pmsq.backends.types import Settlement

    n = BACKEND_N // 4 if quick else BACKEND_N
    with broker as b:
        q = b.declare_queue("bench")
        start = time.process_time()
        for s in range(0, n, 100):
            q.put_many([{"i": i} for i in range(s, s + 100)])
        put_us = (time.process_time() - start) / n * 1e6
        backend, now, done = b.backend, time.time(), 0
        start, wall = time.process_time(), time.perf_counter()
        while got := backend.claim("bench", 8, now=now, consumer="bench"):
            acks = [Settlement(receipt=c.receipt, action="ack", duration_ms=0.1) for c in got]
            backend.settle(acks, now=now)
            done += len(got)
        cpu_us = (time.process_time() - start) / done * 1e6
        rate = done / (time.perf_counter() - wall)
    return {"rate": rate, "cpu_us": cpu_us, "put_cpu_us": put_us}


def _rows_per_ack(path: str) -> dict[str, float]:
    conn = sqlite3.connect(path)
    try:
        rows, acked = conn.execute(
            "SELECT COUNT(*), SUM(event = 'acked') FROM pmsq_journal"
        ).fetchone()
    finally:
        conn.close()
    return {"rows_per_ack": rows / acked} if acked else {}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    ap.add_argument("--one", nargs=3, metavar=("MODE", "SCENARIO", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.quick)))
        return 0
    results: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    put_cpu: dict[str, list[float]] = {}
    per_ack: dict[str, float] = {}
    scenarios = [s for s in SCENARIOS if s in args.only.split(",")]
    for _ in range(args.repeat):
        for scenario in scenarios:
            for mode in ("on", "off"):
                with tempfile.TemporaryDirectory() as tmp:
                    cmd = [
                        sys.executable,
                        __file__,
                        "--one",
                        mode,
                        scenario,
                        os.path.join(tmp, "q.db"),
                    ]
                    if args.quick:
                        cmd.append("--quick")
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                    got = json.loads(out.stdout.strip().splitlines()[-1])
                    rate = got["rate"]
                    results.setdefault((scenario, mode), []).append(rate)
                    cpu.setdefault((scenario, mode), []).append(got["cpu_us"])
                    if "put_cpu_us" in got:
                        put_cpu.setdefault(mode, []).append(got["put_cpu_us"])
                    if "rows_per_ack" in got:
                        per_ack[scenario] = got["rows_per_ack"]
                    print(
                        f"{scenario} history {mode}: {rate:,.0f} msg/s, "
                        f"{got['cpu_us']:.1f} us CPU/msg",
                        flush=True,
                    )
    print()
    for scenario in scenarios:
        on = statistics.median(results[(scenario, "on")])
        off = statistics.median(results[(scenario, "off")])
        cpu_on = statistics.median(cpu[(scenario, "on")])
        cpu_off = statistics.median(cpu[(scenario, "off")])
        print(
            f"{scenario}: median history on {on:,.0f} msg/s, off {off:,.0f} msg/s, "
            f"on/off = {on / off:.1%} (runs: {len(results[(scenario, 'on')])} each); "
            f"journal rows per acked message: {per_ack.get(scenario, 0):.2f}; "
            f"CPU per message on {cpu_on:.0f} us, off {cpu_off:.0f} us, "
            f"on/off = {cpu_on / cpu_off:.1%} (+{cpu_on - cpu_off:.1f} us)"
        )
    if put_cpu:
        on, off = (statistics.median(put_cpu[m]) for m in ("on", "off"))
        print(f"backend put_many(100): CPU per message on {on:.1f} us, off {off:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
