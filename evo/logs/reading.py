"""Reading evovae's log lines back: JSON lines, ``.gz`` files, standard input and journald's output forms.

Input, any mix:

* the JSON lines evovae writes with ``--log-format json`` (one object per line with ``event``, ``level``,
  ``timestamp`` and the bound fields);
* ``journalctl -o json``: one object per line whose ``MESSAGE`` holds our line (``_HOSTNAME``,
  ``_SYSTEMD_UNIT`` and ``__REALTIME_TIMESTAMP`` are kept);
* ``journalctl -o cat`` / ``-o short`` / ``-o short-iso``: a prefix, then our line;
* several objects glued on one line (two processes writing to one stderr);
* anything else (progress lines, console-format logs, a half-written last line): counted as ignored,
  never an error.

A run directory may be given instead of files: its ``logs/`` folder's ``*.log`` files and their rotated older
files (``head.log.1`` ...), where ``evovae search`` and the experiments keep the head's and the local workers'
lines (a search inside an experiment, ``EXP/searches/NAME``: the experiment's ``EXP/logs/``).
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

__all__ = ["COMMON_FIELDS", "LOGS_DIR", "LogError", "Logs", "Record", "iso", "log_files", "parse_line", "parse_time",
           "read_logs"]

#: The folder of a run directory that holds its log files (evo.cmdline.log_setup keeps them there).
LOGS_DIR = "logs"

_LOG_FILE = re.compile(r"^(?P<base>.+\.log)(?:\.(?P<n>\d+))?(?P<gz>\.gz)?$")

#: Fields every line has; not repeated when a line is shown in a trace.
COMMON_FIELDS = ("event", "level", "timestamp", "role")

#: Events only a worker process writes (used when a line carries no ``role``).
WORKER_ONLY_EVENTS = frozenset({
    "channel.connected", "channel.closed", "worker.started", "worker.stopped", "worker.signal", "worker.unfit",
    "task.received", "task.finished", "task.abandoned", "task.error", "result.sent", "result.unsent",
    "ready.skipped", "heartbeat.error",
})

_DECODER = json.JSONDecoder()


class LogError(Exception):
    """A log file that cannot be read: one line, exit status 2."""


@dataclass(frozen=True)
class Record:
    """One evovae log line, with where it came from."""

    fields: dict[str, Any]
    time: float  # Unix seconds (from ``timestamp``, else journald's time, else the line before)
    source: str  # "file:line"
    order: int  # position in the input, for a stable sort
    host: str | None = None  # journald's _HOSTNAME
    unit: str | None = None  # journald's _SYSTEMD_UNIT

    @property
    def event(self) -> str:
        event = self.fields.get("event", "")
        return event if isinstance(event, str) else ""

    @property
    def role(self) -> str:
        """``search`` (the head), ``worker``, or whatever the line says."""
        role = self.fields.get("role")
        if isinstance(role, str) and role:
            return role
        if self.event in WORKER_ONLY_EVENTS or (self.event == "frame.rejected" and "worker_id" in self.fields):
            return "worker"
        return "search"

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


@dataclass(frozen=True)
class Logs:
    """Every record read, in time order, and what was read."""

    records: tuple[Record, ...]
    files: tuple[str, ...]
    lines: int = 0
    ignored: int = 0


def parse_time(value: Any) -> float | None:
    """An ISO 8601 timestamp (``Z`` or an offset; naive means UTC) as Unix seconds, else None."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def iso(t: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with milliseconds (``...T04:14:28.414Z``); None for no time."""
    if t is None or not math.isfinite(t):
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_record(obj: Any) -> bool:
    return (isinstance(obj, dict) and isinstance(obj.get("event"), str)
            and ("timestamp" in obj or "level" in obj))


