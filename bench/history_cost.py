"""What the message journal costs: pmsq end to end with ``history`` on and off.

Usage: ``python bench/history_cost.py [--repeat 3] [--quick]``. Runs the
``e2e_drain`` (a backlog drained by a thread Worker, concurrency 8) and
``e2e_4x4`` (4 producer threads putting one message at a time while the
Worker drains) scenarios of ``bench/run.py`` with durability "full", each in
a fresh subprocess on a fresh file, alternating ``history`` on (the default,
three days) and ``history=None``, and prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SCENARIOS = ("e2e_drain", "e2e_4x4")


def one(mode: str, scenario: str, path: str, quick: bool) -> float:
    import run

    import pmsq

    history = None if mode == "off" else pmsq.broker.DEFAULT_HISTORY
    run._pmsq = lambda p: lambda: pmsq.connect(p, durability="full", history=history)
    size = run.SIZES["quick" if quick else "full"]
    return float(run.measure("pmsq", scenario, size, path)["rate"])


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
                    rate = json.loads(out.stdout.strip().splitlines()[-1])
                    results.setdefault((scenario, mode), []).append(rate)
                    print(f"{scenario} history {mode}: {rate:,.0f} msg/s", flush=True)
    print()
    for scenario in scenarios:
        on = statistics.median(results[(scenario, "on")])
        off = statistics.median(results[(scenario, "off")])
        print(
            f"{scenario}: median history on {on:,.0f} msg/s, off {off:,.0f} msg/s, "
            f"on/off = {on / off:.1%} (runs: {len(results[(scenario, 'on')])} each)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
