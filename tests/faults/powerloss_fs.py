"""A FUSE file system that forgets every write not yet fsynced when the power is cut.

Run as ``python powerloss_fs.py MOUNTPOINT OUTDIR``; it serves a flat
directory held in memory. Each file keeps two images: what readers see now,
and what its last ``fsync``/``fdatasync`` made durable. Creating ``.powercut``
in the mount (``os.mkdir(MOUNT / ".powercut")``) is the power cut: the
durable image of every file is written to ``OUTDIR`` (``-shm`` files are
skipped: shared memory does not survive a reboot) and every later operation
fails with ``EIO``, so nothing written after the cut can become durable.

The model is the one SQLite's durability reasoning assumes: data written and
not synced may be lost whole (here it always is); metadata (creating or
deleting a file) is durable at once, which only makes the disk kinder than a
real one in ways SQLite does not rely on for committed data.

:class:`PowerLossMount` starts one in a child process for a test, cuts the
power and unmounts; :func:`missing_prerequisite` says what this machine lacks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

CUT = ".powercut"


def missing_prerequisite() -> str | None:
    """What stops a FUSE mount here (None: nothing), with the package that brings it."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE support in this kernel or container)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 not found: install the Debian package fuse3"
    try:
        import mfusepy  # noqa: F401
    except ImportError:
        return "the Python FUSE binding mfusepy is not installed (pip install mfusepy)"
    except OSError as exc:  # the binding found no libfuse
        return f"mfusepy cannot load libfuse ({exc}): install the Debian package fuse3"
    return None


def _serve(mount: str, out: str) -> None:
    import mfusepy as fuse

    class _File:
        def __init__(self, mode: int) -> None:
            self.data = bytearray()
            self.durable = b""
            self.mode = mode
            self.mtime = time.time_ns()

    class PowerLossFS(fuse.Operations):  # type: ignore[misc]
        use_ns = True

        def __init__(self) -> None:
            self.files: dict[str, _File] = {}
            self._mutex = threading.Lock()
            self.cut = False
            self.fh = 0

        def _alive(self) -> None:
            if self.cut:
                raise fuse.FuseOSError(errno.EIO)

        def _file(self, path: str) -> _File:
            self._alive()
            try:
                return self.files[path]
            except KeyError:
                raise fuse.FuseOSError(errno.ENOENT) from None

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            with self._mutex:
                if path == "/" or (path == "/" + CUT and self.cut):
                    return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
                f = self._file(path)
                return {
                    "st_mode": stat.S_IFREG | f.mode,
                    "st_nlink": 1,
                    "st_size": len(f.data),
                    "st_mtime": f.mtime,
                    "st_ctime": f.mtime,
                    "st_atime": f.mtime,
                }

        def readdir(self, path: str, fh: int) -> list[str]:
            with self._mutex:
                self._alive()
                return [".", "..", *(p[1:] for p in self.files)]

        def mkdir(self, path: str, mode: int) -> int:
            if path != "/" + CUT:
                raise fuse.FuseOSError(errno.EPERM)
            with self._mutex:
                self._alive()
                self.cut = True
                for name, f in self.files.items():
                    if not name.endswith("-shm"):
                        Path(out, name[1:]).write_bytes(f.durable)
                Path(out, CUT).write_text("cut\n")
            return 0

        def create(self, path: str, mode: int, flags: int = 0) -> int:
            with self._mutex:
                self._alive()
                self.files.setdefault(path, _File(stat.S_IMODE(mode)))
                self.fh += 1
                return self.fh

        def open(self, path: str, flags: int) -> int:
            with self._mutex:
                self._file(path)
                self.fh += 1
                return self.fh

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            with self._mutex:
                return bytes(self._file(path).data[offset : offset + size])

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            with self._mutex:
                f = self._file(path)
                if offset > len(f.data):
                    f.data.extend(bytes(offset - len(f.data)))
                f.data[offset : offset + len(data)] = data
                f.mtime = time.time_ns()
                return len(data)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            with self._mutex:
                f = self._file(path)
                if length < len(f.data):
                    del f.data[length:]
                else:
                    f.data.extend(bytes(length - len(f.data)))
                return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            with self._mutex:
                f = self._file(path)
                f.durable = bytes(f.data)
                return 0

        def unlink(self, path: str) -> int:
            with self._mutex:
                self._file(path)
                del self.files[path]
                return 0

        def chmod(self, path: str, mode: int) -> int:
            with self._mutex:
                self._file(path).mode = stat.S_IMODE(mode)
                return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 20, "f_bfree": 1 << 19}

    fuse.FUSE(PowerLossFS(), mount, foreground=True, nothreads=True)


class PowerLossMount:
    """A power-loss file system mounted at ``root/mnt`` for the duration of a ``with``.

    After :meth:`cut`, ``root/survived`` holds what a machine would find on
    its disk after the power came back.
    """

    def __init__(self, root: Path) -> None:
        self.mount = root / "mnt"
        self.survived = root / "survived"
        self._log = root / "powerloss_fs.stderr"
        self._proc: Any = None

    def __enter__(self) -> PowerLossMount:
        self.mount.mkdir()
        self.survived.mkdir()
        with self._log.open("wb") as err:
            self._proc = subprocess.Popen(
                [sys.executable, __file__, str(self.mount), str(self.survived)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mount):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"the FUSE mount did not come up: {self._log.read_text()}")
            time.sleep(0.02)
        return self

    def cut(self) -> None:
        """Cut the power: from now on the mount fails every operation."""
        os.mkdir(self.mount / CUT)
        assert (self.survived / CUT).exists()

    def _stop(self) -> None:
        subprocess.run(
            ["fusermount3", "-u", "-z", str(self.mount)],
            check=False,
            capture_output=True,
        )
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()  # our own child, by its PID
                self._proc.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
