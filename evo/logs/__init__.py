"""Log analysis: read the JSON logs of a search back - a summary of the run, or the story of one task
across the head's and the workers' logs.

Pure: the standard library only (no zmq, no torch, no numpy, no structlog), so it runs on any machine
that has the log files, e.g. a laptop with logs copied off a cluster.

=============  ================================================================================
module         what it holds
=============  ================================================================================
reading        Record and Logs; parsing JSON lines, ``.gz`` files and journald's output forms
accounting     the per-event tallies: event name -> handler tables, who counts as a worker
summary        ``summarize``: the tallies as one JSON-ready dict
trace          ``trace``: the records about one task or genotype
render         text for people: ``format_summary``, ``format_trace``
command        the command line, ``evovae logs summarize|trace`` and ``python -m evo.logs``
=============  ================================================================================

docs/logging.md has the schema.
"""
from __future__ import annotations

from .reading import LogError, Logs, Record, parse_line, read_logs
from .render import format_summary, format_trace
from .summary import summarize
from .trace import trace

__all__ = ["LogError", "Logs", "Record", "format_summary", "format_trace", "parse_line", "read_logs", "summarize",
           "trace"]
