"""One search's run directory read for its report (``evovae report``), without writing anything in it.

:func:`read_run` gives a :class:`RunRecord`: every evaluation in the order the strategy was told it (from the
journal, opened read-only: the trainer's full measurement, curve and parameter count included), when it was
told, the epochs it was charged, and the search's summary in the form ``result.json`` holds it
(evo/head/progress.py ``search_summary``). The summary is ``result.json`` when that file covers every
evaluation the journal holds; otherwise (a stopped, killed or still running search, or one resumed since it
was written) the journal is replayed through a fresh strategy in memory, as a resume would; and where that is
refused (the code changed since) it is made from the journal alone, saying so. A format-1 journal is read
from a migrated copy in a scratch directory. :func:`read_timeline` reads the workers' busy and idle times
from the run's JSON logs (``RUN_DIR/logs``).
"""
from __future__ import annotations

import itertools
import json
import math
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..evaluation import Evaluation
from ..head.journal import FORMAT, JournalError, RunJournal
from ..head.progress import anytime, evaluation_item, search_summary
from ..head.runner import Runner
from ..head.store import VERSION, connect
from ..logs.reading import LOGS_DIR, LogError, Record, log_files, read_logs
from ..search_config import SearchConfig
from ..strategies import make_strategy

__all__ = ["Busy", "ReportError", "RunRecord", "Timeline", "Told", "read_run", "read_timeline"]

#: a pause: a gap between journal events longer than this many seconds, and than 3 x the longest training
PAUSE_S = 600.0


class ReportError(Exception):
    """A directory that is not a search's run directory, or a journal with nothing to report: one line."""


@dataclass(frozen=True)
class Told:
    """One evaluation, as the strategy was told it."""

    order: int  # 1, 2, ... in the order told
    task_id: str
    evaluation: Evaluation
    at: float  # Unix time of the tell (the journal's tell event)
    charged: int  # the training epochs the strategy charged for it (a continued promotion: those after its checkpoint)
    worker_key: str | None  # the CURVE key of the worker that sent it (None: plain mode, in-process, cache)
    source: str  # worker | cache


@dataclass(frozen=True)
class RunRecord:
    """What the report of one run is made of."""

    run_dir: Path
    config: dict[str, Any]  # the journaled configuration, as stored
    search: SearchConfig | None  # it, read (None: a configuration this code does not read)
    created: str
    reopened: str | None  # when the journal was last opened by a resume (None: never resumed)
    told: tuple[Told, ...]
    summary: dict[str, Any]  # the form of result.json: strategy, final_epochs, best, epochs_total, anytime, ...
    source: str  # where the summary came from: result.json | replay | journal
    result: dict[str, Any] | None  # result.json, when there is one
    stop_reason: str | None  # None: not finished (stopped, killed or still running)
    clock: tuple[float, ...]  # per told evaluation: seconds since the search started, pauses cut out
    clock_kind: str  # "wall clock" or "simulated clock (N workers)"
    pauses: tuple[tuple[float, float], ...]  # (start, seconds) of each pause cut out of the clock
    span: tuple[float, float]  # the Unix times of the journal's first and last event
    asked: tuple[str, ...]  # the task ids of every candidate asked (told or not)
    notes: tuple[str, ...]

    @property
    def final_epochs(self) -> int:
        return int(self.summary["final_epochs"])

    @property
    def final(self) -> list[Told]:
        """The evaluations at the final fidelity that succeeded, best first (ties: the first told)."""
        ok = [t for t in self.told if t.evaluation.ok and t.evaluation.epochs == self.final_epochs]
        return sorted(ok, key=lambda t: (t.evaluation.loss, t.order))


