"""The backend plugins measured with the same probes as SQLite, on throwaway servers.

Usage: ``python bench/plugins.py [--repeat 3] [--quick] [--systems postgresql,rabbitmq]``
(also run by ``nox -s bench``). It starts a PostgreSQL cluster (fsync on,
``synchronous_commit`` on: durable like SQLite's "full") and a RabbitMQ node
(quorum queues, publisher confirms) on loopback from the Debian packages,
runs each probe of ``pmsq.benchmark`` on a fresh schema or prefix, prints
the medians next to SQLite's from the same run, writes them into the
"Backend plugins" section of ``bench/RESULTS.md``, and stops the servers.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pmsq
from pmsq import benchmark

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN, END = "<!-- plugins:begin -->", "<!-- plugins:end -->"

SIZES = {
    "full": {"put1": 1000, "put16": 4000, "put_many100": 10_000, "get_ack": 1000, "e2e": 5000},
    "quick": {"put1": 200, "put16": 800, "put_many100": 2000, "get_ack": 200, "e2e": 1000},
}
PROBES: dict[str, tuple[str, Callable[[Callable[[], pmsq.Broker], int], float]]] = {
    "put1": ("single put, 1 thread (msg/s)", benchmark.put_single),
    "put16": ("single puts, 16 threads (msg/s)", lambda c, n: benchmark.put_parallel(c, n, 16)),
    "put_many100": ("put_many, batches of 100 (msg/s)", benchmark.put_many),
    "get_ack": ("get + ack one at a time (msg/s)", benchmark.get_ack),
    "e2e": ("end to end, Worker(8), no-op handler (msg/s)", benchmark.end_to_end),
    "latency": ("put → handler latency p50 (ms)", lambda c, n: 0.0),
}


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def _fresh_url(system: str, base: str) -> str:
    tag = f"b{uuid.uuid4().hex[:10]}"
    if system == "postgresql":
        return f"{base}?schema={tag}"
    if system == "rabbitmq":
        return f"{base}?prefix={tag}"
    return str(Path(base) / f"{tag}.db")


def _measure(system: str, base: str, probe: str, n: int) -> float:
    connect = (lambda url: lambda: pmsq.connect(url))(_fresh_url(system, base))
    if probe == "latency":
        return benchmark.median(benchmark.latency(connect, 100))
    return PROBES[probe][1](connect, n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--systems", default="postgresql,rabbitmq")
    # ``nox -s bench -- ARGS`` hands the same arguments to bench/run.py, whose
    # other options (--only, --output) mean nothing here.
    args, _ = parser.parse_known_args(argv)
    sizes = SIZES["quick" if args.quick else "full"]
    systems = ["sqlite", *[s for s in args.systems.split(",") if s]]

    servers: list[Any] = []
    bases: dict[str, str] = {"sqlite": tempfile.mkdtemp(prefix="pmsq-bench-")}
    try:
        if "postgresql" in systems:
            pg = _load(ROOT / "plugins/pmsq-postgres/tests/pgserver.py")
            bindir = pg.find_bindir()
            if bindir is None:
                sys.exit("PostgreSQL binaries not found: apt-get install -y postgresql")
            server = pg.PgServer(bindir, durable=True)
            servers.append(server)
            server.start()
            bases["postgresql"] = server.url
        if "rabbitmq" in systems:
            rq = _load(ROOT / "plugins/pmsq-rabbitmq/tests/rabbitmq_node.py")
            scripts = rq.find_scripts()
            if scripts is None:
                sys.exit("rabbitmq-server not found: apt-get install -y rabbitmq-server")
            node = rq.RabbitNode(scripts, Path(tempfile.mkdtemp(prefix="pmsq-bench-rmq-")))
            servers.append(node)
            node.start()
            bases["rabbitmq"] = node.url

        table: dict[tuple[str, str], float] = {}
        for probe in PROBES:
            for system in systems:
                runs = []
                for _ in range(args.repeat):
                    try:
                        runs.append(_measure(system, bases[system], probe, sizes.get(probe, 0)))
                    except pmsq.PmsqError as exc:
                        print(f"  {probe:12} {system:10} failed: {exc}", flush=True)
                        break
                table[(probe, system)] = benchmark.median(runs)
                print(f"  {probe:12} {system:10} {[round(r, 2) for r in runs]}", flush=True)
    finally:
        for s in reversed(servers):
            s.stop()

    lines = [
        BEGIN,
        "## Backend plugins",
        "",
        f"`python bench/plugins.py --repeat {args.repeat}{' --quick' if args.quick else ''}` "
        f"on {time.strftime('%Y-%m-%d')}: the same probes through the same pmsq API, "
        "PostgreSQL with fsync and synchronous_commit on, RabbitMQ with quorum queues "
        "and publisher confirms, each server on loopback on this machine. Medians.",
        "",
        "| measure | " + " | ".join(systems) + " |",
        "|---|" + "---:|" * len(systems),
    ]
    for probe, (label, _) in PROBES.items():
        cells = []
        for system in systems:
            v = table.get((probe, system), float("nan"))
            cells.append("-" if v != v else (f"{v:.2f}" if probe == "latency" else f"{v:,.0f}"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(END)
    section = "\n".join(lines)
    print(section)
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
