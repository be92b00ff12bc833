"""SQLite helpers shared by the run journal and the result cache: connections (WAL), format checks with the
migration from format version 1, and evaluations as rows."""
from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from ..evaluation import EvalState, Evaluation
from ..genotype import parse_genotype

__all__ = ["RESULT_COLUMNS", "JournalError", "VERSION", "check_format", "connect", "evaluation_of_row",
           "row_of", "select_many"]

VERSION = 2

#: the columns of a result row, after ``task_id`` (the journal adds ``source``)
RESULT_COLUMNS = "genotype, loss, error, metrics, state, epochs, seconds, worker_key"

#: format 1 -> 2: the columns after ``at`` were added
_MIGRATION_1_TO_2 = [
    "ALTER TABLE results ADD COLUMN state TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE results ADD COLUMN epochs INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE results ADD COLUMN seconds REAL NOT NULL DEFAULT 0",
    "ALTER TABLE results ADD COLUMN worker_key TEXT",
]


class JournalError(RuntimeError):
    """A run directory or cache that cannot be used as asked (and was left unchanged)."""


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    con = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0)
    if not readonly:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process crash
    return con


def check_format(path: Path, fmt: str, what: str) -> dict[str, str]:
    """Read-only check that ``path`` is an evovae database of kind ``fmt`` and a version this code reads."""
    try:
        con = connect(path, readonly=True)
        try:
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"{path} is not an evovae {what} ({exc}); nothing was changed") from None
    if meta.get("format") != fmt:
        raise JournalError(f"{path} is a database of format {meta.get('format')!r}, not {fmt!r}; nothing was changed")
    if meta.get("version") not in ("1", str(VERSION)):
        raise JournalError(f"{path} has format version {meta.get('version')}, this evovae reads 1 and {VERSION}")
    return meta


def migrate(con: sqlite3.Connection, meta: dict[str, str]) -> None:
    """Bring a format-1 database to format 2 (new result columns; old rows keep their values)."""
    if meta.get("version") == "1":
        with con:
            con.execute("BEGIN")
            for statement in _MIGRATION_1_TO_2:
                con.execute(statement)
            con.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(VERSION),))


def _jsonable(metrics: Any) -> str:
    return json.dumps(dict(metrics), default=lambda o: list(o) if isinstance(o, tuple) else str(o))


def row_of(task_id: str, e: Evaluation, worker_key: str | None = None) -> dict[str, Any]:
    return {"task_id": task_id, "genotype": str(e.genotype), "loss": e.loss, "error": e.error,
            "metrics": _jsonable(e.metrics), "state": e.state.value, "epochs": e.epochs,
            "seconds": e.seconds if math.isfinite(e.seconds) else 0.0, "worker_key": worker_key}


def evaluation_of_row(genotype: str, loss: float | None, error: str, metrics: str, state: str, epochs: int,
                      seconds: float, worker_key: str | None = None) -> Evaluation:
    data = json.loads(metrics)
    if not state:  # a row of format 1
        state = "ok" if loss is not None else ("lost" if data.get("gave_up") else "failed")
    return Evaluation(parse_genotype(genotype), loss, error, data, EvalState(state), epochs, seconds)


def select_many(con: sqlite3.Connection, task_ids: Iterable[str]) -> dict[str, Evaluation]:
    """The rows among ``task_ids`` (one query per 500 ids), in the order they were recorded: a resumed head
    tells results it had received but not told in the order they arrived."""
    task_ids = list(task_ids)
    rows = []
    for start in range(0, len(task_ids), 500):
        chunk = task_ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        rows += con.execute(f"SELECT rowid, task_id, {RESULT_COLUMNS} FROM results WHERE task_id IN ({marks})",
                            chunk).fetchall()
    return {row[1]: evaluation_of_row(*row[2:]) for row in sorted(rows)}