def read_run(run_dir: str | Path) -> RunRecord:
    """The run in ``run_dir``, read-only. ReportError (one line) for a directory that is not a run directory,
    a journal that cannot be read, or one with no evaluation told yet."""
    path = Path(run_dir)
    if not path.is_dir():
        why = "not a directory" if path.exists() else "no such directory"
        raise ReportError(f"{path} is not a run directory ({why})")
    try:
        if not (path / RunJournal.FILE).is_file():
            searches = sorted(p.name for p in (path / "searches").glob("*") if (p / RunJournal.FILE).is_file())
            if searches:
                shown = ", ".join(searches[:6]) + (", ..." if len(searches) > 6 else "")
                raise ReportError(f"{path} is an experiment's directory: give one of its searches, "
                                  f"{path / 'searches' / searches[0]} (its searches: {shown})")
            RunJournal.open(path, readonly=True)  # raises, saying what the directory holds instead
        with tempfile.TemporaryDirectory(prefix="evovae-report-") as scratch:
            con = _connect(path / RunJournal.FILE)
            try:
                meta = _meta(con, path / RunJournal.FILE)
                notes = []
                if meta.get("version") == "1":  # migrated in a copy; the run directory is left as it is
                    con.close()
                    con = connect(_migrated_copy(path, Path(scratch)) / RunJournal.FILE, readonly=True)
                    notes.append("the journal is of format 1 (before fidelities): read from a migrated copy; the "
                                 "run directory is unchanged")
                return _record(path, RunJournal(path, con, json.loads(meta["config"])), con, meta, notes)
            finally:
                con.close()
    except JournalError as exc:
        raise ReportError(str(exc)) from None
    except (sqlite3.Error, ValueError) as exc:
        raise ReportError(f"cannot read the journal {path / RunJournal.FILE} ({exc})") from None


def _connect(path: Path) -> sqlite3.Connection:
    """A read-only connection to the journal ``path``. One whose head is gone (no ``-wal`` file beside it: a
    head that ended closed it) is opened immutable, so reading it leaves no ``-wal`` and ``-shm`` files behind;
    one with a ``-wal`` (a head running, or killed) is read through it."""
    live = path.with_name(path.name + "-wal").exists()
    uri = path.absolute().as_uri() + ("?mode=ro" if live else "?mode=ro&immutable=1")
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0)


def _meta(con: sqlite3.Connection, path: Path) -> dict[str, str]:
    """The journal's meta table, checked: an evovae run journal of a format this code reads."""
    try:
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"{path} is not an evovae run journal ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ReportError(f"{path} is a database of format {meta.get('format')!r}, not {FORMAT!r}")
    if meta.get("version") not in ("1", str(VERSION)):
        raise ReportError(f"{path} has format version {meta.get('version')}, this evovae reads 1 and {VERSION}")
    if "config" not in meta:
        raise ReportError(f"{path}: the journal holds no configuration")
    return meta


def _migrated_copy(run_dir: Path, scratch: Path) -> Path:
    """A copy of the run's format-1 journal in ``scratch``, migrated there; returns ``scratch``."""
    for name in (RunJournal.FILE, RunJournal.FILE + "-wal"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, scratch / name)
    RunJournal.open(scratch).close()
    return scratch


