"""SQLite helpers shared by the run journal and the result cache: connections (WAL), format checks with the
migration from format version 1, and evaluations as rows."""
from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..evaluation import EvalState, Evaluation
from ..genotype import parse_genotype
from ..measurement import Measurement

__all__ = ["RESULT_COLUMNS", "JournalError", "StorageError", "VERSION", "check_format", "connect", "evaluation_of_row",
           "migrate", "row_of", "select_many", "writing"]

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
    """A run directory or cache that cannot be used as asked (and was left unchanged). ``option``: the
    search option the refusal concerns (``"generations"``, ``"cache"``), when one does, so a command line can
    name its flag without reading the message; None otherwise."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class StorageError(RuntimeError):
    """A journal, cache or result file that could not be written while a search ran (a full disk, an I/O
    error, a file made read-only): ``path`` is what failed. Every write is its own transaction, so what was
    written before is consistent and a resume continues from it."""

    def __init__(self, path: Path, what: str, error: BaseException) -> None:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        super().__init__(f"cannot write {what} {path} ({reason})")
        self.path = path


@contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """Turn a failed write to ``path`` (SQLite's or the file system's) into a :class:`StorageError`."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(path, what, exc) from exc


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
        if "readonly" in str(exc) or not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
            raise JournalError(f"cannot write the {what} {path} ({exc}): run as a user who may write "
                               f"{path.parent} and the files in it") from None
        raise JournalError(f"{path} is not an evovae {what} ({exc}); nothing was changed") from None
    if meta.get("format") != fmt:
        raise JournalError(f"{path} is a database of format {meta.get('format')!r}, not {fmt!r}; nothing was changed")
    if meta.get("version") not in ("1", str(VERSION)):
        raise JournalError(f"{path} has format version {meta.get('version')}, this evovae reads 1 and {VERSION}")
    return meta


def migrate(con: sqlite3.Connection, meta: dict[str, str], epochs: int | None = None) -> None:
    """Bring a format-1 database to format 2, once, in one transaction: the new result columns, each old row's
    state (ok with a loss; lost where the transport gave up, ``metrics['gave_up']``; else failed) and epochs.

    ``epochs``: the one fidelity of a format-1 run (a journal's configured epochs): its results and its asks
    (bare genotypes then, ``GENOTYPE@EPOCHS`` now) get it. Without it (a cache, whose rows are keyed by task
    id alone) a row's epochs come from the trainer's own count of a successful run; a row that does not say
    is dropped, to be measured again, rather than guessed."""
    if meta.get("version") != "1":
        return
    with con:
        con.execute("BEGIN")
        for statement in _MIGRATION_1_TO_2:
            con.execute(statement)
        for task_id, loss, metrics in con.execute("SELECT task_id, loss, metrics FROM results").fetchall():
            data = json.loads(metrics)
            state = "ok" if loss is not None else ("lost" if data.get("gave_up") else "failed")
            trained = data.get("epochs")
            fidelity = epochs if epochs is not None else (trained if state == "ok" and type(trained) is int
                                                          and trained > 0 else None)
            if fidelity is None:
                con.execute("DELETE FROM results WHERE task_id = ?", (task_id,))
                continue
            seconds = data.get("seconds")
            seconds = float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) else 0.0
            con.execute("UPDATE results SET state = ?, epochs = ?, seconds = ? WHERE task_id = ?",
                        (state, fidelity, max(0.0, seconds), task_id))
        if epochs is not None and _has_table(con, "events"):
            for seq, genotypes in con.execute("SELECT seq, genotypes FROM events WHERE kind = 'ask'").fetchall():
                asked = [text if "@" in text else f"{text}@{epochs}" for text in json.loads(genotypes)]
                con.execute("UPDATE events SET genotypes = ? WHERE seq = ?", (json.dumps(asked), seq))
        con.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(VERSION),))


def _has_table(con: sqlite3.Connection, name: str) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def row_of(task_id: str, e: Evaluation, worker_key: str | None = None) -> dict[str, Any]:
    figures = e.measurement.to_dict()
    if e.attempts:
        figures["attempts"] = e.attempts
    return {"task_id": task_id, "genotype": str(e.genotype), "loss": e.loss, "error": e.error,
            "metrics": json.dumps(figures), "state": e.state.value, "epochs": e.epochs,
            "seconds": e.seconds, "worker_key": worker_key}


def evaluation_of_row(genotype: str, loss: float | None, error: str, metrics: str, state: str, epochs: int,
                      seconds: float, worker_key: str | None = None) -> Evaluation:
    data = json.loads(metrics)
    measurement = Measurement.from_dict(data)
    if not measurement.seconds and seconds:
        measurement = replace(measurement, seconds=seconds)
    attempts = data.get("attempts")
    return Evaluation(parse_genotype(genotype), loss, epochs=epochs, error=error, state=EvalState(state),
                      measurement=measurement, attempts=attempts if type(attempts) is int else 0)


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
