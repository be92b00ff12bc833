"""``evovae logs summarize|trace`` and ``python -m evo.logs``: the command line of the log tools, standard
library only like the rest of evo/logs (``evovae logs`` delegates here, evo/cli/app.py)."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from . import LogError, Logs, format_summary, format_trace, read_logs, summarize, trace

__all__ = ["build_parser", "main"]


def _bucket(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line on stderr, exit status 2
        self.exit(2, f"{self.prog}: error: {message} (see evovae logs --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="evovae logs", description="Read evovae's JSON logs (a run directory: the files it keeps in "
                                        "RUN_DIR/logs/; or files, journalctl -o json/cat/short, '-' for standard "
                                        "input).")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    summary = sub.add_parser("summarize", help="per-worker busy/idle time, head and broker counters, rejected "
                                               "senders, throughput, best loss per generation")
    summary.add_argument("files", nargs="+", metavar="RUN_DIR|FILE",
                         help="run directories (their logs/*.log, rotated files included) or log files ('-' for "
                              "standard input, .gz read)")
    summary.add_argument("--json", action="store_true", help="print one JSON object")
    summary.add_argument("--bucket", type=_bucket, default=60.0, metavar="SECONDS",
                         help="throughput bucket width (default 60)")
    tr = sub.add_parser("trace", help="every line about one task, across the head's and workers' logs, in time order")
    tr.add_argument("task", metavar="TASK_ID",
                    help="a task id, a unique prefix of one (>= 6 characters), or a genotype")
    tr.add_argument("files", nargs="+", metavar="RUN_DIR|FILE",
                    help="run directories (their logs/*.log, rotated files included) or log files ('-' for standard "
                         "input, .gz read)")
    tr.add_argument("--json", action="store_true", help="print the matching records as JSON lines")
    return parser


def _summarize(args: argparse.Namespace, logs: Logs, stdout: TextIO) -> int:
    summary = summarize(logs, args.bucket)
    stdout.write((json.dumps(summary, indent=2) if args.json else format_summary(summary)) + "\n")
    return 0 if summary["records"] else 1


def _trace(args: argparse.Namespace, logs: Logs, stdout: TextIO, stderr: TextIO) -> int:
    found = trace(logs, args.task)
    if not found:
        stderr.write(f"evovae logs: no lines about task {args.task} in {len(logs.files)} file(s) "
                     f"({len(logs.records)} records read)\n")
        return 1
    if args.json:
        for r in found:
            stdout.write(json.dumps({**r.fields, "_source": r.source, **({"_host": r.host} if r.host else {}),
                                     **({"_unit": r.unit} if r.unit else {})}) + "\n")
        return 0
    ids = sorted({r.get("task_id") for r in found})
    if len(ids) > 1 or ids[0] != args.task:
        stdout.write(f"# tasks: {', '.join(ids)}\n")
    stdout.write(format_trace(found) + "\n")
    return 0


def _run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, stdin: TextIO | None) -> int:
    if args.files.count("-") > 1:
        stderr.write("evovae logs: error: '-' (standard input) may be given once\n")
        return 2
    try:
        logs = read_logs(args.files, stdin)
    except LogError as exc:
        stderr.write(f"evovae logs: error: {exc}\n")
        return 2
    if args.action == "summarize":
        return _summarize(args, logs, stdout)
    return _trace(args, logs, stdout, stderr)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
         stdin: TextIO | None = None) -> int:
    """``evovae logs summarize|trace ...``: 0 done, 1 nothing found, 2 bad usage or a missing file."""
    args = build_parser().parse_args(argv)
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        return _run(args, stdout, stderr, stdin)
    except BrokenPipeError:  # e.g. `evovae logs trace ... | head`
        try:  # so the interpreter's last flush of stdout does not complain again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
