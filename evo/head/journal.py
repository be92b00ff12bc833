"""The run journal: SQLite (stdlib sqlite3, WAL), in ``RUN_DIR/journal.sqlite``.

It holds the search's configuration, every ask (the candidates handed to the transport, ``GENOTYPE@EPOCHS``,
with their task ids and the count asked for), every result received (with its state, epochs, training seconds
and the CURVE key of the worker that sent it), and every tell with the strategy's state after it - each
written and committed before it is acted on. Resuming replays the asks and tells through a fresh strategy
built from the same configuration (same seed): its RNG is consumed exactly as before, so the search continues
as if it had never stopped, and no finished evaluation is paid for twice. The journaled states are checked
against the replay. Journals of format 1 (before fidelities) are migrated when opened and replay as before.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..evaluation import Candidate, Evaluation
from .store import (
    RESULT_COLUMNS,
    VERSION,
    JournalError,
    check_format,
    connect,
    evaluation_of_row,
    migrate,
    row_of,
    select_many,
    writing,
)

__all__ = ["FORMAT", "JournalError", "RunJournal"]

FORMAT = "evovae-run"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('ask', 'tell')),
    at REAL NOT NULL,
    task_ids TEXT NOT NULL,      -- JSON list
    genotypes TEXT NOT NULL,     -- JSON list of GENOTYPE@EPOCHS (asks); [] for tells
    state TEXT                   -- JSON: strategy snapshot after a tell; {"n": count asked for} of an ask
);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY, genotype TEXT NOT NULL, loss REAL, error TEXT NOT NULL,
    metrics TEXT NOT NULL,       -- JSON
    source TEXT NOT NULL,        -- worker (in-process runs too) | cache
    at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT '', epochs INTEGER NOT NULL DEFAULT 0, seconds REAL NOT NULL DEFAULT 0,
    worker_key TEXT              -- the CURVE public key (Z85) of the worker that sent the result, if any
);
"""


def _format_1_epochs(config: dict[str, Any]) -> int:
    """The one fidelity of a run journaled in format 1 (before fidelities): its configured epochs (a search's
    ``epochs``, an experiment's ``options.epochs``), else the default of that time, 2."""
    for found in (config.get("epochs"), (config.get("options") or {}).get("epochs"),
                  (config.get("spec") or {}).get("epochs")):
        if type(found) is int and found > 0:
            return found
    return 2


