"""A throwaway RabbitMQ node for the tests: own data dir, loopback, free ports.

Started from the Debian package's scripts in ``/usr/lib/rabbitmq/bin`` (the
``/usr/sbin`` wrappers switch to the ``rabbitmq`` user and drop our
environment). Everything is configured through environment variables; the
node's epmd is started here too, so both can be stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RabbitNode", "find_scripts"]


def find_scripts() -> Path | None:
    """The directory holding ``rabbitmq-server`` and ``rabbitmqctl`` that run as the caller."""
    for candidate in (Path("/usr/lib/rabbitmq/bin"), Path("/usr/local/lib/rabbitmq/bin")):
        if (candidate / "rabbitmq-server").exists():
            return candidate
    found = shutil.which("rabbitmq-server")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_group_gone(pgid: int, timeout: float = 30.0) -> None:
    """Wait until every process of group ``pgid`` is gone (the VM outlives its launcher)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _wait_port_free(port: int, timeout: float = 30.0) -> None:
    """Wait until ``port`` can be bound: a crashed node's listener may take a moment to go."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            # Like the node's own listener: leftover TIME_WAIT connections do not count.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return
            except OSError:
                if time.monotonic() >= deadline:
                    raise
        time.sleep(0.1)


class RabbitNode:
    """One node: :meth:`start`, :meth:`stop`, :meth:`restart`; :attr:`url` to connect."""

    def __init__(self, scripts: Path, base: Path) -> None:
        self.scripts = scripts
        self.base = base
        self.port = _free_port()
        dist, epmd = _free_port(), _free_port()
        self.epmd_port = epmd
        (base / "rabbitmq.conf").write_text(
            # The port and address come from the environment; the default
            # consumer_timeout (30 min) stays, as users have it.
            "log.console = false\n"
        )
        self.env = {
            **os.environ,
            "HOME": str(base),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist),
            "ERL_EPMD_PORT": str(epmd),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": f"pmsqtest{self.port}@localhost",
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
        }
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self._server: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._log = open(base / "server.out", "ab")  # noqa: SIM115 - closed in stop()

    def _ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(self.scripts / "rabbitmqctl"), *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *, timeout: float = 90.0) -> None:
        """Start epmd (once) and the node; return when it accepts connections."""
        if self._epmd is None or self._epmd.poll() is not None:
            self._epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        if not (self.base / "enabled_plugins").exists():
            subprocess.run(
                [
                    str(self.scripts / "rabbitmq-plugins"),
                    "--offline",
                    "enable",
                    "rabbitmq_consistent_hash_exchange",
                ],
                env=self.env,
                capture_output=True,
                timeout=120,
                check=True,
            )
        _wait_port_free(self.port)
        self._server = subprocess.Popen(
            [str(self.scripts / "rabbitmq-server")],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        # await_startup exits at once while the node has not registered yet: retry.
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq-server exited with {self._server.returncode}; see "
                    f"{self.base / 'server.out'} and {self.base / 'log'}"
                )
            try:
                if self._ctl("await_startup", "--timeout", "10", timeout=30).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"RabbitMQ did not start within {timeout:g}s; see {self.base}")

    def stop(self) -> None:
        """Stop the node (``rabbitmqctl stop``, then SIGKILL to its process group)."""
        server, self._server = self._server, None
        if server is None:
            return
        if server.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self._ctl("stop", timeout=60)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=30)
        # Helpers the VM started in its session (erl_child_setup, inet_gethost).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        _wait_group_gone(server.pid)

    def crash(self) -> None:
        """Kill the node with SIGKILL (its whole process group), like a power cut of the VM."""
        server, self._server = self._server, None
        if server is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        _wait_group_gone(server.pid)

    def restart(self) -> None:
        """Stop and start the node on the same data directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the node and its epmd."""
        try:
            self.stop()
        finally:
            epmd, self._epmd = self._epmd, None
            if epmd is not None and epmd.poll() is None:
                epmd.terminate()
                try:
                    epmd.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    epmd.kill()
                    epmd.wait(timeout=10)
            self._log.close()
