"""structlog set-up shared by every evovae process (head, workers, retraining pools).

The terminal (stderr): console lines when a person watches (stderr is a TTY), JSON lines otherwise or when
asked; both carry an ISO UTC timestamp, the level and the event name.

A head also keeps its log with the run, whatever the terminal shows (:func:`keep_logs`): JSON lines in
``RUN_DIR/logs/head.log`` at info (debug when ``--log-level debug``), rotated at :data:`LOG_FILE_BYTES` with
:data:`LOG_FILE_BACKUPS` older files (``head.log.1`` the newest of them), so a run's logs never grow past
about 80 MiB a file. The lines its local workers write pass through it (:class:`WorkerLines`): each into
``RUN_DIR/logs/worker-localN.log`` (rotated the same way), and to the terminal in the head's format, at the
head's level. While a live progress display runs, :func:`quiet_terminal` lets only warnings and errors
through to the terminal; the files keep everything.

A library call (evovae's Python API) sets structlog up the same way for its duration only
(:func:`call_logging`), and keeps its run's logs with :class:`RunLogs` too - also where the caller configured
structlog themselves: then a copy of each line their chain lets through goes into the file (their chain
otherwise untouched), and the local workers' warnings reach stderr as the workers write them.
"""
from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import structlog

__all__ = ["LOG_FILE_BACKUPS", "LOG_FILE_BYTES", "LOGS_DIR", "RunLogs", "WorkerLines", "call_logging", "configure",
           "configured_here", "file_level", "keep_logs", "quiet_terminal", "terminal_is_tty"]

#: A run directory's folder of log files: head.log, worker-local0.log, ... (and their rotated files).
LOGS_DIR = "logs"

#: A log file is rotated when it would grow past this many bytes ...
LOG_FILE_BYTES = 16 * 2**20
#: ... keeping this many older files (NAME.log.1 the newest): a file's lines take at most 5 x 16 MiB.
LOG_FILE_BACKUPS = 4

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
           "error": logging.ERROR, "exception": logging.ERROR, "critical": logging.CRITICAL}


def _level_of(name: str) -> int:
    numeric = logging.getLevelName(name.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {name!r}; use debug, info, warning or error")
    return numeric


class _LogFile(logging.handlers.RotatingFileHandler):
    """Appends lines to a file and rotates it (the standard library's handler: thread-safe). A file it cannot
    write (the disk full, the run directory read-only or removed) is said once, as a ``log_file.unwritable``
    warning on the terminal; its lines are dropped and the run goes on."""

    _failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if self._failed:
            return
        self._failed = True
        error = sys.exc_info()[1]
        outputs = _outputs
        if outputs is not None and outputs.terminal_level <= logging.WARNING:
            outputs.write(outputs.render({"path": self.baseFilename, "error": str(error) or type(error).__name__,
                                          "event": "log_file.unwritable", "level": "warning",
                                          "timestamp": _now()}))


def _now() -> str:
    """The time now as structlog's TimeStamper writes it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rotating(path: Path) -> logging.Handler:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # said at the first line it cannot write (handleError)
    return _LogFile(path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8", delay=True)


def _close(handler: logging.Handler) -> None:
    """Close a log file; one that cannot be flushed (the disk full) was said by its handleError already."""
    with contextlib.suppress(OSError, ValueError):
        handler.close()


def _append(handler: logging.Handler, line: str) -> None:
    handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))


class _Outputs:
    """Where this process's log lines go: the terminal (its format and level, raised while a live display
    runs) and the files :func:`keep_logs` added. The last processor of the structlog chain."""

    def __init__(self, stream: TextIO | None, json_lines: bool, level: int) -> None:
        self.stream = stream  # None: sys.stderr as it is at each write (a live display redirects it)
        self.json_lines = json_lines
        self.level = level
        self.quiet = logging.NOTSET
        self.files: list[logging.Handler] = []
        self.file_level = min(level, logging.INFO)
        self.lock = threading.Lock()  # one line at a time on the terminal, from every thread
        self._json = structlog.processors.JSONRenderer()
        self._console = structlog.dev.ConsoleRenderer(colors=False)

    @property
    def terminal_level(self) -> int:
        return max(self.level, self.quiet)

    def __call__(self, logger: object, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        level = _LEVELS.get(str(event_dict.get("level")), logging.INFO)
        json_line: str | None = None
        if self.files and level >= self.file_level:
            json_line = str(self._json(logger, method, dict(event_dict)))
            for handler in list(self.files):
                _append(handler, json_line)
        if level >= self.terminal_level:
            if self.json_lines:
                text = json_line if json_line is not None else str(self._json(logger, method, dict(event_dict)))
            else:
                text = str(self._console(logger, method, dict(event_dict)))
            self.write(text)
        raise structlog.DropEvent

    def write(self, text: str) -> None:
        """One line on the terminal, in one write."""
        with self.lock:
            stream = self.stream or sys.stderr
            stream.write(text + "\n")
            stream.flush()

    def render(self, record: dict[str, Any]) -> str:
        """Another process's record as this terminal shows lines."""
        return str((self._json if self.json_lines else self._console)(None, "", dict(record)))


