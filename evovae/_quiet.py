"""What the library writes while it works: nothing on stdout, unless asked.

evovae logs with structlog, whose default (no configuration) prints every event - every epoch of every
training run - on stdout. The API's calls run inside :func:`library_logging`: unless the caller configured
structlog themselves (then their configuration holds), structlog is set up for the call to write to stderr,
warnings and errors only, or with ``verbose=True`` every event at info level, and put back to its defaults
afterwards. Nothing is cached, so the next call may choose differently.
"""
from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

__all__ = ["library_logging", "pythonic"]


@contextmanager
def library_logging(verbose: bool = False) -> Iterator[None]:
    """structlog for the duration of one API call (see the module's docstring)."""
    if structlog.is_configured():  # the caller's own set-up, or an enclosing API call's
        yield
        return
    level = logging.INFO if verbose else logging.WARNING
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.reset_defaults()


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
