"""structlog set-up shared by every evovae process (head, workers, retraining pools).

Console lines when a person watches (stderr is a TTY), JSON lines otherwise or
when asked; both carry an ISO UTC timestamp, the level and the event name.
"""
from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ["configure"]


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None, **bind: object) -> None:
    """Configure structlog for this process; ``bind`` adds fields to every line (e.g. role, run_id)."""
    stream = stream or sys.stderr
    if fmt not in ("auto", "console", "json"):
        raise ValueError(f"log format must be auto, console or json, got {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    json_lines = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # one write per line: lines of processes sharing a pipe never interleave
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    if bind:
        structlog.contextvars.bind_contextvars(**bind)