_outputs: _Outputs | None = None


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None, **bind: object) -> None:
    """Configure structlog for this process; ``bind`` adds fields to every line (e.g. role, run_id).
    ``stream``: the terminal (default: ``sys.stderr`` as it is when a line is written)."""
    _install(fmt, level, stream, cache=True)
    structlog.contextvars.clear_contextvars()
    if bind:
        structlog.contextvars.bind_contextvars(**bind)


def _install(fmt: str, level: str, stream: TextIO | None, cache: bool) -> None:
    global _outputs
    if fmt not in ("auto", "console", "json"):
        raise ValueError(f"log format must be auto, console or json, got {fmt!r}")
    numeric = _level_of(level)
    json_lines = fmt == "json" or (fmt == "auto" and not (stream or sys.stderr).isatty())
    outputs = _outputs = _Outputs(stream, json_lines, numeric)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            outputs,
        ],
        # info passes the filter whatever the terminal's level: the run's log files keep it (keep_logs), and a
        # logger cached before a file was added still reaches it
        wrapper_class=structlog.make_filtering_bound_logger(outputs.file_level),
        logger_factory=structlog.ReturnLoggerFactory(),  # never called: the outputs write every line
        cache_logger_on_first_use=cache,
    )


@contextlib.contextmanager
def call_logging(level: str = "warning", fmt: str = "console") -> Iterator[None]:
    """structlog set up as :func:`configure` sets it up (stderr at ``level``, in ``fmt``; :func:`keep_logs` and
    :class:`RunLogs` reach it), for the duration of one library call in a process whose structlog nobody
    configured: no logger is cached and the context variables are left as they are; on the way out structlog
    is back to its defaults, so nothing of the call stays installed and the next call starts afresh."""
    global _outputs
    before = _outputs
    _install(fmt, level, None, cache=False)
    try:
        yield
    finally:
        structlog.reset_defaults()
        _outputs = before


def configured_here() -> bool:
    """Whether structlog's chain is the one this module installed (:func:`configure`, :func:`call_logging`),
    so that :func:`keep_logs` and :class:`WorkerLines` reach it; not when nobody configured structlog, or
    someone else did (a library's caller)."""
    processors = structlog.get_config()["processors"]
    return (structlog.is_configured() and _outputs is not None and isinstance(processors, Sequence)
            and bool(processors) and processors[-1] is _outputs)


def file_level(level: str) -> str:
    """The level of the run's log files for a command run at ``level``: info, or debug when asked (a local
    worker is started at it, so its file has its task lines whatever the terminal shows)."""
    return "debug" if _level_of(level) <= logging.DEBUG else "info"


def _current() -> _Outputs:
    if _outputs is None:
        configure()
    assert _outputs is not None
    return _outputs


def terminal_is_tty() -> bool:
    """Whether this process's log lines go to a terminal."""
    stream = _current().stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def keep_logs(log_dir: str | Path, name: str = "head") -> Callable[[], None]:
    """From now on also write this process's lines to ``LOG_DIR/NAME.log`` (JSON, rotated); returns the call
    that stops it and closes the file. Where someone else configured structlog (a library's caller), the lines
    their chain lets through (:class:`_FileTee`)."""
    if structlog.is_configured() and not configured_here():
        return _tee(_rotating(Path(log_dir) / f"{name}.log"))
    outputs = _current()
    handler = _rotating(Path(log_dir) / f"{name}.log")
    outputs.files.append(handler)

    def stop() -> None:
        if handler in outputs.files:
            outputs.files.remove(handler)
        _close(handler)

    return stop


class _FileTee:
    """The first processor of a structlog chain this module did not configure: each event, as this module's
    files keep lines (JSON, with its level, timestamp and the context variables), at info or above, into a
    log file; then ``first`` (the chain's own first processor) as before. Inert once closed."""

    def __init__(self, handler: logging.Handler, first: Any) -> None:
        self.handler = handler
        self.first = first  # None: the chain goes on with what comes after this
        self.open = True
        self._stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
        self._json = structlog.processors.JSONRenderer()

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        if self.open:
            record = structlog.contextvars.merge_contextvars(logger, method, dict(event_dict))
            record = structlog.processors.add_log_level(logger, method, record)
            if _LEVELS.get(str(record.get("level")), logging.INFO) >= logging.INFO:
                record = structlog.processors.format_exc_info(logger, method, self._stamp(logger, method, record))
                _append(self.handler, str(self._json(logger, method, record)))
        return event_dict if self.first is None else self.first(logger, method, event_dict)


