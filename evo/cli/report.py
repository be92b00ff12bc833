"""``evovae report RUN_DIR``: report.md with its figures for any search's run directory
(evo/experiments/run_report.py does the work; docs/report.md)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="evovae report", description=(
        "Write report.md with PNG figures for a search's run directory: the best so far against epochs and time, "
        "the top 10, learning curves of the best, loss against parameters with the Pareto front, parameter "
        "importance, and the workers' timeline from the run's logs. Reads the run without writing into it "
        "(only into the report folder); works on finished, stopped, resumed and still running searches."))
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the search's run directory (it holds journal.sqlite)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="where to write report.md and the PNGs (default RUN_DIR/report)")
    parser.add_argument("--top", type=_top, default=8, metavar="N",
                        help="learning curves of the N best at the final fidelity (1 to 20, default 8)")
    return parser


def _top(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 20:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 20")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``evovae report RUN_DIR [--out DIR] [--top N]``; 2 for a directory that is not a run or holds nothing."""
    args = _parser().parse_args(argv)
    from ..cmdline.log_setup import configure
    from ..experiments.run_report import ReportError, write_report

    configure("auto", "warning", role="report")  # replaying a journal logs at info: not wanted here
    try:
        path = write_report(args.run_dir, args.out, top=args.top)
    except ReportError as exc:
        print(f"evovae report: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = exc.filename or args.out or args.run_dir
        print(f"evovae report: error: cannot write the report in {where} ({exc.strerror or exc}); "
              "give another folder with --out DIR", file=sys.stderr)
        return 2
    figures = sorted(p.name for p in path.parent.glob("*.png"))
    print(f"wrote {path}" + (f" with {', '.join(figures)}" if figures else ""))
    return 0