def _journal_message(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", errors="replace")  # journald's form of non-UTF-8 text
    return None


def parse_line(text: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The evovae records in one line of text: ``[(fields, envelope), ...]``.

    ``envelope`` holds journald's metadata when the line was a ``journalctl -o json`` entry
    (``_HOSTNAME``, ``_SYSTEMD_UNIT``, ``__REALTIME_TIMESTAMP``), else is empty. Text before the first
    ``{`` (a journal or syslog prefix) is skipped; several objects on one line are all read; a line with
    none gives ``[]``.
    """
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = _DECODER.raw_decode(text, pos)
        except ValueError:  # not JSON here (console text, a cut line): try the next brace
            pos = text.find("{", pos + 1)
            continue
        if _is_record(obj):
            out.append((obj, {}))
        elif isinstance(obj, dict) and "MESSAGE" in obj:
            message = _journal_message(obj["MESSAGE"])
            if message is not None:
                envelope = {k: obj[k] for k in ("_HOSTNAME", "_SYSTEMD_UNIT", "__REALTIME_TIMESTAMP", "_PID")
                            if k in obj}
                out.extend((fields, envelope) for fields, _ in parse_line(message))
        pos = text.find("{", end)
    return out


@contextlib.contextmanager
def _opened(path: str, stdin: TextIO | None) -> Iterator[Iterable[str]]:
    """The lines of one input, closed on leaving (standard input is left open)."""
    if path == "-":
        yield stdin if stdin is not None else sys.stdin
        return
    # SIM115: the with below closes the handle (the try around the opening only turns its errors into LogError)
    handle: TextIO
    try:
        if path.endswith(".gz"):
            handle = io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")  # noqa: SIM115
        else:
            handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except FileNotFoundError:
        raise LogError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise LogError(f"{path} is a directory (give the log files in it)") from None
    except OSError as exc:
        raise LogError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        yield handle


def _time_of(fields: dict[str, Any], envelope: dict[str, Any], previous: float) -> float:
    """The line's own timestamp, else journald's, else the previous line's."""
    moment = parse_time(fields.get("timestamp"))
    if moment is None and "__REALTIME_TIMESTAMP" in envelope:
        try:
            moment = int(envelope["__REALTIME_TIMESTAMP"]) / 1e6
        except (TypeError, ValueError):
            moment = None
    return previous if moment is None else moment


@dataclass
class _Reader:
    """Accumulates the records of several inputs."""

    records: list[Record]
    lines: int = 0
    ignored: int = 0

    def read(self, path: str, lines: Iterable[str]) -> None:
        last_time = -math.inf
        for number, line in enumerate(lines, 1):
            self.lines += 1
            found = parse_line(line)
            if not found:
                self.ignored += bool(line.strip())
                continue
            for fields, envelope in found:
                last_time = _time_of(fields, envelope, last_time)
                self.records.append(Record(fields, last_time, f"{path}:{number}", len(self.records),
                                           envelope.get("_HOSTNAME"), envelope.get("_SYSTEMD_UNIT")))


def _logs_folder(directory: Path) -> Path:
    """Where the log files of ``directory`` are: its ``logs/`` (a run directory), the experiment's for a search
    inside one, or the folder itself (``RUN_DIR/logs`` given)."""
    if (directory / LOGS_DIR).is_dir():
        return directory / LOGS_DIR
    if directory.parent.name in ("searches", "tasks") and (directory.parent.parent / LOGS_DIR).is_dir():
        return directory.parent.parent / LOGS_DIR
    return directory


def log_files(directory: str | Path) -> list[str]:
    """The log files of a run directory (see :func:`_logs_folder`): every ``*.log`` and its rotated files
    (``NAME.log.N``, ``.gz`` too), each file's oldest first. LogError when there are none."""
    folder = _logs_folder(Path(directory))
    found = []
    for path in folder.iterdir() if folder.is_dir() else ():
        match = _LOG_FILE.match(path.name)
        if match and path.is_file():
            found.append((match["base"], -int(match["n"] or 0), str(path)))
    if not found:
        raise LogError(f"{directory} holds no log files (a run keeps them in RUN_DIR/{LOGS_DIR}/*.log; a run made "
                       "before evovae kept them has none there: give the files its stderr went to)")
    return [path for _, _, path in sorted(found)]


def _expand(paths: Sequence[str]) -> list[str]:
    """``paths`` with each directory replaced by its log files (:func:`log_files`), each file read once."""
    out: list[str] = []
    for path in paths:
        for file in log_files(path) if path != "-" and Path(path).is_dir() else [path]:
            if file not in out or file == "-":
                out.append(file)
    return out


def read_logs(paths: Sequence[str], stdin: TextIO | None = None) -> Logs:
    """Read and merge the records of ``paths`` (``-`` is standard input; a directory: its log files,
    :func:`log_files`) in time order.

    Raises LogError naming the first file that is missing or unreadable, before reading any.
    """
    paths = _expand(paths)
    for path in paths:
        if path != "-":
            with _opened(path, stdin):  # fail fast, before reading anything
                pass
    reader = _Reader(records=[])
    for path in paths:
        with _opened(path, stdin) as lines:
            try:
                reader.read(path, lines)
            except (OSError, EOFError) as exc:  # a truncated .gz, an I/O error mid-file
                raise LogError(f"cannot read {path}: {exc}") from None
    records = sorted(reader.records, key=lambda r: (r.time, r.order))
    return Logs(records=tuple(records), files=tuple(paths), lines=reader.lines, ignored=reader.ignored)