def _tee(handler: logging.Handler) -> Callable[[], None]:
    """Put a :class:`_FileTee` writing into ``handler`` at the head of structlog's chain; returns the call that
    takes it out and closes the file. The chain's list is changed in one place (its first item), so loggers
    structlog cached with it reach the file too, and a line logged meanwhile in another thread goes through
    the chain as it was or as it is."""
    processors = structlog.get_config()["processors"]
    if isinstance(processors, list) and processors:
        tee = _FileTee(handler, processors[0])
        processors[0] = tee
    else:  # a tuple (or nothing): a new chain, until the stop
        tee = _FileTee(handler, None)
        structlog.configure(processors=[tee, *processors])

    def stop() -> None:
        tee.open = False
        chain = structlog.get_config()["processors"]
        if tee.first is None:
            if chain and chain[0] is tee:
                structlog.configure(processors=processors)
        elif isinstance(chain, list) and chain:
            if chain[0] is tee:
                chain[0] = tee.first
            else:  # a later tee wraps this one: unlink it
                node = chain[0]
                while isinstance(node, _FileTee):
                    if node.first is tee:
                        node.first = tee.first
                        break
                    node = node.first
        _close(handler)

    return stop


@contextlib.contextmanager
def quiet_terminal(level: str = "warning") -> Iterator[None]:
    """Only lines at ``level`` or above (or at the process's level, if higher) reach the terminal while
    inside; the files keep every line."""
    outputs = _current()
    before = outputs.quiet
    outputs.quiet = _level_of(level)
    try:
        yield
    finally:
        outputs.quiet = before


class WorkerLines:
    """The lines local worker processes write to their stderr (JSON, one record a line), as the head passes
    them on: each into ``LOG_DIR/worker-localSLOT.log`` (no file without ``log_dir``), and to the terminal as
    this process's own lines go (its format and level). A line that is no JSON record (a worker's
    ``evovae worker: error:`` line, a traceback) goes to the terminal as it is, whatever the level, and into
    the file as a ``worker.output`` record. Where someone else configured structlog (a library's caller), the
    lines at ``level`` or above go to stderr as the workers wrote them (JSON). Called from several threads."""

    def __init__(self, log_dir: str | Path | None, *, level: str = "warning") -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else None
        foreign = structlog.is_configured() and not configured_here()
        self._outputs = _Outputs(None, True, _level_of(level)) if foreign else _current()
        self._files: dict[int, logging.Handler] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _file(self, slot: int) -> logging.Handler | None:
        if self.log_dir is None:
            return None
        with self._lock:
            if self._closed:  # a line after the end: the terminal only
                return None
            handler = self._files.get(slot)
            if handler is None:
                handler = self._files[slot] = _rotating(self.log_dir / f"worker-local{slot}.log")
            return handler

    def __call__(self, slot: int, line: str) -> None:
        line = line.rstrip("\r\n")
        if not line.strip():
            return
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        handler = self._file(slot)
        if not (isinstance(record, dict) and isinstance(record.get("event"), str)):
            if handler is not None:
                _append(handler, json.dumps({"text": line, "slot": slot, "event": "worker.output", "role": "worker",
                                             "level": "warning", "timestamp": _now()}))
            self._outputs.write(line)
            return
        if handler is not None:
            _append(handler, line)
        outputs = self._outputs
        if _LEVELS.get(str(record.get("level")), logging.INFO) >= outputs.terminal_level:
            outputs.write(line if outputs.json_lines else outputs.render(record))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for handler in self._files.values():
                _close(handler)
            self._files.clear()


class RunLogs:
    """The logs a command keeps in its run directory, ``RUN_DIR/logs/``: this process's lines in ``head.log``
    and its local workers' (``workers``: a Cluster's ``worker_output``) in ``worker-localN.log``, from now on.
    ``close()`` stops it; ``close(remove=True)`` also removes the folder if this made it (a start refused
    before anything ran leaves nothing behind). ``level``: :class:`WorkerLines`' where structlog is someone
    else's."""

    def __init__(self, run_dir: str | Path, name: str = "head", *, level: str = "warning") -> None:
        self.path = Path(run_dir) / LOGS_DIR
        self.made = not self.path.exists()
        self._stop = keep_logs(self.path, name)
        self.workers = WorkerLines(self.path, level=level)

    def close(self, remove: bool = False) -> None:
        self._stop()
        self.workers.close()
        if remove and self.made:
            for path in sorted(self.path.glob("*"), reverse=True):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.rmdir()
