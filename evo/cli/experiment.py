"""``evovae experiment paper`` (the paper's experiments, :mod:`evo.experiments.paper`) and
``evovae experiment compare`` (strategies at equal compute, :mod:`evo.cli.compare`)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from ..experiments.presets import DATA_FIELDS, PRESETS, ExperimentConfig
from .data_options import add_data_options, check_split, data_fields
from .distribution import add_distribution_options, cluster_options

__all__ = ["main"]

PROG = "evovae experiment"

#: preset fields that may be overridden on the command line
_OVERRIDES = ("population", "offspring", "generations", "train_subset", "val_size", "search_epochs", "random_epochs",
              "random_seeds", "retrain_epochs", "manifold_epochs")
#: what defines an experiment: taken from RUN_DIR/experiment.json by --resume, so not to be given with it
_DEFINING = ("dataset", "columns", "image_size", "likelihood", "preset", "seed", "split_seed", *_OVERRIDES)


def _epochs_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs like 2,5, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number of epochs")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Reproduce the paper's experiments; compare strategies.")
    sub = parser.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    sub.add_parser("compare", add_help=False, help="strategies against each other at equal compute, over seeds "
                                                   "(evovae experiment compare --help)")
    paper = sub.add_parser(
        "paper", help="2- vs 5-epoch evolutionary searches, baselines, Table I, Figs. 2-5 -> RUN_DIR/report.md",
        description="Run the paper's experiments on one data set and write RUN_DIR/report.md + results.json. "
                    "Resumable: after a stop or a crash, --resume RUN_DIR continues without training again "
                    "anything that finished.")
    add_data_options(paper, dataset_default=None, title="data (default fashion-mnist; see docs/data.md)")
    paper.add_argument("--preset", default=None, choices=sorted(PRESETS),
                       help="default cpu; " + "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values()))
    paper.add_argument("--out", default=None, metavar="RUN_DIR",
                       help="output directory (default runs/paper-DATASET-PRESET-TIMESTAMP)")
    paper.add_argument("--resume", default=None, metavar="RUN_DIR",
                       help="continue the experiment in RUN_DIR (its settings come from RUN_DIR/experiment.json; "
                            "the distribution options may differ)")
    paper.add_argument("--force", action="store_true", help="start over in RUN_DIR even if it holds an experiment")
    paper.add_argument("--seed", type=int, default=None, help="seed of the searches and of every training run (default 0)")
    paper.add_argument("--split-seed", type=int, default=None, help="default 0")
    paper.add_argument("--device", default=None, help="torch device of the workers (default: cuda if available)")
    paper.add_argument("--threads", type=int, default=0, help="torch threads of each local worker and retraining "
                                                              "process (default: the cores shared among them)")
    o = paper.add_argument_group("overrides of the preset")
    for name, kind, metavar in (("population", int, None), ("offspring", int, None), ("generations", int, None),
                                ("train-subset", int, "N"), ("val-size", int, "N"),
                                ("search-epochs", _epochs_list, "E,E"), ("random-epochs", _epochs_list, "E[,E]"),
                                ("random-seeds", int, None), ("retrain-epochs", int, None),
                                ("manifold-epochs", int, None)):
        o.add_argument(f"--{name}", type=kind, metavar=metavar)
    add_distribution_options(paper, local_workers=2, bind="tcp://127.0.0.1:*",
                             local_workers_help="worker processes on this machine during the searches, and "
                                                "processes that train the figures' models after them")
    paper.add_argument("--log-format", default="auto", choices=("auto", "console", "json"))
    paper.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    return parser


def _config(args: argparse.Namespace) -> ExperimentConfig:
    """A new experiment's configuration; its data read, fingerprinted and checked (DataOptionError, one line).
    ``--val-size`` not given: the preset's, at most a fifth of own data's examples."""
    preset = PRESETS[args.preset or "cpu"]
    args.dataset = args.dataset or "fashion-mnist"
    fields = data_fields(args, val_size=preset.val_size)
    changes = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    config = ExperimentConfig(replace(preset, **changes), **fields, seed=args.seed or 0, split_seed=args.split_seed or 0)
    check_split(config.spec(1), args.data_root)  # e.g. a --val-size too large for the table: one line, now
    return config


def _stored_config(args: argparse.Namespace) -> ExperimentConfig:
    """The configuration of the experiment to resume, its data checked again: a changed file is refused."""
    from ..experiments.runs import PaperRun

    given = [f"--{k.replace('_', '-')}" for k in _DEFINING if getattr(args, k) not in (None, "")]
    if given or args.out or args.force:
        flags = ", ".join(given + ["--out"] * bool(args.out) + ["--force"] * bool(args.force))
        raise ValueError(f"--resume takes the experiment's settings from {args.resume}/experiment.json; "
                         f"leave out {flags}")
    config = PaperRun.read_config(args.resume)
    data_fields(argparse.Namespace(**config.data, data_root=args.data_root, download=args.download))
    return config


def _open_run(args: argparse.Namespace, config: ExperimentConfig):
    """The run directory: opened (--resume) or created. ValueError (one line) for what cannot be."""
    from ..experiments.runs import PaperRun

    if args.resume:
        return PaperRun.open(args.resume)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(args.out or f"runs/paper-{config.data_name}-{config.preset.name}-{stamp}")
    return PaperRun.create(run_dir, config, force=args.force)


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _paper(args: argparse.Namespace) -> int:
    from ..head.cluster import Cluster
    from .log_setup import configure

    try:  # the data, then the key options, are checked before a run directory is created or changed
        config = _stored_config(args) if args.resume else _config(args)
        for key in DATA_FIELDS:  # the local workers check the experiment's data at start-up
            setattr(args, key, getattr(config, key))
        cluster = Cluster(cluster_options(args))
        run = _open_run(args, config)
    except ValueError as exc:  # DataOptionError, ClusterError and RunDirError are ValueErrors
        return _error(str(exc))
    configure(args.log_format, args.log_level, role="experiment")
    with run:
        return _run(args, run, cluster)


def _run(args: argparse.Namespace, run, cluster) -> int:
    from gpuworker.data import DataError

    from ..experiments.paper import run_paper
    from ..head.cluster import ClusterError
    from ..head.evaluators import SearchStopped
    from ..head.store import JournalError
    from .signals import stop_signals

    print(f"run directory {run.path}", flush=True)
    with stop_signals() as stop:
        try:
            run_paper(run.config, run, cluster, stop=stop.event, echo=lambda line: print(line, flush=True),
                      log_format="json" if args.log_format == "auto" else args.log_format)
        except (DataError, JournalError, ClusterError) as exc:
            return _error(str(exc))
        except SearchStopped as exc:
            if not stop.stopped:
                raise
            print(f"{PROG}: stopped by {stop.name}: {exc}; continue with: evovae experiment paper --resume {run.path}",
                  file=sys.stderr)
            return stop.exit_status
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``evovae experiment paper|compare ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        from .compare import main as compare_main

        return compare_main(argv[1:])
    args = _parser().parse_args(argv)
    return _paper(args)


if __name__ == "__main__":
    sys.exit(main())
