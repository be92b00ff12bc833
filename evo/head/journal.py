"""The run journal and the result cache: SQLite (stdlib sqlite3, WAL).

A run directory holds ``journal.sqlite``: the search's configuration, every
ask (the genotypes handed to the transport, with their task ids), every
result received, and every tell with the engine's state after it - each
written and committed before it is acted on. Resuming replays the asks and
tells through a fresh engine built from the same configuration (same seed):
the engine's RNG is consumed exactly as before, so the search continues as
if it had never stopped, and no finished evaluation is paid for twice. The
journaled engine states are checked against the replay.

The result cache (``--cache PATH``) is shared across runs: evaluations keyed
by task id, which is derived from the genotype and the whole training spec
(data set, split, epochs, batch size, learning rate, seed, trainer version).
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..evaluation import Evaluation
from ..genotype import Genotype, parse_genotype

__all__ = ["JournalError", "ResultCache", "RunJournal"]

FORMAT = "evovae-run"
VERSION = 1
CACHE_FORMAT = "evovae-cache"

_RUN_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('ask', 'tell')),
    at REAL NOT NULL,
    task_ids TEXT NOT NULL,      -- JSON list
    genotypes TEXT NOT NULL,     -- JSON list (asks); [] for tells
    state TEXT                   -- JSON: engine snapshot after a tell; {"n": count} of a steady-state ask
);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY,
    genotype TEXT NOT NULL,
    loss REAL,
    error TEXT NOT NULL,
    metrics TEXT NOT NULL,       -- JSON
    source TEXT NOT NULL,        -- worker | cache | in-process
    at REAL NOT NULL
);
"""

_CACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY,
    genotype TEXT NOT NULL,
    loss REAL,
    error TEXT NOT NULL,
    metrics TEXT NOT NULL,
    at REAL NOT NULL
);
"""


class JournalError(RuntimeError):
    """A run directory or cache that cannot be used as asked (and was left unchanged)."""


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    con = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0)
    if not readonly:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process crash
    return con


def _check_format(path: Path, fmt: str) -> dict[str, str]:
    """Read-only check that ``path`` is an evovae database of kind ``fmt``."""
    try:
        con = _connect(path, readonly=True)
        try:
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        what = "run journal" if fmt == FORMAT else "result cache"
        raise JournalError(f"{path} is not an evovae {what} ({exc}); nothing was changed") from None
    if meta.get("format") != fmt:
        raise JournalError(f"{path} is a database of format {meta.get('format')!r}, not {fmt!r}; nothing was changed")
    if meta.get("version") != str(VERSION):
        raise JournalError(f"{path} has format version {meta.get('version')}, this evovae reads {VERSION}")
    return meta


def _evaluation(genotype: str, loss: float | None, error: str, metrics: str) -> Evaluation:
    g = parse_genotype(genotype)
    data = json.loads(metrics)
    return Evaluation.succeeded(g, loss, data) if loss is not None else Evaluation.failed(g, error, data)


def _select_many(con: sqlite3.Connection, task_ids: list[str]) -> dict[str, Evaluation]:
    found = {}
    for start in range(0, len(task_ids), 500):
        chunk = task_ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for row in con.execute(f"SELECT task_id, genotype, loss, error, metrics FROM results WHERE task_id IN ({marks})",
                               chunk):
            found[row[0]] = _evaluation(*row[1:])
    return found


def _jsonable(metrics: Any) -> str:
    return json.dumps(dict(metrics), default=lambda o: list(o) if isinstance(o, tuple) else str(o))


class RunJournal:
    """The journal of one search, in ``RUN_DIR/journal.sqlite``."""

    FILE = "journal.sqlite"

    def __init__(self, run_dir: Path, con: sqlite3.Connection, config: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.config = config
        self._con = con

    @classmethod
    def create(cls, run_dir: str | Path, config: dict[str, Any]) -> "RunJournal":
        run_dir = Path(run_dir)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise JournalError(f"run directory {run_dir} already exists and is not empty; "
                               f"resume it with --resume {run_dir}, or choose another --run-dir")
        run_dir.mkdir(parents=True, exist_ok=True)
        con = _connect(run_dir / cls.FILE)
        con.executescript(_RUN_SCHEMA)
        with con:
            con.execute("BEGIN")
            con.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format", FORMAT), ("version", str(VERSION)), ("config", json.dumps(config, sort_keys=True)),
                ("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
            ])
        (run_dir / "run.json").write_text(json.dumps({"format": FORMAT, "version": VERSION, "config": config},
                                                     indent=2, sort_keys=True))
        return cls(run_dir, con, config)

    @classmethod
    def open(cls, run_dir: str | Path) -> "RunJournal":
        run_dir = Path(run_dir)
        path = run_dir / cls.FILE
        if not path.is_file():
            raise JournalError(f"{run_dir} is not an evovae run directory: no {cls.FILE} in it")
        meta = _check_format(path, FORMAT)
        try:
            config = json.loads(meta["config"])
        except (KeyError, ValueError) as exc:
            raise JournalError(f"{path}: the stored configuration is unreadable ({exc})") from None
        con = _connect(path)
        return cls(run_dir, con, config)

    def close(self) -> None:
        self._con.close()

    # -- writing -----------------------------------------------------------------
    def record_ask(self, genotypes: Iterable[Genotype], task_ids: Iterable[str], requested: int | None = None) -> None:
        """An ask: its genotypes and task ids (and, for a steady-state ask, the count requested)."""
        self._con.execute(
            "INSERT INTO events (kind, at, task_ids, genotypes, state) VALUES ('ask', ?, ?, ?, ?)",
            (time.time(), json.dumps(list(task_ids)), json.dumps([str(g) for g in genotypes]),
             None if requested is None else json.dumps({"n": requested})))

    def record_results(self, items: Iterable[tuple[str, Evaluation, str]]) -> None:
        """``(task_id, evaluation, source)`` triples, in one transaction; a task id already recorded is kept."""
        rows = [(tid, str(e.genotype), e.loss, e.error, _jsonable(e.metrics), source, time.time())
                for tid, e, source in items]
        if rows:
            with self._con:
                self._con.execute("BEGIN")
                self._con.executemany("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def record_tell(self, task_ids: Iterable[str], state: dict) -> None:
        self._con.execute(
            "INSERT INTO events (kind, at, task_ids, genotypes, state) VALUES ('tell', ?, ?, '[]', ?)",
            (time.time(), json.dumps(list(task_ids)), json.dumps(state)))

    # -- reading -----------------------------------------------------------------
    def events(self) -> Iterator[tuple[str, list[str], list[str], dict | None]]:
        for kind, task_ids, genotypes, state in self._con.execute(
                "SELECT kind, task_ids, genotypes, state FROM events ORDER BY seq"):
            yield kind, json.loads(task_ids), json.loads(genotypes), json.loads(state) if state else None

    def result(self, task_id: str) -> Evaluation | None:
        return self.results_for([task_id]).get(task_id)

    def results_for(self, task_ids: list[str]) -> dict[str, Evaluation]:
        """The journaled results among ``task_ids`` (one query per 500 ids)."""
        return _select_many(self._con, task_ids)

    def results(self) -> dict[str, Evaluation]:
        return {row[0]: _evaluation(*row[1:]) for row in
                self._con.execute("SELECT task_id, genotype, loss, error, metrics FROM results")}

    def counts(self) -> dict[str, int]:
        by_source = dict(self._con.execute("SELECT source, COUNT(*) FROM results GROUP BY source").fetchall())
        asks = self._con.execute("SELECT COUNT(*) FROM events WHERE kind = 'ask'").fetchone()[0]
        tells = self._con.execute("SELECT COUNT(*) FROM events WHERE kind = 'tell'").fetchone()[0]
        return {"asks": asks, "tells": tells, **{f"results_{k}": v for k, v in by_source.items()}}


class ResultCache:
    """Evaluations shared across runs, keyed by content-derived task id."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            _check_format(self.path, CACHE_FORMAT)
            self._con = _connect(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = _connect(self.path)
            self._con.executescript(_CACHE_SCHEMA)
            with self._con:
                self._con.execute("BEGIN")
                self._con.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                      [("format", CACHE_FORMAT), ("version", str(VERSION))])
        self.hits = 0

    def get(self, task_id: str) -> Evaluation | None:
        return self.get_many([task_id]).get(task_id)

    def get_many(self, task_ids: list[str]) -> dict[str, Evaluation]:
        found = _select_many(self._con, task_ids)
        self.hits += len(found)
        return found

    def put(self, items: Iterable[tuple[str, Evaluation]]) -> None:
        """Store evaluations; only those a worker measured (a loss, or a training failure such as divergence),
        never a transport give-up, which says nothing about the genotype."""
        rows = [(tid, str(e.genotype), e.loss, e.error, _jsonable(e.metrics), time.time())
                for tid, e in items if e.ok or not e.metrics.get("gave_up")]
        if rows:
            with self._con:
                self._con.execute("BEGIN")
                self._con.executemany("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        self._con.close()
