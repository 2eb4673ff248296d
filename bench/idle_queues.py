"""What an idle Worker costs, by the number of queues it serves (issue 15).

For each queue count: declare that many queues with a handler each, start a
thread ``Worker`` on a SQLite file, let it idle and read the CPU time of the
whole process (``resource.getrusage``, every thread) over the window; then
put a few messages from the same process and time how long each takes to
reach its handler.

    python bench/idle_queues.py                       # 100, 1,000, 10,000 queues, 10 s each
    python bench/idle_queues.py --queues 1000 --seconds 5

Runs against whatever ``pmsq`` is importable, so the same script measures an
older checkout: ``PYTHONPATH=/path/to/old/checkout python bench/idle_queues.py``.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import pmsq


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(queues: int, seconds: float, puts: int = 5) -> dict[str, float]:
    """CPU share of one core while idle, and put-to-handler latencies, for ``queues`` queues."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = pmsq.connect(str(Path(tmp) / "idle.db"), durability="normal")
        arrived: dict[str, float] = {}
        landed = threading.Condition()

        def handle(message: pmsq.Message) -> None:
            with landed:
                arrived[message.id] = time.perf_counter()
                landed.notify_all()

        names = [f"q{i:05d}" for i in range(queues)]
        for name in names:
            broker.handler(name)(handle)
        worker = pmsq.Worker(broker, concurrency=4)
        worker.start()
        try:
            time.sleep(min(2.0, seconds / 2))  # first rounds, caches, threads settle
            cpu, wall = _cpu(), time.monotonic()
            time.sleep(seconds)
            share = (_cpu() - cpu) / (time.monotonic() - wall)
            latencies = []
            for name in random.Random(1).sample(names, min(puts, queues)):
                sent = time.perf_counter()
                mid = broker.queue(name).put({"at": sent})
                with landed:
                    landed.wait_for(lambda mid=mid: mid in arrived, timeout=30.0)
                latencies.append(arrived.get(mid, float("inf")) - sent)
                time.sleep(0.2)
        finally:
            worker.stop()
            broker.close()
    return {
        "cpu_share": share,
        "latency_median_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"pmsq from {Path(pmsq.__file__).parent}")
    print(f"{'queues':>7}  {'idle CPU':>9}  {'put→handler median':>19}  {'max':>8}")
    for n in args.queues:
        r = measure(n, args.seconds)
        print(
            f"{n:>7,}  {r['cpu_share']:>8.1%}  {r['latency_median_s'] * 1000:>16.1f} ms"
            f"  {r['latency_max_s'] * 1000:>5.1f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
