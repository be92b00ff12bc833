"""The life of one search in its run directory (after Optuna's ``create_study`` / ``load_study``).

``SearchRun.create(run_dir, config)`` makes the run directory (refusing one in use or not empty) and its
journal; ``SearchRun.open(run_dir)`` opens a stopped one to resume it; ``SearchRun.named(run_dir, config)`` does
whichever applies (an experiment's named searches). Either way the run directory is locked for this process
(one writer: evo/head/lock.py), the strategy is built from the stored configuration, and ``replay()`` brings it
to the journal's last state before any evaluator exists, so a journal that does not replay is refused before a
socket is bound. ``run(evaluator, capacity)`` searches until the strategy is done; ``finish()`` writes
``result.json`` atomically. ``close()`` releases everything; a start refused before anything was evaluated
(``close(refused=True)``) removes what ``create`` made, so it leaves nothing behind.

``StrategyRun`` is the same life for a strategy the engine does not build (an experiment's peer arm, a
library's optimizer): ``StrategyRun.of(run_dir, stored, spec, build)`` journals ``stored`` as what defines it.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from ..search_config import SearchConfig
from ..spec import TrainSpec
from ..strategies import make_strategy
from ..strategy import Report, StopReason, Strategy
from .cache import ResultCache
from .journal import JournalError, RunJournal
from .lock import RunDirLocked, RunLock
from .progress import search_summary
from .runner import Observer, Runner
from .store import StorageError, writing
from .tasks import AsyncEvaluator

__all__ = ["OtherSettings", "RunDirLocked", "SearchRun", "StorageError", "StrategyRun", "default_run_dir"]

log = structlog.get_logger(__name__)

_Run = TypeVar("_Run", bound="StrategyRun")


class OtherSettings(JournalError):
    """The run directory holds a search started with other settings (left unchanged)."""


def default_run_dir(prefix: str = "search") -> Path:
    """``runs/PREFIX-TIME-PID``: a new run directory's default name."""
    return Path("runs") / time.strftime(f"{prefix}-%Y%m%dT%H%M%SZ-{os.getpid()}", time.gmtime())


