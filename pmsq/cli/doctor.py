"""``pmsq doctor URL``: check a store and say what to do about each problem."""

from __future__ import annotations

import argparse
import os
import shutil

import attrs

from pmsq.backends.families import Settings
from pmsq.backends.routed.routes import parse_routes
from pmsq.cli._common import CommandError, add_url, probe_sqlite, routes_of, sqlite_path
from pmsq.errors import PmsqError

EXAMPLES = """\
Checks: the file opens as a pmsq store, PRAGMA quick_check, the schema
version, each queue's dead letters and alerts, the WAL size, the free disk
space against the store's size, a -wal/-shm deleted under a running process
(split brain), and a network file system. Exit 0 when healthy (warnings
allowed), 1 when a problem needs action. Read-only apart from opening the
store.

examples:
  pmsq doctor /var/lib/pms/pms.db
  pmsq doctor sqlite:///pms.db && echo healthy
"""

_WAL_WARN_BYTES = 256 * 1024 * 1024
_FREE_WARN_BYTES = 512 * 1024 * 1024
# Less than this free and the next checkpoint or transaction may fail already.
_FULL_BYTES = 256 * 1024


@attrs.frozen
class Finding:
    """One line of the report: ``ok``, ``warning`` or ``problem``, and what to do."""

    level: str
    text: str
    advice: str = ""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``doctor`` subcommand."""
    p = sub.add_parser(
        "doctor",
        help="check a store (integrity, schema, dead letters, WAL) and say what to do",
        description="Check a store's health and print what to do about each finding.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    p.set_defaults(func=run)


def _free_bytes(path: str) -> int:
    return shutil.disk_usage(os.path.dirname(os.path.abspath(path)) or ".").free


def _file_findings(path: str, detached: list[tuple[int, str]], mounts: str) -> list[Finding]:
    from pmsq.backends.sqlite import files

    out = []
    size = os.path.getsize(path)
    wal = os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
    out.append(Finding("ok", f"store file {size:,} bytes, WAL {wal:,} bytes"))
    if detached:
        pids = ", ".join(sorted({str(pid) for pid, _ in detached}))
        out.append(
            Finding(
                "problem",
                f"the store's -wal/-shm were deleted or replaced while process(es) {pids} "
                "had them open: those processes write to files nobody else sees "
                "(split brain; their commits will be lost)",
                f"stop process(es) {pids} now (their last commits are in the deleted WAL "
                "and are lost when they exit), then check the store with pmsq doctor; "
                "never delete -wal/-shm files of a store in use",
            )
        )
    fs_type = files.file_system_type(path, mounts=mounts)
    if fs_type in files.NETWORK_FS:
        out.append(
            Finding(
                "warning",
                f"the store is on a network file system ({fs_type})",
                "SQLite's locks and WAL shared memory do not work across machines there: "
                "use a local disk (and pmsq backup to copy the store elsewhere)",
            )
        )
    if wal > _WAL_WARN_BYTES:
        out.append(
            Finding(
                "warning",
                f"the WAL is large ({wal:,} bytes)",
                "a long-lived reader (a stuck process, an open sqlite3 shell) keeps SQLite "
                "from checkpointing; find and close it, the WAL then shrinks on its own",
            )
        )
    free = _free_bytes(path)
    if free < size + wal:
        out.append(
            Finding(
                "problem" if free < _FULL_BYTES else "warning",
                f"the disk is too small for the store: {free:,} bytes free for a store of "
                f"{size + wal:,} bytes (file and WAL)",
                "a backlog as large again, a checkpoint or a backup beside it would not fit "
                "and writes, acks included, would fail: give the store a larger disk, or "
                "free space on this one",
            )
        )
    elif free < _FREE_WARN_BYTES:
        out.append(
            Finding(
                "warning",
                f"only {free:,} bytes free on the store's disk",
                "free space: when the disk fills, puts fail with a StorageError",
            )
        )
    return out


def examine(url: str, *, proc: str = "/proc", mounts: str = "/proc/mounts") -> list[Finding]:
    """Every finding about the store at ``url``, in report order (never raises PmsqError).

    Args:
        url: The store.
        proc: Where to look for the processes that have the store open.
        mounts: The mount table that tells a network file system.
    """
    import pmsq
    from pmsq.alerts import evaluate, load_rules
    from pmsq.backends.sqlite.schema import SCHEMA_VERSION

    findings: list[Finding] = []
    path = sqlite_path(url)
    if path is not None:
        from pmsq.backends.sqlite.files import detached_sidecars

        # Before anything opens the file: even a read-only connection would
        # start a new WAL beside the one the live processes lost.
        detached = detached_sidecars(path, proc=proc) if path != ":memory:" else []
        if detached and os.path.isfile(path):
            return _file_findings(path, detached, mounts)
        try:
            probe_sqlite(path)
        except CommandError as exc:
            return [Finding("problem", str(exc), "check the path your app passes to connect()")]
        findings += _file_findings(path, detached, mounts)
    try:
        broker = pmsq.connect(url)
    except PmsqError as exc:
        # The StorageError already names the file and the way out (restore a backup...).
        return [*findings, Finding("problem", "the store cannot be opened", str(exc))]
    with broker:
        try:
            problems = broker.backend.check()
        except PmsqError as exc:
            problems = [str(exc)]
        if problems:
            findings.append(
                Finding(
                    "problem",
                    "integrity check failed: " + "; ".join(problems[:5]),
                    "stop the workers, restore the latest backup (pmsq backup makes one; "
                    "see docs/operations.md), and check the disk",
                )
            )
        else:
            findings.append(Finding("ok", "integrity check (quick_check) passed"))
        try:
            version = Settings.of(broker.backend).get_meta("schema_version")
        except PmsqError:
            version = None
        if version is not None:
            findings.append(
                Finding("ok", f"schema version {version} (this pmsq reads up to {SCHEMA_VERSION})")
            )
        try:
            snap = broker.stats()
            rules = load_rules(broker.backend, snap.queues)
        except PmsqError as exc:
            findings.append(Finding("problem", "cannot read the queues", str(exc)))
            return findings
        total = sum(q.depth for q in snap.queues.values())
        findings.append(
            Finding("ok", f"{len(snap.queues)} queues, {total:,} messages waiting or in flight")
        )
        for name, qs in sorted(snap.queues.items()):
            if qs.dead:
                findings.append(
                    Finding(
                        "warning",
                        f"{name}: {qs.dead} dead letter{'s' if qs.dead != 1 else ''}",
                        f"inspect with pmsq dlq list {url} {name}, fix the cause, then "
                        f"pmsq dlq redrive (or purge) {url} {name}",
                    )
                )
        for alert in evaluate(snap, rules):
            if alert.metric == "dead":
                continue  # reported above, with what to do
            findings.append(
                Finding(
                    "warning",
                    alert.message,
                    "are workers running for this queue? watch it with pmsq monitor " + url,
                )
            )
    return findings


def run(args: argparse.Namespace) -> int:
    """Print the findings; exit 1 if any is a problem."""
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    # With routes, each store is examined on its own: they are separate databases.
    urls = parse_routes(args.url, routes_of(args)).urls
    findings: list[Finding] = []
    marks = {"ok": ("✓", "green"), "warning": ("!", "yellow"), "problem": ("✗", "bold red")}
    for url in urls:
        if len(urls) > 1:
            console.print(Text(f"store {url}", style="bold"))
        found = examine(url)
        findings += found
        for f in found:
            mark, style = marks[f.level]
            console.print(Text(f"{mark} {f.text}", style=style))
            if f.advice:
                console.print(f"    → {f.advice}")
    bad = sum(f.level == "problem" for f in findings)
    warn = sum(f.level == "warning" for f in findings)
    if bad:
        console.print(Text(f"unhealthy: {bad} problem{'s' if bad != 1 else ''}", style="bold red"))
        return 1
    console.print(
        Text(
            "healthy" + (f", {warn} warning{'s' if warn != 1 else ''}" if warn else ""),
            style="green",
        )
    )
    return 0
