"""What the library writes while it works: nothing on stdout, unless asked; and a search's logs, kept with its run.

evovae logs with structlog, whose default (no configuration) prints every event - every epoch of every
training run - on stdout. The API's calls run inside :func:`library_logging`: unless the caller configured
structlog themselves (then their configuration holds), structlog is set up for the call to write to stderr,
warnings and errors only, or with ``verbose=True`` every event at info level, and put back to its defaults
afterwards (evo.cmdline.log_setup.call_logging). Nothing is cached, so the next call may choose differently.

A search keeps its logs in its run directory as ``evovae search`` does (:func:`run_logs`): every line at info
or above in ``RUN_DIR/logs/head.log``, each local worker's in ``worker-localN.log`` (JSON, rotated; a resume
appends), whatever reaches the terminal; the files are closed and nothing of them stays installed when the
call returns.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from evo.cmdline.log_setup import RunLogs, call_logging

__all__ = ["library_logging", "pythonic", "run_logs"]


@contextmanager
def library_logging(verbose: bool = False) -> Iterator[None]:
    """structlog for the duration of one API call (see the module's docstring)."""
    if structlog.is_configured():  # the caller's own set-up, or an enclosing API call's
        yield
        return
    with call_logging("info" if verbose else "warning", fmt="console"):
        yield


def run_logs(run_dir: Path, verbose: bool = False) -> RunLogs:
    """The logs of a search in ``run_dir`` (inside :func:`library_logging`): ``RUN_DIR/logs/head.log`` from now
    on, and ``workers`` (a Cluster's ``worker_output``) for the local workers' files; their lines reach the
    terminal at the call's level. ``close()`` it. Where the caller configured structlog, head.log holds the
    lines their configuration lets through, and the workers' warnings (everything with ``verbose``) reach
    stderr as the workers write them."""
    return RunLogs(run_dir, level="info" if verbose else "warning")


_FLAG = re.compile(r"--([a-z][a-z0-9-]*)(?:[ =]([^\s;,)]+(?:,[^\s;,)]+)*))?")


def pythonic(message: str, *, names: dict[str, str] | None = None) -> str:
    """A message written for the command line, in the words of the Python API: ``--val-size 40`` becomes
    ``val_size=40``, ``--columns`` ``columns``; each ``names`` key (e.g. a temporary path) its value."""
    for old, new in (names or {}).items():
        message = message.replace(old, new)

    def parameter(match: re.Match[str]) -> str:
        name = match.group(1).replace("-", "_")
        value = match.group(2)
        if value is None:
            return name
        if value in ("NAME,NAME,...", "A,B,..."):
            return f"{name}=[...]"
        if value == "H,W":
            return f"{name}=(H, W)"
        try:
            float(value)
        except ValueError:
            return f"{name}={value!r}" if value.isidentifier() else f"{name}={value}"
        return f"{name}={value}"

    return _FLAG.sub(parameter, message)
