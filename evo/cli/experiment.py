"""``evovae experiment paper`` (the paper's experiments, :mod:`evo.experiments.paper`) and
``evovae experiment compare`` (strategies at equal compute, :mod:`evo.cli.compare`)."""
from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from gpuworker.data_options import add_data_options, check_split, data_fields

from ..cmdline import validate as v
from ..experiments.presets import DATA_FIELDS, PRESETS, ExperimentConfig
from .distribution import add_distribution_options, cluster_options

if TYPE_CHECKING:  # imported when used
    from ..experiments.runs import PaperRun
    from ..head.cluster import Cluster
    from .live import ExperimentWatch, LiveDisplay

__all__ = ["main"]

PROG = "evovae experiment"

#: preset fields that may be overridden on the command line
_OVERRIDES = ("population", "offspring", "generations", "train_subset", "val_size", "search_epochs", "random_epochs",
              "random_seeds", "retrain_epochs", "manifold_epochs")
#: what defines an experiment: taken from RUN_DIR/experiment.json by --resume, so not to be given with it
_DEFINING = ("dataset", "columns", "image_size", "likelihood", "missing", "preset", "seed", "split_seed", *_OVERRIDES)


_EPOCH_TEXT = v.whole_list(1, example="2,5")


def _epochs_list(text: str) -> tuple[int, ...]:
    """Comma-separated epochs, each >= 1 (e.g. 2,5)."""
    return tuple(int(e) for e in _EPOCH_TEXT(text).split(","))


def _parser() -> argparse.ArgumentParser:
    parser = v.OneLineParser(prog=PROG, description="Reproduce the paper's experiments; compare strategies.")
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
    paper.add_argument("--out", type=v.dir_to_create, default=None, metavar="RUN_DIR",
                       help="output directory (default runs/paper-DATASET-PRESET-TIMESTAMP)")
    paper.add_argument("--resume", default=None, metavar="RUN_DIR",
                       help="continue the experiment in RUN_DIR (its settings come from RUN_DIR/experiment.json; "
                            "the distribution options may differ)")
    paper.add_argument("--force", action="store_true", help="start over in RUN_DIR even if it holds an experiment")
    paper.add_argument("--seed", type=v.SEED, default=None,
                       help="seed of the searches and of every training run (default 0)")
    paper.add_argument("--split-seed", type=v.SEED, default=None, help="default 0")
    paper.add_argument("--device", type=v.device, default=None,
                       help="torch device of the workers (default: cuda if available)")
    paper.add_argument("--threads", type=v.THREADS, default=0, help="torch threads of each local worker and "
                                                                    "retraining process (default: the cores shared "
                                                                    "among them)")
    o = paper.add_argument_group("overrides of the preset")
    count = v.whole(1, 10_000)
    for name, kind, metavar in (("population", count, None), ("offspring", count, None), ("generations", count, None),
                                ("train-subset", v.TRAIN_SUBSET, "N"), ("val-size", v.VAL_SIZE, "N"),
                                ("search-epochs", _epochs_list, "E,E"), ("random-epochs", _epochs_list, "E[,E]"),
                                ("random-seeds", v.whole(0, 1000), None), ("retrain-epochs", v.EPOCHS, None),
                                ("manifold-epochs", v.EPOCHS, None)):
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
    config = ExperimentConfig(replace(preset, **changes), **fields, seed=args.seed or 0,
                              split_seed=args.split_seed or 0)
    # e.g. a --val-size too large for the table: one line, now; the preset's subset larger than the data is all of it
    check_split(config.spec(1), args.data_root, subset_given=False)
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


def _run_dir(args: argparse.Namespace, config: ExperimentConfig) -> Path:
    if args.resume:
        return Path(args.resume)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(args.out or f"runs/paper-{config.data_name}-{config.preset.name}-{stamp}")


def _open_run(args: argparse.Namespace, config: ExperimentConfig, run_dir: Path) -> PaperRun:
    """The run directory: opened (--resume) or created. ValueError (one line) for what cannot be."""
    from ..experiments.runs import PaperRun

    if args.resume:
        return PaperRun.open(run_dir)
    try:
        return PaperRun.create(run_dir, config, force=args.force)
    except OSError as exc:
        raise ValueError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None