class RunJournal:
    """The journal of one search, in ``RUN_DIR/journal.sqlite``."""

    FILE = "journal.sqlite"

    def __init__(self, run_dir: Path, con: sqlite3.Connection, config: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.config = config
        self._con = con

    @classmethod
    def create(cls, run_dir: str | Path, config: dict[str, Any]) -> RunJournal:
        """A new journal, created atomically: built in ``journal.sqlite.new`` and renamed into place, so a
        process killed while creating it leaves either no journal or a complete one."""
        run_dir = Path(run_dir)
        partial = run_dir / (cls.FILE + ".new")
        ours = (partial.name, "lock")  # a killed creation's leftovers; the head's lock (evo/head/lock.py)
        if run_dir.exists() and any(not p.name.startswith(ours) for p in run_dir.iterdir()):
            raise JournalError(f"run directory {run_dir} already exists and is not empty; "
                               f"resume it with --resume {run_dir}, or choose another --run-dir")
        text = json.dumps(config, sort_keys=True, allow_nan=False)  # refuses NaN before anything is created
        run_dir.mkdir(parents=True, exist_ok=True)
        for leftover in run_dir.glob(partial.name + "*"):  # left by a creation that was killed
            leftover.unlink()
        con = sqlite3.connect(partial, isolation_level=None)
        try:
            con.executescript(_SCHEMA)
            with con:
                con.execute("BEGIN")
                con.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("format", FORMAT), ("version", str(VERSION)), ("config", text),
                    ("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                ])
        finally:
            con.close()
        os.replace(partial, run_dir / cls.FILE)
        (run_dir / "run.json").write_text(json.dumps({"format": FORMAT, "version": VERSION, "config": config},
                                                     indent=2, sort_keys=True, allow_nan=False))
        return cls(run_dir, connect(run_dir / cls.FILE), config)

    @classmethod
    def open(cls, run_dir: str | Path, *, readonly: bool = False) -> RunJournal:
        """The journal in ``run_dir``, migrated to this format and checked writable; with ``readonly``, only
        read (e.g. by ``evovae export`` while a head runs the search): nothing is written."""
        run_dir = Path(run_dir)
        path = run_dir / cls.FILE
        if not path.is_file():
            partial = run_dir / (cls.FILE + ".new")
            if partial.is_file():
                raise JournalError(f"{run_dir} holds only {partial.name}, left by a head killed while it created "
                                   f"the run: nothing was run in it; remove {run_dir} and start the search again")
            raise JournalError(f"{run_dir} is not an evovae run directory: no {cls.FILE} in it")
        meta = check_format(path, FORMAT, "run journal")
        try:
            config = json.loads(meta["config"])
        except (KeyError, ValueError) as exc:
            raise JournalError(f"{path}: the stored configuration is unreadable ({exc})") from None
        if readonly:
            if meta.get("version") == "1":
                raise JournalError(f"{path} is of format 1: resume the search once with this evovae to migrate "
                                   "it, then read it")
            return cls(run_dir, connect(path, readonly=True), config)
        try:
            con = connect(path)
            migrate(con, meta, epochs=_format_1_epochs(config))
            with con:  # found now, before a resumed search binds a socket: a journal this head may not write
                con.execute("INSERT OR REPLACE INTO meta VALUES ('opened', ?)",
                            (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),))
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write the journal {path} ({exc}): resume as a user who may write "
                               f"{run_dir} and the files in it, or free space on its file system") from None
        return cls(run_dir, con, config)

    def close(self) -> None:
        self._con.close()

    # -- writing -----------------------------------------------------------------
    def record_ask(self, candidates: Iterable[Candidate], task_ids: Iterable[str],
                   requested: int | None = None) -> None:
        """An ask: its candidates and task ids, and the count asked for (part of the RNG's history)."""
        with writing(self.path, "the journal"):
            self._con.execute(
                "INSERT INTO events (kind, at, task_ids, genotypes, state) VALUES ('ask', ?, ?, ?, ?)",
                (time.time(), json.dumps(list(task_ids)), json.dumps([str(c) for c in candidates]),
                 None if requested is None else json.dumps({"n": requested})))

    def record_results(self, items: Iterable[tuple[str, Evaluation, str | None]], source: str) -> None:
        """``(task_id, evaluation, worker_key)`` triples from ``source`` (``worker`` or ``cache``), in one
        transaction; a task id already recorded is kept. ``worker_key``: the CURVE key that sent it, or None."""
        rows = [{**row_of(tid, e, key), "source": source, "at": time.time()} for tid, e, key in items]
        if rows:
            with writing(self.path, "the journal"), self._con:
                self._con.execute("BEGIN")
                self._con.executemany(
                    "INSERT OR IGNORE INTO results (task_id, genotype, loss, error, metrics, source, at, state, "
                    "epochs, seconds, worker_key) VALUES (:task_id, :genotype, :loss, :error, :metrics, :source, "
                    ":at, :state, :epochs, :seconds, :worker_key)", rows)

    def update_config(self, config: dict[str, Any]) -> None:
        """Store a changed configuration (a resume that extends the search): in the journal and run.json."""
        text = json.dumps(config, sort_keys=True, allow_nan=False)
        with writing(self.path, "the journal"):
            self._con.execute("UPDATE meta SET value = ? WHERE key = 'config'", (text,))
        with writing(self.run_dir / "run.json", "the run's configuration"):
            (self.run_dir / "run.json").write_text(json.dumps({"format": FORMAT, "version": VERSION, "config": config},
                                                              indent=2, sort_keys=True, allow_nan=False))
        self.config = config

    def record_tell(self, task_ids: Iterable[str], state: dict) -> None:
        with writing(self.path, "the journal"):
            self._con.execute(
                "INSERT INTO events (kind, at, task_ids, genotypes, state) VALUES ('tell', ?, ?, '[]', ?)",
                (time.time(), json.dumps(list(task_ids)), json.dumps(state)))

    @property
    def path(self) -> Path:
        return self.run_dir / self.FILE

    # -- reading -----------------------------------------------------------------
    def events(self) -> Iterator[tuple[str, list[str], list[str], dict | None]]:
        for kind, task_ids, genotypes, state in self._con.execute(
                "SELECT kind, task_ids, genotypes, state FROM events ORDER BY seq"):
            yield kind, json.loads(task_ids), json.loads(genotypes), json.loads(state) if state else None

    def result(self, task_id: str) -> Evaluation | None:
        return self.results_for([task_id]).get(task_id)

    def results_for(self, task_ids: list[str]) -> dict[str, Evaluation]:
        """The journaled results among ``task_ids`` (one query per 500 ids)."""
        return select_many(self._con, task_ids)

    def results(self) -> dict[str, Evaluation]:
        return {row[0]: evaluation_of_row(*row[1:]) for row in
                self._con.execute(f"SELECT task_id, {RESULT_COLUMNS} FROM results")}

    def worker_key(self, task_id: str) -> str | None:
        row = self._con.execute("SELECT worker_key FROM results WHERE task_id = ?", (task_id,)).fetchone()
        return row[0] if row else None

    def counts(self) -> dict[str, int]:
        by_source = dict(self._con.execute("SELECT source, COUNT(*) FROM results GROUP BY source").fetchall())
        asks = self._con.execute("SELECT COUNT(*) FROM events WHERE kind = 'ask'").fetchone()[0]
        tells = self._con.execute("SELECT COUNT(*) FROM events WHERE kind = 'tell'").fetchone()[0]
        return {"asks": asks, "tells": tells, **{f"results_{k}": v for k, v in by_source.items()}}
