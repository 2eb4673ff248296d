"""A throwaway PostgreSQL server for the tests: initdb, start, stop, remove.

Uses the Debian binaries (``/usr/lib/postgresql/<version>/bin``). ``initdb``
and ``pg_ctl`` refuse to run as root, so when the tests run as root they are
run as the ``postgres`` user (``runuser``) on a temp dir that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PgServer", "drop_schema", "find_bindir"]


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL ``bin`` directory holding ``initdb``, if any."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        on_path = shutil.which("initdb")
        return Path(on_path).parent if on_path else None

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.parent.name)
        except ValueError:
            return 0.0

    return Path(max(found, key=version)).parent


def drop_schema(url: str, schema: str) -> None:
    """Remove one test's store (a schema) from the server at ``url``."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temp dir, listening on 127.0.0.1 only.

    Args:
        bindir: Directory with ``initdb``, ``pg_ctl`` and ``postgres``.
        durable: Keep fsync on (the default turns it off: tests check
            semantics, not the disk, and fsync=off makes them much faster).
    """

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable
        self.port = 0
        self.root = Path(tempfile.mkdtemp(prefix="pmsq-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            # initdb and pg_ctl refuse root: run them as the postgres user.
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise RuntimeError(
                    "running as root needs a 'postgres' user to own the server"
                ) from exc
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        os.chmod(self.root, 0o755)

    def _run(self, *args: str, timeout: float = 120.0) -> None:
        subprocess.run(
            [*self._as, *args],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """initdb (trust auth, user ``postgres``) and start; return once it accepts connections."""
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        settings = [
            "-c listen_addresses=127.0.0.1",
            f"-k {self.root}",
            "-c max_connections=300",
            "-c shared_buffers=64MB",
        ]
        if not self.durable:
            settings += ["-c fsync=off", "-c full_page_writes=off", "-c synchronous_commit=off"]
        for _ in range(5):  # the port may be taken between picking and binding it
            self.port = _free_port()
            try:
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    " ".join([f"-p {self.port}", *settings]),
                    "start",
                )
                return
            except subprocess.CalledProcessError:
                continue
        raise RuntimeError(f"PostgreSQL did not start; see {self.log}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the server (pg_ctl stop, then its PID if that failed) and remove its files."""
        try:
            if (self.data / "postmaster.pid").exists():
                try:
                    self._run(
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-m",
                        "fast",
                        "-w",
                        "stop",
                    )
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                    pid = self._pid()
                    if pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGQUIT)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