def _record(run_dir: Path, journal: RunJournal, con: sqlite3.Connection, meta: dict[str, str],
            notes: list[str]) -> RunRecord:
    tells = [(at, json.loads(ids)) for at, ids in con.execute(
        "SELECT at, task_ids FROM events WHERE kind = 'tell' ORDER BY seq")]
    times = [at for (at,) in con.execute("SELECT at FROM events ORDER BY seq")]
    asked = tuple(tid for (ids,) in con.execute("SELECT task_ids FROM events WHERE kind = 'ask' ORDER BY seq")
                  for tid in json.loads(ids))
    extra = {tid: (key, source) for tid, key, source in con.execute(
        "SELECT task_id, worker_key, source FROM results")}
    results = journal.results()
    told_raw: list[tuple[str, Evaluation, float]] = []
    for at, ids in tells:
        for tid in ids:
            if tid not in results:
                raise ReportError(f"{journal.run_dir}: a tell names a result that is not journaled ({tid}); the "
                                  "journal is corrupt")
            told_raw.append((tid, results[tid], at))
    if not told_raw:
        raise ReportError(f"{run_dir}: the journal holds no evaluation yet: nothing to report")
    try:
        search: SearchConfig | None = SearchConfig.from_dict(journal.config)
    except (ValueError, TypeError, KeyError) as exc:
        search = None
        notes.append(f"the journaled configuration is not one this code reads ({exc})")
    result = _result_json(run_dir, notes)
    summary, source, stop = _summary(journal, search, result, [e for _, e, _ in told_raw], notes)
    if len(summary.get("anytime") or ()) != len(told_raw):  # a summary whose curve does not match its evaluations
        notes.append("the summary's anytime curve does not match its evaluations: each evaluation is charged its "
                     "epochs instead")
        summary = {**summary, "anytime": anytime([e for _, e, _ in told_raw], int(summary["final_epochs"]))}
    marks = [0] + [int(point[0]) for point in summary["anytime"]]
    told = tuple(Told(i + 1, tid, e, at, marks[i + 1] - marks[i], *extra.get(tid, (None, "worker")))
                 for i, (tid, e, at) in enumerate(told_raw))
    clock, kind, pauses = _clock(told, times, result if source == "result.json" else None)
    return RunRecord(run_dir=run_dir, config=journal.config, search=search, created=meta.get("created", ""),
                     reopened=meta.get("opened"), told=told, summary=summary, source=source, result=result,
                     stop_reason=stop, clock=clock, clock_kind=kind, pauses=pauses, span=(min(times), max(times)),
                     asked=asked, notes=tuple(notes))