def _outermost_new(path: Path) -> Path | None:
    """``path`` or the outermost of its parents that does not exist yet (None: it exists, and is not empty)."""
    path = path.absolute()
    if path.is_dir() and any(path.iterdir()):
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _paper(args: argparse.Namespace) -> int:
    from gpuworker.train import check_device

    from ..cmdline.log_setup import RunLogs, configure, file_level
    from ..head.cluster import Cluster
    from .live import quiet_logs

    try:  # the data, then the key options, are checked before a run directory is created or changed
        config = _stored_config(args) if args.resume else _config(args)
        for key in DATA_FIELDS:  # the local workers check the experiment's data at start-up
            setattr(args, key, getattr(config, key))
        check_device(args.device)  # the figures' models are trained on this machine
        # the local workers log info (their files in RUN_DIR/logs keep it); the terminal shows --log-level's
        cluster = Cluster(replace(cluster_options(args), log_level=file_level(args.log_level)))
        run_dir = _run_dir(args, config)
        new = None if args.resume or args.force else _outermost_new(run_dir)
        run = _open_run(args, config, run_dir)
    except ValueError as exc:  # DataOptionError, ClusterError and RunDirError are ValueErrors
        return _error(str(exc))
    configure(args.log_format, args.log_level, role="experiment")
    logs = RunLogs(run.path)  # RUN_DIR/logs: head.log and the local workers' files, for evovae logs RUN_DIR
    cluster.worker_output = logs.workers
    try:
        with run, quiet_logs():
            status = _run(args, run, cluster)
    finally:
        logs.close()
    if status == 2 and new is not None and not _any_search(run_dir):  # refused before any search began
        shutil.rmtree(new, ignore_errors=True)
    return status


def _any_search(run_dir: Path) -> bool:
    searches = run_dir / "searches"
    return searches.is_dir() and any(searches.iterdir())


def _run(args: argparse.Namespace, run: PaperRun, cluster: Cluster) -> int:
    from gpuworker.data import DataError

    from ..cmdline.signals import stop_signals
    from ..experiments.paper import run_paper
    from ..head.cluster import ClusterError
    from ..head.evaluators import SearchStopped
    from ..head.lock import RunDirLocked
    from ..head.store import JournalError, StorageError
    from .live import LiveDisplay

    print(f"run directory {run.path}", flush=True)
    with stop_signals() as stop:
        try:
            with LiveDisplay("evovae experiment paper") as display:
                watch = _paper_watch(display, run, cluster)
                run_paper(run.config, run, cluster, stop=stop.event, echo=watch.line,
                          log_format="json" if args.log_format == "auto" else args.log_format,
                          log_level=args.log_level, watch=watch)
        except (DataError, JournalError, ClusterError) as exc:
            return _error(str(exc))
        except SearchStopped as exc:
            if not stop.stopped:
                raise
            print(f"{PROG}: stopped by {stop.name}: {exc}; continue with: evovae experiment paper --resume {run.path}",
                  file=sys.stderr)
            return stop.exit_status
        except (StorageError, RunDirLocked) as exc:  # a full disk, an I/O error; a search's directory in use
            print(f"{PROG}: error: {exc}; the experiment stopped with what it had journaled: fix that, then continue "
                  f"with: evovae experiment paper --resume {run.path}", file=sys.stderr)
            return 1
    return 0


#: what the live display calls the paper's last phase: after the retrainings on the workers (``retrain``), the
#: figures' models, trained by processes of this machine once the cluster has stopped
PAPER_PHASES = {"figures": "figures' models, trained here"}


def _paper_watch(display: LiveDisplay, run: PaperRun, cluster: Cluster) -> ExperimentWatch:
    """The paper's searches and batches on ``display``, each phase named for what runs (:data:`PAPER_PHASES`).
    The figures' models report nothing until they are all trained: their phase shows how many train, a bar
    with no end and the time so far, and no worker alive (the cluster has stopped)."""
    import time

    from ..head.progress import ProgressView
    from .live import ExperimentWatch, WorkersView, workers_of

    sampled: list[WorkersView] = []

    def workers() -> WorkersView:
        sampled[:] = [workers_of(cluster)]
        return sampled[0]

    class PaperWatch(ExperimentWatch):
        figures: tuple[int, float] | None = None  # the figures' models: how many, since when

        def tasks(self, name: str, total: int, known: int) -> None:
            if name != "figures":
                super().tasks(name, total, known)
                return
            # elsewhere than on a terminal the experiment's own line says it ("training N models ... here")
            title = PAPER_PHASES[name]
            self.figures = (total, time.monotonic())
            self.display.show(ProgressView(title, "models", total, None, 0, 0, time.monotonic(), 0.0),
                              phase=title, last="")
            if sampled:
                self.display.show(workers=replace(sampled[0], alive=0, busy=0))

        def line(self, text: str) -> None:
            if text.startswith("done in") and self.figures is not None:  # the last frame: the figures' models
                total, started = self.figures
                now = time.monotonic()
                self.display.show(ProgressView(PAPER_PHASES["figures"], "models", total, total, 0, 0, now,
                                               now - started), phase="done", last=text)
            super().line(text)

    return PaperWatch(display, [plan.name for plan in run.config.searches()], workers=workers)


def main(argv: Sequence[str] | None = None) -> int:
    """``evovae experiment paper|compare ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        from .compare import main as compare_main

        return compare_main(argv[1:])
    args = v.parse_args(_parser(), argv)  # each value checked: one line and status 2 for a bad one
    return args if isinstance(args, int) else _paper(args)


if __name__ == "__main__":
    sys.exit(main())
