"""One writer per run directory: an exclusive ``flock`` on ``RUN_DIR/lock`` held for as long as a head uses it.

The kernel drops the lock when its process dies (kill -9 included), so a lock left by a dead head is simply
free again; the file keeps the last holder's host, PID and start time, to name it when another head is refused.
On NFS, ``flock`` is emulated with byte-range (POSIX) locks by Linux clients since 2.6.12, which the server
arbitrates across machines; see docs/run-directory.md.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

__all__ = ["RunDirLocked", "RunLock"]


class RunDirLocked(RuntimeError):
    """Another live process holds the run directory."""


class RunLock:
    """``RunLock.acquire(run_dir)`` takes the lock or raises :class:`RunDirLocked` naming the holder."""

    FILE = "lock"

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        path = Path(run_dir) / cls.FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:  # another user's run: lock it read-only (flock needs no write access), so
            fd = os.open(path, os.O_RDONLY)  # what this user may not write is named by the journal's check
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise RunDirLocked(f"{run_dir} is in use by another evovae head ({holder}); wait for it to end or "
                               "stop it, then try again") from None
        except OSError:
            os.close(fd)
            raise
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, info, 0)
        except OSError:
            pass  # a read-only lock file or a full disk: the lock holds all the same, only its holder is unnamed
        return cls(path, fd)

    def release(self) -> None:
        """Drop the lock (the file stays: removing it could let two heads lock two different files)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"host {info['host']}, PID {info['pid']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
