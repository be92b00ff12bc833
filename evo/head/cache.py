"""The result cache (``--cache PATH``), shared across runs: evaluations keyed by task id, which is derived from
the genotype and the whole training spec (data set, split, epochs, batch size, learning rate, seed, trainer
version), so a result is only ever reused for exactly the same training run."""
from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from ..evaluation import EvalState, Evaluation
from .store import VERSION, check_format, connect, migrate, row_of, select_many, writing

__all__ = ["CACHE_FORMAT", "ResultCache"]

CACHE_FORMAT = "evovae-cache"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY, genotype TEXT NOT NULL, loss REAL, error TEXT NOT NULL, metrics TEXT NOT NULL,
    at REAL NOT NULL, state TEXT NOT NULL DEFAULT '', epochs INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0, worker_key TEXT
);
"""


class ResultCache:
    """Evaluations shared across runs, keyed by content-derived task id."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            meta = check_format(self.path, CACHE_FORMAT, "result cache")
            self._con = connect(self.path)
            migrate(self._con, meta)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = connect(self.path)
            self._con.executescript(_SCHEMA)
            with self._con:
                self._con.execute("BEGIN")
                self._con.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                      [("format", CACHE_FORMAT), ("version", str(VERSION))])
        self.hits = 0

    def get(self, task_id: str) -> Evaluation | None:
        return self.get_many([task_id]).get(task_id)

    def get_many(self, task_ids: list[str]) -> dict[str, Evaluation]:
        found = select_many(self._con, task_ids)
        self.hits += len(found)
        return found

    def put(self, items: Iterable[tuple[str, Evaluation]]) -> None:
        """Store evaluations; only those a worker measured (a loss, or a training failure such as divergence),
        never a lost one (a transport give-up says nothing about the genotype)."""
        rows = [row_of(tid, e) for tid, e in items if e.state is not EvalState.LOST]
        if rows:
            with writing(self.path, "the cache"), self._con:
                self._con.execute("BEGIN")
                self._con.executemany(
                    "INSERT OR IGNORE INTO results (task_id, genotype, loss, error, metrics, at, state, epochs, "
                    "seconds, worker_key) VALUES (:task_id, :genotype, :loss, :error, :metrics, :at, :state, "
                    ":epochs, :seconds, :worker_key)", [{**r, "at": time.time()} for r in rows])

    def close(self) -> None:
        self._con.close()
