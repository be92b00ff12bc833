"""The run directory of a paper experiment, and what it keeps across the runs of the command.

``RUN_DIR/experiment.json`` holds the configuration (written once, read by ``--resume``; with own data its
path, fingerprint, columns, image size and likelihood, so a resume re-checks the data);
``results.sqlite`` the result cache every search and retraining task shares; ``progress.json`` the wall
and CPU time and the transport counters of the runs so far (a run killed by SIGKILL loses what it spent
since its last finished step); ``searches/``, ``tasks/`` and ``models/`` what the phases leave behind;
``results.json`` and ``report.md`` (with the PNGs) the outcome. ``lock``: held by the process that has the run
open (one experiment at a time in a run directory, as one head per search: evo.head.lock).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..head.cache import ResultCache
from ..head.lock import RunDirLocked, RunLock
from .presets import ExperimentConfig

__all__ = ["PaperRun", "RunDirError", "cpu_seconds"]

FORMAT = "evovae-paper-run"
VERSION = 1
CONFIG = "experiment.json"
PROGRESS = "progress.json"
#: what an experiment writes into its run directory (all that --force removes; the PNGs too)
OWN = (CONFIG, PROGRESS, "results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "results.json", "report.md",
       "searches", "tasks", "models")


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (one line; nothing was changed)."""


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (workers, retraining processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _lock(path: Path) -> RunLock:
    """``path`` locked for this process: RunDirError (one line) while another one has it open."""
    try:
        return RunLock.acquire(path)
    except RunDirLocked as exc:
        raise RunDirError(str(exc)) from None
    except OSError as exc:
        raise RunDirError(f"cannot lock {path / RunLock.FILE}: {exc.strerror or exc}") from None


def _write_json(path: Path, data: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


class PaperRun:
    """One experiment's run directory, opened by this process (use :meth:`create` or :meth:`open`)."""

    def __init__(self, path: Path, config: ExperimentConfig, lock: RunLock) -> None:
        self.path = path
        self.config = config
        self._lock = lock
        progress = path / PROGRESS
        self._progress: dict[str, Any] = json.loads(progress.read_text()) if progress.is_file() else {}
        self._progress["runs"] = self._progress.get("runs", 0) + 1
        self._started = time.perf_counter()
        self._cpu_at_start = cpu_seconds()
        self.cache = ResultCache(path / "results.sqlite")
        self._save()

    @classmethod
    def create(cls, path: str | Path, config: ExperimentConfig, *, force: bool = False) -> PaperRun:
        """A new experiment in ``path``; ``force`` first removes what an earlier experiment wrote there.
        RunDirError while another process has an experiment open in ``path`` (nothing of it is touched)."""
        path = Path(path)
        if not force:
            cls._refuse_used(path)  # before anything is made in someone's directory
        path.mkdir(parents=True, exist_ok=True)
        lock = _lock(path)
        try:
            if force:
                for name in OWN:
                    target = path / name
                    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
                for png in path.glob("*.png"):
                    png.unlink()
            else:
                cls._refuse_used(path)  # again, under the lock: another may have started meanwhile
            _write_json(path / CONFIG, {"format": FORMAT, "version": VERSION, "config": config.to_dict()})
            return cls(path, config, lock)
        except BaseException:
            lock.release()
            raise

    @staticmethod
    def _refuse_used(path: Path) -> None:
        """RunDirError if ``path`` holds an experiment or a report already."""
        if (path / CONFIG).is_file():
            raise RunDirError(f"{path} holds an experiment already: continue it with --resume {path}, "
                              "or pass --force to start it over")
        if (path / "results.json").exists():
            raise RunDirError(f"{path} already holds a report; pick another --out or pass --force")

    @classmethod
    def open(cls, path: str | Path) -> PaperRun:
        """The experiment in ``path``, to continue it with the settings it was started with. RunDirError while
        another process has it open."""
        config = cls.read_config(path)  # read-only: a directory that holds no experiment is refused unchanged
        lock = _lock(Path(path))
        try:
            return cls(Path(path), config, lock)
        except BaseException:
            lock.release()
            raise

    @staticmethod
    def read_config(path: str | Path) -> ExperimentConfig:
        """The configuration of the experiment in ``path``, read without opening the run (so its data can be
        checked before anything in it changes). RunDirError (one line) when there is none to read."""
        path = Path(path)
        try:
            data = json.loads((path / CONFIG).read_text())
        except FileNotFoundError:
            raise RunDirError(f"{path} is not the run directory of a paper experiment (no {CONFIG} in it)") from None
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{path / CONFIG} is unreadable ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise RunDirError(f"{path / CONFIG} is not a paper experiment of format {FORMAT} version {VERSION}")
        try:
            config = ExperimentConfig.from_dict(data["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RunDirError(f"{path / CONFIG}: the stored configuration is unusable ({exc})") from None
        return config

    # -- what the runs spent ------------------------------------------------------------------
    def _save(self) -> None:
        _write_json(self.path / PROGRESS, self._progress)

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Add the wall time of the block to ``key`` (saved at once, also when the block raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self._progress[key] = self._progress.get(key, 0.0) + time.perf_counter() - started
            self._save()

    def add_transport(self, stats: dict[str, Any]) -> None:
        """Add one cluster's counters (:meth:`Cluster.stats`) to those of the runs so far."""
        broker = self._progress.setdefault("broker", {})
        for key, value in stats["broker"].items():
            broker[key] = broker.get(key, 0) + value
        self._progress["worker_restarts"] = self._progress.get("worker_restarts", 0) + stats["worker_restarts"]
        self._save()

    def transport(self) -> dict[str, Any]:
        return {"broker": dict(self._progress.get("broker", {})),
                "worker_restarts": self._progress.get("worker_restarts", 0)}

    def timings(self) -> dict[str, Any]:
        """Wall time per phase, in total and CPU time, over every run of the command so far (this one too)."""
        p = self._progress
        return {"searches_s": p.get("searches_s", 0.0), "retrain_s": p.get("retrain_s", 0.0),
                "figures_s": p.get("figures_s", 0.0),
                "total_s": p.get("total_s", 0.0) + time.perf_counter() - self._started,
                "cpu_s": p.get("cpu_s", 0.0) + cpu_seconds() - self._cpu_at_start, "runs": p["runs"]}

    def write_results(self, results: dict[str, Any], report: str) -> None:
        _write_json(self.path / "results.json", results)
        (self.path / "report.md").write_text(report)

    def close(self) -> None:
        """Record this run's wall and CPU time (for the next run's totals) and close the cache."""
        now = self.timings()
        self._progress["total_s"], self._progress["cpu_s"] = now["total_s"], now["cpu_s"]
        self._started, self._cpu_at_start = time.perf_counter(), cpu_seconds()
        try:
            self._save()
        except OSError:
            pass  # a full disk (said where the run stopped): the next run's totals miss this one's time
        finally:
            self.cache.close()
            self._lock.release()

    def __enter__(self) -> PaperRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