def _result_json(run_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    path = run_dir / "result.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        notes.append(f"result.json is unreadable ({exc}): the journal is read instead")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("evaluations"), list):
        notes.append("result.json is not a search's result: the journal is read instead")
        return None
    return data


def _summary(journal: RunJournal, search: SearchConfig | None, result: dict[str, Any] | None,
             evaluations: list[Evaluation], notes: list[str]) -> tuple[dict[str, Any], str, str | None]:
    """The search's summary: result.json when it covers every evaluation told, else a replay of the journal,
    else the journal alone. Returns it, where it came from, and why the search stopped (None: unfinished)."""
    told = [[str(e.genotype), e.epochs] for e in evaluations]
    covers = result is not None and told == [[item.get("genotype"), item.get("epochs")]
                                             for item in result["evaluations"]]
    if result is not None and covers:
        if "anytime" in result and "final_epochs" in result:
            return result, "result.json", result.get("stop_reason") or "nothing more to ask"
        notes.append("result.json is of an older form (without the anytime curve): the journal is replayed instead")
    elif result is not None:
        notes.append(f"result.json holds {len(result['evaluations'])} evaluations, the journal {len(told)}: the "
                     "search went on after it was written (a resume), so the journal is read instead")
    if search is not None:
        try:
            strategy = make_strategy(search.options, search.space)
            Runner(search.spec, journal=journal).replay(strategy)
        except (JournalError, ValueError, TypeError, KeyError) as exc:  # the code or the journal changed
            notes.append(f"the journal does not replay with this code ({exc}); the figures come from the "
                         "journal alone, each evaluation charged its epochs")
        else:
            summary = search_summary(strategy)
            if len(summary["evaluations"]) == len(told):
                reason = strategy.stop_reason
                return summary, "replay", reason.value if reason else None
    final = max(e.epochs for e in evaluations)
    ranked = sorted((e for e in evaluations if e.ok and e.epochs == final), key=lambda e: e.loss or 0.0)
    summary = {"strategy": search.options.strategy if search else "unknown", "final_epochs": final,
               "best": evaluation_item(ranked[0]) if ranked else None,
               "epochs_total": sum(e.epochs for e in evaluations), "generations": [],
               "evaluations": [evaluation_item(e) for e in evaluations], "anytime": anytime(evaluations, final)}
    return summary, "journal", (result or {}).get("stop_reason") if covers else None


def _clock(told: tuple[Told, ...], times: list[float],
           result: dict[str, Any] | None) -> tuple[tuple[float, ...], str, tuple[tuple[float, float], ...]]:
    """Each evaluation's time since the search started: the simulated clock a ``--simulate-workers`` run kept,
    else the journal's wall clock with its pauses (gaps with nothing journaled longer than ``PAUSE_S`` and than
    3 x the longest training: a stopped head, or one waiting for workers) cut out."""
    simulated = (result or {}).get("simulated")
    if isinstance(simulated, dict) and isinstance(simulated.get("delivered"), list):
        delivered = dict(simulated["delivered"])
        if all(t.task_id in delivered for t in told):
            return (tuple(float(delivered[t.task_id]) for t in told),
                    f"simulated clock ({simulated.get('workers')} workers)", ())
    longest = max((t.evaluation.seconds for t in told), default=0.0)
    limit = max(PAUSE_S, 3 * longest)
    ordered = sorted(times)
    pauses = tuple((a, b - a) for a, b in itertools.pairwise(ordered) if b - a > limit)
    start = ordered[0]

    def elapsed(at: float) -> float:
        return at - start - sum(length for begin, length in pauses if begin + length <= at)

    return tuple(elapsed(t.at) for t in told), "wall clock", pauses


# -- the workers' timeline, from the run's logs ----------------------------------------------------------

@dataclass(frozen=True)
class Busy:
    """One attempt on one worker: from its hand-out to its end."""

    worker: str
    task_id: str
    start: float
    end: float
    outcome: str  # ok | failed | lost (the attempt was re-sent or given up) | late (a result no longer needed) | open


@dataclass(frozen=True)
class Timeline:
    """The workers' busy and alive times, from the run's logs (Unix times)."""

    files: tuple[str, ...]
    busy: tuple[Busy, ...]
    alive: dict[str, tuple[float, float]]  # worker -> (first, last) line about it
    head_starts: tuple[float, ...]  # each broker.started: the head's sessions
    start: float
    end: float
    source: str  # "head" (its hand-outs and results), "workers" (their own task lines) or "unreadable"

    @property
    def workers(self) -> list[str]:
        """Every worker, in the order they were first seen."""
        first = {w: span[0] for w, span in self.alive.items()}
        for b in self.busy:
            first[b.worker] = min(first.get(b.worker, b.start), b.start)
        return sorted(first, key=lambda w: (first[w], w))


#: the head's lines that name a worker of the run (not a peer's claim in a refused frame)
_HEAD_WORKER_EVENTS = frozenset({"worker.seen", "worker.reconnected", "worker.lost", "task.dispatched",
                                 "result.accepted", "result.duplicate", "result.late", "task.resent", "task.failed",
                                 "task.orphaned"})


def read_timeline(record: RunRecord) -> Timeline | None:
    """The workers' timeline of ``record``'s run from its logs (``evo.logs.reading.log_files``: ``RUN_DIR/logs``,
    or the experiment's for a search inside one, where only this search's tasks in its journal's time span
    count); None when the run kept no logs. Its ``busy`` is empty when the logs name no task of the run handed
    out (a search that trained in its own process) or cannot be read."""
    try:
        files = log_files(record.run_dir)
    except LogError:
        return None
    try:
        logs = read_logs(files)
    except LogError:
        return Timeline(tuple(files), (), {}, (), 0.0, 0.0, "unreadable")
    seen: set[str] = set()
    records = []
    for r in logs.records:  # a line in two files (a copy of a log beside the original) counts once
        key = json.dumps(r.fields, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            records.append(r)
    shared = not (record.run_dir / LOGS_DIR).is_dir()  # an experiment's logs: every search's
    if shared:
        begin, end = record.span
        records = [r for r in records if begin - 1.0 <= r.time <= end + 1.0]
    head = [r for r in records if r.role != "worker"]
    if any(r.event == "task.dispatched" for r in head):
        busy, source = _head_busy(records), "head"
    else:
        busy, source = _worker_busy([r for r in records if r.role == "worker"]), "workers"
    if shared:
        ours = {t.task_id for t in record.told} | set(record.asked)
        busy = [b for b in busy if b.task_id in ours]
    alive: dict[str, tuple[float, float]] = {}
    for r in records:
        wid = r.get("worker_id")
        if isinstance(wid, str) and wid and (r.role == "worker" or r.event in _HEAD_WORKER_EVENTS):
            first, last = alive.get(wid, (r.time, r.time))
            alive[wid] = (min(first, r.time), max(last, r.time))
    if shared:  # the workers that worked for this search
        alive = {w: span for w, span in alive.items() if any(b.worker == w for b in busy)}
    times = [r.time for r in records if math.isfinite(r.time)] or [0.0]
    return Timeline(files=tuple(files), busy=tuple(busy), alive=alive,
                    head_starts=tuple(r.time for r in head if r.event == "broker.started"),
                    start=min(times), end=max(times), source=source)


def _head_busy(records: list[Record]) -> list[Busy]:
    """Attempts from the head's log: ``task.dispatched`` to the result, a re-send, a give-up or the worker's loss.
    One still running when its head stops (a new ``broker.started``) or the logs end is ``open`` until the last
    line about its worker."""
    running: dict[tuple[Any, Any], tuple[str, float]] = {}  # (task_id, attempt) -> (worker, dispatched at)
    seen: dict[str, float] = {}  # worker -> the time of the last line about it
    busy: list[Busy] = []

    def close(key: tuple[Any, Any], t: float, outcome: str) -> None:
        worker, started = running.pop(key)
        busy.append(Busy(worker, str(key[0]), started, max(t, started), outcome))

    for r in records:
        key, worker = (r.get("task_id"), r.get("attempt")), r.get("worker_id")
        if r.event == "broker.started" and r.role != "worker":  # a new head: the last one's attempts ended with it
            for cut in list(running):
                close(cut, seen.get(running[cut][0], 0.0), "open")
        if isinstance(worker, str):
            seen[worker] = r.time
        if r.role == "worker":
            continue
        if r.event == "task.dispatched" and isinstance(worker, str):
            running[key] = (worker, r.time)
        elif r.event in ("result.accepted", "result.duplicate", "result.late") and key in running:
            outcome = ("failed" if r.get("ok") is False else "ok") if r.event == "result.accepted" else "late"
            close(key, r.time, outcome)
        elif r.event in ("task.resent", "task.failed") and key in running:
            close(key, r.time, "lost")
        elif r.event == "worker.lost":
            for lost in [k for k, (w, _) in running.items() if w == worker]:
                close(lost, r.time, "lost")
    for cut in list(running):
        close(cut, seen.get(running[cut][0], 0.0), "open")
    return busy


def _worker_busy(records: list[Record]) -> list[Busy]:
    """Attempts from the workers' own logs: ``task.received`` to ``task.finished`` (or ``task.abandoned``)."""
    running: dict[str, tuple[str, float]] = {}  # worker -> (task_id, received at)
    busy: list[Busy] = []
    for r in records:
        worker = r.get("worker_id")
        if not isinstance(worker, str):
            continue
        if r.event == "task.received":
            if worker in running:
                task, started = running.pop(worker)
                busy.append(Busy(worker, task, started, r.time, "lost"))
            running[worker] = (str(r.get("task_id")), r.time)
        elif r.event in ("task.finished", "task.abandoned") and worker in running:
            task, started = running.pop(worker)
            outcome = "lost" if r.event == "task.abandoned" else ("failed" if r.get("ok") is False else "ok")
            busy.append(Busy(worker, task, started, r.time, outcome))
    end = records[-1].time if records else 0.0
    busy += [Busy(w, task, started, end, "open") for w, (task, started) in running.items()]
    return busy
