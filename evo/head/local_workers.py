"""Worker processes on this machine, started and looked after by the head.

For a one-command run (``evovae search --local-workers N``): each worker is a
real ``python -m evo.cli worker`` process talking ZeroMQ to the head, exactly as a
worker on another node would. A worker that dies is restarted (at most once a
second per slot), as systemd's Restart=on-failure does on a GPU node - except
one that exits with status 2: it cannot serve the run (its data, its options)
and said why, and a restart would only say it again (see ``unfit``).

With ``output``, the head reads what each worker writes to its stderr (its log
lines) and hands every line to ``output(slot, line)`` - the command keeps them in
the run directory and shows them on its terminal (evo.cmdline.log_setup.WorkerLines);
without it, the workers write to the head's stderr themselves.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO

import structlog

from transport.endpoints import local_endpoint

__all__ = ["LocalWorkers", "die_with_parent"]

log = structlog.get_logger(__name__)


def die_with_parent() -> None:
    """In a child process (before exec, or first thing in a multiprocessing child): on Linux, get SIGTERM
    when the parent dies (even by SIGKILL), so no child outlives the head; elsewhere they notice nothing
    and are stopped by their parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalWorkers:
    """``count`` worker processes connected to ``ventilator`` and ``sink``."""

    def __init__(self, count: int, ventilator: str, sink: str, extra_args: Sequence[str] = (),
                 threads_each: int = 1, restart_interval_s: float = 1.0,
                 output: Callable[[int, str], None] | None = None) -> None:
        if count < 0:
            raise ValueError(f"local worker count must be >= 0, got {count}")
        self.count = count
        self.restarts = 0
        self.unfit: set[int] = set()  # slots whose worker exited 2 (not restarted)
        self._command = [sys.executable, "-m", "evo.cli", "worker", "--connect", local_endpoint(ventilator),
                         "--sink", local_endpoint(sink), "--threads", str(threads_each), *extra_args]
        self._procs: list[subprocess.Popen | None] = [None] * count
        self._started_at = [0.0] * count
        self._interval = restart_interval_s
        self._output = output
        self._readers: list[threading.Thread] = []

    def _spawn(self, slot: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": self._command[self._command.index("--threads") + 1]}
        command = [*self._command, "--worker-id", f"local{slot}-{os.getpid()}-{self.restarts}"]
        piped = self._output is not None
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
                                stderr=subprocess.PIPE if piped else None)
        if piped and proc.stderr is not None:
            self._readers = [t for t in self._readers if t.is_alive()]
            reader = threading.Thread(target=self._read, args=(slot, proc.stderr), daemon=True,
                                      name=f"local-worker-{slot}-stderr")
            reader.start()
            self._readers.append(reader)
        self._procs[slot] = proc
        self._started_at[slot] = time.monotonic()
        log.info("local_worker.started", slot=slot, pid=proc.pid)

    def start(self) -> LocalWorkers:
        self.unfit.clear()
        for slot in range(self.count):
            self._spawn(slot)
        return self

    def check(self) -> None:
        """Restart the workers that exited (call it from the head's loop)."""
        for slot, proc in enumerate(self._procs):
            if proc is None or proc.poll() is None:
                continue
            if proc.returncode == 2:  # unfit for this run (it said why): restarting it would only repeat that
                if slot not in self.unfit:
                    self.unfit.add(slot)
                    log.error("local_worker.unfit", slot=slot, pid=proc.pid, returncode=proc.returncode)
                continue
            if time.monotonic() - self._started_at[slot] < self._interval:
                continue
            log.warning("local_worker.exited", slot=slot, pid=proc.pid, returncode=proc.returncode)
            self.restarts += 1
            self._spawn(slot)

    def _read(self, slot: int, pipe: IO[bytes]) -> None:
        """Hand each line the worker in ``slot`` writes to ``output`` until it closes its stderr (it exited)."""
        assert self._output is not None
        with pipe:
            for raw in iter(pipe.readline, b""):
                try:
                    self._output(slot, raw.decode("utf-8", errors="replace"))
                except Exception:  # a line that cannot be shown must not stop the reading: the worker
                    continue       # would block on a full pipe

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None and p.poll() is None]

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM every worker, wait up to ``timeout_s``, then SIGKILL what is left."""
        alive = [p for p in self._procs if p is not None and p.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in alive:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                log.warning("local_worker.killed", pid=proc.pid)
        self._procs = [None] * self.count
        for reader in self._readers:  # the workers' last lines (they exited: their pipes end)
            reader.join(timeout_s)
        self._readers = []

    def __enter__(self) -> LocalWorkers:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