class StrategyRun:
    """One search in its run directory, whatever built its strategy: the lock, journal, optional cache, the
    strategy and its runner; replay, run, result.json and closing. :class:`SearchRun` builds the strategy from
    the engine's options; :meth:`of` takes one built by the caller (an experiment's peer arm, a library's own
    optimizer) with what defines it."""

    def __init__(self, run_dir: Path, spec: TrainSpec, strategy: Strategy, journal: RunJournal, lock: RunLock, *,
                 cache: ResultCache | None, owns_cache: bool, made: list[Path]) -> None:
        self.run_dir = run_dir
        self.spec = spec
        self.journal = journal
        self.cache = cache
        self.strategy = strategy
        self.runner = Runner(spec, journal=journal, cache=cache)
        self.stop_reason: StopReason | None = None
        self._lock = lock
        self._owns_cache = owns_cache
        self._made = made  # what create() made: removed again by close(refused=True)
        self._started = time.perf_counter()
        self._closed = False

    @classmethod
    def of(cls, run_dir: str | Path, stored: dict[str, Any], spec: TrainSpec, build: Callable[[], Strategy], *,
           cache: ResultCache | None = None) -> StrategyRun:
        """The search in ``run_dir`` whose strategy ``build()`` makes fresh and ``stored`` (JSON-able: the journal
        keeps it) defines: opened if it was started there with the same ``stored`` (JournalError if with
        other settings), else created (the directory made if missing)."""
        run_dir = Path(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
        lock = _lock(run_dir, [])
        try:
            if (run_dir / RunJournal.FILE).is_file():
                journal = RunJournal.open(run_dir)
                if json.dumps(journal.config, sort_keys=True) != json.dumps(stored, sort_keys=True):
                    journal.close()
                    raise OtherSettings(f"{run_dir} was started with other settings; use a new run directory")
            else:
                journal = RunJournal.create(run_dir, stored)
        except BaseException:
            lock.release()
            raise
        try:
            return StrategyRun(run_dir, spec, build(), journal, lock, cache=cache, owns_cache=False, made=[])
        except BaseException:
            journal.close()
            lock.release()
            raise

    # -- the search --------------------------------------------------------------------------
    def observe(self, observer: Observer) -> None:
        """Call ``observer(candidate, evaluation, worker_key, replayed)`` after every tell from now on (those
        replayed by ``replay()`` included, when it is added before)."""
        self.runner.observers.append(observer)

    def replay(self) -> int:
        """Bring the fresh strategy to the journal's last state; returns the tells replayed. JournalError
        when the journal does not replay (the configuration or the code changed)."""
        return self.runner.replay(self.strategy)

    def run(self, evaluator: AsyncEvaluator, capacity: Callable[[], int] = lambda: 1,
            on_report: Callable[[Report], None] | None = None) -> StopReason | None:
        """Search until the strategy is done (call ``replay()`` first); returns why it stopped."""
        self.runner.on_report = on_report
        self.stop_reason = self.runner.run(self.strategy, evaluator, capacity)
        log.info("search.stopped", reason=self.stop_reason.value if self.stop_reason else "nothing to ask",
                 evaluations=self.strategy.evaluation_count, epochs=self.strategy.asked_epochs)
        return self.stop_reason

    @property
    def checkpoints(self) -> Path | None:
        """Where this search's promotions keep their checkpoints; None: its tasks start from scratch."""
        return None

    @property
    def evaluated(self) -> bool:
        """Whether anything was evaluated (or taken from the cache) in this process."""
        return bool(self.runner.evaluated or self.runner.cache_hits)

    def summary(self) -> dict[str, Any]:
        """What result.json holds: the search (evo.head.progress.search_summary), why it stopped, the spec,
        and where its results came from."""
        r = self.runner
        reason = self.stop_reason or self.strategy.stop_reason
        return {
            "run_dir": str(self.run_dir),
            "spec": self.spec.to_dict(),
            **search_summary(self.strategy),
            "stop_reason": reason.value if reason else None,
            "evaluated_now": r.evaluated,
            "reused_from_journal": r.reused,
            "replayed_from_journal": r.replayed,
            "cache_hits": r.cache_hits,
            "epochs_trained_now": r.epochs_trained,
            "train_seconds_now": round(r.train_seconds, 3),
            "seconds": time.perf_counter() - self._started,
        }

    def finish(self, summary: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``result.json`` (``summary``, by default :meth:`summary`) atomically; returns it."""
        summary = summary if summary is not None else self.summary()
        partial = self.run_dir / "result.json.partial"
        with writing(self.run_dir / "result.json", "the result"):
            partial.write_text(json.dumps(summary, indent=2))
            partial.replace(self.run_dir / "result.json")  # a kill leaves no half-written result behind
        if self.checkpoints is not None and self.strategy.done:  # no promotion is left to continue
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        return summary

    def close(self, refused: bool = False) -> None:
        """Release the cache (if this run opened it), the journal and the lock; with ``refused`` and nothing
        evaluated, remove what ``create`` made."""
        if self._closed:
            return
        self._closed = True
        if self._owns_cache and self.cache is not None:
            self.cache.close()
        self.journal.close()
        self._lock.release()
        if refused and not self.evaluated:
            _remove(self._made)

    def __enter__(self: _Run) -> _Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SearchRun(StrategyRun):
    """One search of the engine's strategies: :class:`StrategyRun` with its strategy built from the stored
    configuration (options, spec, space)."""

    def __init__(self, run_dir: Path, config: SearchConfig, strategy: Strategy, journal: RunJournal,
                 lock: RunLock, *, cache: ResultCache | None, owns_cache: bool, made: list[Path]) -> None:
        super().__init__(run_dir, config.spec, strategy, journal, lock, cache=cache, owns_cache=owns_cache,
                         made=made)
        self.config = config

    # -- making and opening ------------------------------------------------------------------
    @classmethod
    def create(cls, run_dir: str | Path, config: SearchConfig, *,
               cache: ResultCache | str | Path | None = None) -> SearchRun:
        """A new search in ``run_dir`` (made, with its parents, if missing; an existing one must be empty).
        ValueError (from the strategy) for options it refuses, JournalError or RunDirLocked when the directory
        cannot be used: nothing is made or changed then."""
        run_dir = Path(run_dir)
        strategy = make_strategy(config.options, config.space)
        made = _missing_from(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _remove(made)
            raise JournalError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
        had_lock_file = (run_dir / RunLock.FILE).exists()
        lock = _lock(run_dir, made)
        try:
            journal = RunJournal.create(run_dir, config.to_dict())
        except JournalError:  # e.g. not empty: someone's directory, left as it was
            lock.release()
            if not had_lock_file:
                (run_dir / RunLock.FILE).unlink(missing_ok=True)
            _remove(made)
            raise
        except OSError as exc:  # e.g. no room on the file system
            lock.release()
            _remove(made)
            _remove_created_files(run_dir)
            raise JournalError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
        if not made:  # an empty directory that was there: what the search put in it goes on a refused start
            made = [run_dir / RunJournal.FILE, run_dir / "run.json", run_dir / RunLock.FILE]
        return cls._with_cache(run_dir, config, strategy, journal, lock, cache, made)

    @classmethod
    def open(cls, run_dir: str | Path, *, cache: ResultCache | str | Path | None = None,
             generations: int | None = None) -> SearchRun:
        """The stopped search in ``run_dir``, to resume. ``generations``: more than it was started with
        (never fewer). JournalError or RunDirLocked (nothing changed) when it cannot be resumed."""
        run_dir = Path(run_dir)
        if not (run_dir / RunJournal.FILE).is_file():  # checked before the lock file is made in it
            RunJournal.open(run_dir)  # raises JournalError, saying what the directory holds instead
        lock = _lock(run_dir, [])
        try:
            journal = RunJournal.open(run_dir)
        except BaseException:
            lock.release()
            raise
        try:
            config = SearchConfig.from_dict(journal.config)
        except (ValueError, TypeError) as exc:
            journal.close()
            lock.release()
            raise JournalError(f"{run_dir}: the stored configuration is not a search's ({exc})") from None
        if generations is not None:
            started = config.options.generations
            if started is not None and generations < started:
                journal.close()
                lock.release()
                raise JournalError(f"{run_dir} was started for {started} generations; a resume may give more, "
                                   f"not fewer ({generations})", option="generations")
            if generations != started:  # kept, so a later resume replays the longer search it was extended to
                config = config.with_generations(generations)
                try:
                    journal.update_config(config.to_dict())
                except StorageError as exc:
                    journal.close()
                    lock.release()
                    raise JournalError(str(exc)) from None
        try:
            strategy = make_strategy(config.options, config.space)
        except ValueError as exc:
            journal.close()
            lock.release()
            raise JournalError(f"{run_dir}: its stored options are refused by this code ({exc})") from None
        return cls._with_cache(run_dir, config, strategy, journal, lock, cache, [])

    @classmethod
    def named(cls, run_dir: str | Path, config: SearchConfig, *,
              cache: ResultCache | None = None) -> SearchRun:
        """The search ``config`` in ``run_dir``: opened if it was started there (with the same config; JournalError
        if not), else created."""
        if (Path(run_dir) / RunJournal.FILE).is_file():
            run = cls.open(run_dir, cache=cache)
            if not run.config.same_search(config):
                run.close()
                raise OtherSettings(f"{run_dir} was started with other settings; use a new run directory")
            return run
        return cls.create(run_dir, config, cache=cache)

    @classmethod
    def _with_cache(cls, run_dir: Path, config: SearchConfig, strategy: Strategy, journal: RunJournal,
                    lock: RunLock, cache: ResultCache | str | Path | None, made: list[Path]) -> SearchRun:
        owns = cache is not None and not isinstance(cache, ResultCache)
        if owns:
            path = Path(cache)  # type: ignore[arg-type]
            cache_made = _missing_from(path)
            try:
                cache = ResultCache(path)
            except (JournalError, OSError, sqlite3.Error) as exc:
                journal.close()
                lock.release()
                _remove(made + cache_made)
                raise JournalError(f"cannot open or create the cache {path} ({exc})", option="cache") from None
            made = made + cache_made
        return cls(run_dir, config, strategy, journal, lock, cache=cache, owns_cache=owns,  # type: ignore[arg-type]
                   made=made)

    @property
    def checkpoints(self) -> Path | None:
        """Where this search's promotions keep their checkpoints (``RUN_DIR/checkpoints``): for a schedule that
        continues promoted candidates (``--mode asha``), else None. Removed when the search finishes."""
        o = self.config.options
        return self.run_dir / "checkpoints" if o.mode == "asha" and o.continue_promotions else None


def _lock(run_dir: Path, made: list[Path]) -> RunLock:
    try:
        return RunLock.acquire(run_dir)
    except RunDirLocked:
        raise  # the holder's directory: nothing of it is ours to remove
    except OSError as exc:
        _remove(made)
        raise JournalError(f"cannot lock the run directory {run_dir}: {exc.strerror or exc}") from None


def _missing_from(path: Path) -> list[Path]:
    """The outermost of ``path`` and its parents that does not exist yet (what making it would create)."""
    path = path.absolute()
    if path.exists():
        return []
    while not path.parent.exists():
        path = path.parent
    return [path]


def _remove(paths: list[Path]) -> None:
    for path in reversed(paths):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        for leftover in (path, *(path.with_name(path.name + end) for end in ("-wal", "-shm", "-journal"))):
            if leftover.is_file():
                leftover.unlink()


def _remove_created_files(run_dir: Path) -> None:
    for name in (RunJournal.FILE, RunJournal.FILE + ".new", "run.json", RunLock.FILE):
        for path in (run_dir / name, *(run_dir / (name + end) for end in ("-wal", "-shm", "-journal"))):
            if path.is_file():
                path.unlink()
