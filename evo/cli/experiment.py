"""``evovae experiment paper``: the command line of :mod:`gpuworker.experiment`."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from ..spec import DATASETS

from ..experiments.paper import PRESETS, ExperimentConfig, run_paper

__all__ = ["main"]


def _epochs_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs like 2,5, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number of epochs")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evovae experiment", description="Reproduce the paper's experiments.")
    sub = parser.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    paper = sub.add_parser(
        "paper", help="2- vs 5-epoch evolutionary searches, baselines, Table I, Figs. 2-5 -> RUN_DIR/report.md",
        description="Run the paper's experiments on one data set and write RUN_DIR/report.md + results.json.")
    paper.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    paper.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                       help="; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values()))
    paper.add_argument("--out", default=None, metavar="RUN_DIR",
                       help="output directory (default runs/paper-DATASET-PRESET-TIMESTAMP)")
    paper.add_argument("--force", action="store_true", help="write into RUN_DIR even if it holds a report")
    paper.add_argument("--seed", type=int, default=0, help="seed of the searches and of every training run")
    paper.add_argument("--split-seed", type=int, default=0)
    paper.add_argument("--local-workers", type=int, default=2, metavar="N",
                       help="worker processes (and retraining processes) on this machine (default 2)")
    paper.add_argument("--data-root", default=None)
    paper.add_argument("--download", action="store_true")
    paper.add_argument("--device", default=None, help="torch device of the workers (default: cuda if available)")
    o = paper.add_argument_group("overrides of the preset")
    o.add_argument("--population", type=int)
    o.add_argument("--offspring", type=int)
    o.add_argument("--generations", type=int)
    o.add_argument("--train-subset", type=int, metavar="N")
    o.add_argument("--val-size", type=int)
    o.add_argument("--search-epochs", type=_epochs_list, metavar="E,E", help="e.g. 2,5")
    o.add_argument("--random-epochs", type=_epochs_list, metavar="E[,E]")
    o.add_argument("--random-seeds", type=int)
    o.add_argument("--retrain-epochs", type=int)
    o.add_argument("--manifold-epochs", type=int)
    paper.add_argument("--log-format", default="auto", choices=("auto", "console", "json"))
    paper.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    return parser


_OVERRIDES = ("population", "offspring", "generations", "train_subset", "val_size", "search_epochs", "random_epochs",
              "random_seeds", "retrain_epochs", "manifold_epochs")


def main(argv: Sequence[str] | None = None) -> int:
    """``evovae experiment paper ...``; returns the exit status."""
    args = _parser().parse_args(argv)
    from .log_setup import configure

    configure(args.log_format, args.log_level, role="experiment")
    prog = "evovae experiment"
    changes = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    try:
        preset = replace(PRESETS[args.preset], **changes)
        config = ExperimentConfig(preset, dataset=args.dataset, seed=args.seed, split_seed=args.split_seed)
        if args.local_workers < 1:
            raise ValueError("--local-workers must be >= 1")
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(args.out or f"runs/paper-{args.dataset}-{preset.name}-{stamp}")
    if (run_dir / "results.json").exists() and not args.force:
        print(f"{prog}: error: {run_dir} already holds a report; pick another --out or pass --force", file=sys.stderr)
        return 2

    from gpuworker.data import DataError

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        run_paper(config, run_dir, local_workers=args.local_workers, data_root=args.data_root,
                  download=args.download, device=args.device, stop=stop,
                  echo=lambda line: print(line, flush=True),
                  log_format="json" if args.log_format == "auto" else args.log_format, log_level=args.log_level)
    except DataError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from ..head.evaluators import SearchStopped

        if isinstance(exc, SearchStopped) and received:
            print(f"{prog}: stopped by {signal.Signals(received[0]).name}: {exc}", file=sys.stderr)
            return 128 + received[0]
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
