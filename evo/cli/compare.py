"""``evovae experiment compare``: strategies at equal compute over seeds, after the fidelity study, into one
report. Resumable: ``--resume RUN_DIR`` continues after a kill."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuworker.data_options import add_data_options, check_split, data_fields

from ..cmdline import validate as v
from ..experiments.compare import (
    ARMS,
    COMPARE_PRESETS,
    CONTINUING,
    DEFAULT_ARM,
    base_spec,
    default_arm_of,
    run_compare,
    summarize,
)
from ..experiments.compare_report import write_report
from ..experiments.fidelity import fidelity_study
from ..experiments.presets import DATA_FIELDS
from ..spec import TrainSpec
from .distribution import add_distribution_options, cluster_options
from .live import ExperimentWatch, LiveDisplay, quiet_logs, workers_of

if TYPE_CHECKING:  # imported when used
    from ..cmdline.signals import StopSignals
    from ..experiments.compare import ComparePreset
    from ..head.cluster import Cluster
    from ..head.lock import RunLock

__all__ = ["main"]

FORMAT = "evovae-compare"


def _parser() -> argparse.ArgumentParser:
    p = v.OneLineParser(prog="evovae experiment compare",
                        description="Compare search strategies at equal training epochs over several seeds "
                                    "(anytime curves, retrained test ELBO and IW bound, paired bootstrap).")
    p.add_argument("--preset", default="cpu", choices=tuple(COMPARE_PRESETS),
                   help="; ".join(f"{k}: {v.summary}" for k, v in COMPARE_PRESETS.items()))
    add_data_options(p)
    p.add_argument("--val-size", type=v.VAL_SIZE, default=None, metavar="N",
                   help="validation examples (default: the preset's, at most a fifth of own data's examples)")
    p.add_argument("--split-seed", type=v.SEED, default=0)
    p.add_argument("--seeds", type=v.whole(1, 1000), default=None, help="seeds per arm (default: the preset's)")
    p.add_argument("--first-seed", type=v.SEED, default=0,
                   help="the arms run with seeds K .. K + seeds - 1 (default 0): another K repeats the comparison "
                        "on seeds it has not seen")
    p.add_argument("--budget-epochs", type=v.whole(1, 10**12), default=None,
                   help="epochs per search (default: the preset's)")
    p.add_argument("--arms", type=v.choice_list(ARMS), default=None,
                   help=f"comma-separated, from {', '.join(ARMS)} (default: all)")
    p.add_argument("--simulate-workers", type=v.whole(0, 100_000), default=0, metavar="N",
                   help="every search decides as N workers would: its tasks are trained one at a time and told in "
                        "the order N simulated workers deliver them (a clock in epochs trained); the fidelity "
                        "study and the retrainings are unaffected (default 0: the searches run on the workers "
                        "there are)")
    p.add_argument("--fidelity-count", type=v.whole(0, 10_000), default=30,
                   help="genotypes in the fidelity study run first (0: skip it; default 30)")
    p.add_argument("--run-dir", type=v.dir_to_create, default=None,
                   help="where everything goes (default runs/compare-TIME-PID); must be new")
    p.add_argument("--resume", type=v.existing_dir, default=None, metavar="RUN_DIR",
                   help="continue the comparison in RUN_DIR")
    add_distribution_options(p, local_workers=2, bind="tcp://127.0.0.1:*")
    p.add_argument("--threads", type=v.THREADS, default=0,
                   help="torch threads per local worker (default: cores shared)")
    p.add_argument("--device", type=v.device, default=None,
                   help="torch device of the local workers (default: cuda if available)")
    p.add_argument("--log-format", default="auto", choices=("auto", "console", "json"))
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    return p


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """A new comparison's configuration, its data read, fingerprinted and checked (one line if it is bad)."""
    preset = COMPARE_PRESETS[args.preset]
    fields = data_fields(args, val_size=preset.val_size)  # --val-size not given: the preset's, capped for own data
    preset = replace(preset, val_size=args.val_size)
    if args.seeds:
        preset = replace(preset, seeds=args.seeds)
    if args.first_seed + preset.seeds - 1 > v.MAX_SEED:
        raise ValueError(f"--first-seed {args.first_seed}: its last seed ({args.first_seed} + {preset.seeds} - 1) "
                         f"passes the largest seed, {v.MAX_SEED}")
    preset = replace(preset, first_seed=args.first_seed)
    if args.budget_epochs:
        preset = replace(preset, budget_epochs=args.budget_epochs)
    if args.arms:
        arms = tuple(a.strip() for a in args.arms.split(","))
        unknown = [a for a in arms if a not in ARMS]
        if unknown:
            raise ValueError(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)}")
        preset = replace(preset, arms=arms)
    config = {"format": FORMAT, "preset": asdict(preset), **_data_of(fields),
              "split_seed": args.split_seed, "fidelity_count": args.fidelity_count, "default_arm": DEFAULT_ARM,
              "simulate_workers": args.simulate_workers}
    # e.g. a --val-size too large for the table: one line; the preset's subset larger than the data is all of it
    check_split(_spec_of(preset, config), args.data_root, subset_given=False)
    return config


def _data_of(config: dict[str, Any]) -> dict[str, str]:
    """The data fields of a configuration (one from before own data has only ``dataset``)."""
    defaults = {"likelihood": "bernoulli", "missing": "error"}
    return {key: config.get(key, defaults.get(key, "")) for key in DATA_FIELDS}


def _spec_of(preset: ComparePreset, config: dict[str, Any]) -> TrainSpec:
    """The spec every search of the comparison trains with (:func:`base_spec` on the configuration's data)."""
    data = _data_of(config)
    return base_spec(preset, data.pop("dataset"), config["split_seed"], data)


#: what defines a comparison: taken from RUN_DIR/compare.json by --resume, so not to be given with it
_DEFINING = ("preset", "dataset", "columns", "image_size", "likelihood", "missing", "val_size", "split_seed", "seeds",
             "first_seed", "budget_epochs", "arms", "fidelity_count", "simulate_workers", "run_dir")


def _given_with_resume(args: argparse.Namespace) -> list[str]:
    defaults = {a.dest: a.default for a in _parser()._actions}
    return [f"--{key.replace('_', '-')}" for key in _DEFINING if getattr(args, key) != defaults[key]]


def _plan(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The run directory and configuration, nothing created yet: a resumed comparison's data is checked
    again (a changed file is refused), a new one's read and checked. ValueError (one line) for what is wrong."""
    if args.resume:
        run = Path(args.resume)
        try:
            config = json.loads((run / "compare.json").read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{run} is not a comparison's run directory ({exc})") from None
        data_fields(argparse.Namespace(**_data_of(config), data_root=args.data_root, download=args.download))
        given = _given_with_resume(args)
        if given:
            print(f"evovae: note: resuming {run}: its compare.json fixes the comparison, so {', '.join(given)} "
                  f"{'is' if len(given) == 1 else 'are'} ignored", file=sys.stderr)
        return run, config
    config = _config(args)
    run = Path(args.run_dir or Path("runs") / time.strftime(f"compare-%Y%m%dT%H%M%SZ-{os.getpid()}", time.gmtime()))
    if run.exists() and any(run.iterdir()):
        raise ValueError(f"{run} exists and is not empty: resume it with --resume {run}, or pick another --run-dir")
    return run, config


def _lock(run: Path) -> RunLock:
    """The comparison's run directory locked for this process (its journals, cache and task batches have one
    writer): RunDirLocked, naming the holder, while another head uses it."""
    from ..head.lock import RunLock

    return RunLock.acquire(run)


def _create(run: Path, config: dict[str, Any]) -> RunLock:
    """A new comparison in ``run``, locked before anything is written in it."""
    run.mkdir(parents=True, exist_ok=True)
    lock = _lock(run)  # two new comparisons given one --run-dir at once: the second is refused here
    if (run / "compare.json").exists():  # or finds what the first, ended meanwhile, wrote
        lock.release()
        raise ValueError(f"{run} exists and is not empty: resume it with --resume {run}, or pick another --run-dir")
    (run / "compare.json").write_text(json.dumps(config, indent=2))
    return lock


def _experiment(args: argparse.Namespace, run: Path, config: dict[str, Any], cluster: Cluster,
                stop: StopSignals, watch: ExperimentWatch) -> dict[str, Any]:
    from ..experiments.compare import ComparePreset
    from ..experiments.searches import SearchBench
    from ..head.cache import ResultCache

    preset = ComparePreset(**{**config["preset"], "fidelities": tuple(config["preset"]["fidelities"]),
                              "asha_fidelities": tuple(config["preset"].get("asha_fidelities", ())),
                              "arms": tuple(config["preset"]["arms"])})
    spec = _spec_of(preset, config)
    cache = ResultCache(run / "cache.sqlite")
    started = time.perf_counter()
    watch.plan = [f"{arm}-seed{seed}" for seed in preset.seed_values for arm in preset.arms]  # run_compare's order
    bench = SearchBench(run, cluster.evaluator(stop=stop.event), cluster.capacity, cache=cache, watch=watch,
                        on_report=lambda name, report: watch.report(
                            name, report, f"{cluster.stats_line()}  {time.perf_counter() - started:.0f}s"),
                        simulate=config.get("simulate_workers", 0))
    results: dict[str, Any] = {"format": FORMAT, "preset": config["preset"], "dataset": config["dataset"],
                               "arms": ARMS, "spec": spec.to_dict()}
    if config["fidelity_count"]:
        study_epochs = sorted({1, 2, 3, 5, *preset.fidelities, preset.epochs, preset.retrain_epochs})
        watch.line(f"fidelity study: {config['fidelity_count']} genotypes x {max(study_epochs)} epochs")
        results["fidelity"] = fidelity_study(bench, spec, count=config["fidelity_count"], epochs=study_epochs,
                                             seed=10_000)
    raw = run_compare(bench, preset, spec, echo=watch.line)
    results.update(raw)
    results["default_arm"] = default_arm_of(config)
    results["simulate_workers"] = config.get("simulate_workers", 0)
    results["summary"] = summarize(raw, preset, default_arm_of(config))
    results["seconds"] = time.perf_counter() - started + _previous_seconds(run)
    results["trained_now"] = bench.trained_now
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {args.local_workers} local workers"
    flags = (("preset", config["preset"]["name"]), ("dataset", config["dataset"]), ("columns", spec.columns),
             ("image-size", spec.image_size), ("simulate-workers", config.get("simulate_workers", 0)),
             ("first-seed", preset.first_seed))
    results["command"] = "evovae experiment compare " + " ".join(f"--{k} {v}" for k, v in flags if v)
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    cache.close()
    shutil.rmtree(run / "checkpoints", ignore_errors=True)  # every search is done: no promotion is left
    return results


def _previous_seconds(run: Path) -> float:
    """Wall time spent before a resume (each run of the command adds its own to progress.json)."""
    path = run / "progress.json"
    return float(json.loads(path.read_text()).get("seconds", 0.0)) if path.is_file() else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    args = v.parse_args(_parser(), argv)  # each value checked: one line and status 2 for a bad one
    if isinstance(args, int):
        return args
    from ..cmdline.log_setup import RunLogs, configure, file_level
    from ..head.cluster import Cluster, ClusterError
    from ..head.lock import RunDirLocked

    new = None
    try:  # the data, then the cluster's options and keys, are checked before the run directory is created
        run, config = _plan(args)
        for key, value in _data_of(config).items():  # the local workers check the comparison's data at start-up
            setattr(args, key, value)
        if args.local_workers:
            from gpuworker.train import check_device

            check_device(args.device)  # the local workers train on this machine
        # the local workers log info (their files in RUN_DIR/logs keep it); the terminal shows --log-level's
        options = replace(cluster_options(args), log_level=file_level(args.log_level))
        if set(config["preset"]["arms"]) & set(CONTINUING):  # promotions continue from checkpoints kept here
            options = replace(options, worker_args=(*options.worker_args, f"--checkpoints={run / 'checkpoints'}"))
        cluster = Cluster(options)  # reads the key files
        if args.resume:
            lock = _lock(run)
        else:
            new = _outermost_new(run)
            lock = _create(run, config)
    except RunDirLocked as exc:  # another comparison runs in it: nothing of it is touched
        return _refused(str(exc), None)
    except OSError as exc:
        return _refused(f"cannot create the run directory {run}: {exc.strerror or exc}", new)
    except (ValueError, ClusterError) as exc:
        return _refused(str(exc), None)
    configure(args.log_format, args.log_level, role="compare")
    logs = RunLogs(run)  # RUN_DIR/logs: head.log and the local workers' files, for evovae logs RUN_DIR
    cluster.worker_output = logs.workers
    try:
        with quiet_logs():
            return _compare(args, run, config, cluster, new)
    finally:
        logs.close()
        lock.release()


def _outermost_new(path: Path) -> Path:
    """``path`` or the outermost of its parents that does not exist yet."""
    path = path.absolute()
    while not path.parent.exists():
        path = path.parent
    return path


def _refused(message: str, new: Path | None) -> int:
    """One line, exit status 2; ``new``, what this start created, removed again."""
    if new is not None:
        shutil.rmtree(new, ignore_errors=True)
    print(f"evovae: error: {message}", file=sys.stderr)
    return 2


def _compare(args: argparse.Namespace, run: Path, config: dict[str, Any], cluster: Cluster, new: Path | None) -> int:
    from ..cmdline.signals import stop_signals
    from ..head.cluster import ClusterError
    from ..head.evaluators import SearchStopped
    from ..head.lock import RunDirLocked
    from ..head.store import JournalError, StorageError

    started = time.perf_counter()
    with stop_signals() as stop:
        try:
            with cluster:
                print(f"run directory {run}\n{cluster.describe()}", flush=True)
                with LiveDisplay("evovae experiment compare") as display:
                    watch = ExperimentWatch(display, workers=lambda: workers_of(cluster))
                    results = _experiment(args, run, config, cluster, stop, watch)
        except ClusterError as exc:  # a port in use, every local worker unfit: nothing kept if nothing ran
            return _refused(str(exc), new if not any(run.rglob("journal.sqlite")) else None)
        except SearchStopped as exc:
            _save_progress(run, started)
            print(f"evovae: stopped by {stop.name}: {exc}; resume with: evovae experiment compare --resume {run}",
                  file=sys.stderr)
            return stop.exit_status
        except JournalError as exc:  # a search's journal that does not replay (the code or its settings changed)
            _save_progress(run, started)
            print(f"evovae: error: {exc}; the comparison stopped there: move that search's directory aside to run it "
                  f"again (the cache keeps what it trained), then resume with: evovae experiment compare --resume "
                  f"{run}", file=sys.stderr)
            return 1
        except (StorageError, RunDirLocked) as exc:  # a full disk, an I/O error; a search's directory in use
            try:
                _save_progress(run, started)
            except OSError:
                pass  # the same disk: the next run's total misses this one's time, nothing else
            print(f"evovae: error: {exc}; the comparison stopped with what it had journaled: fix that, then resume "
                  f"with: evovae experiment compare --resume {run}", file=sys.stderr)
            return 1
    (run / "progress.json").write_text(json.dumps({"seconds": results["seconds"]}))  # a later resume adds to it
    write_report(run, results)
    print(f"report {run / 'report.md'}", flush=True)
    return 0


def _save_progress(run: Path, started: float) -> None:
    seconds = _previous_seconds(run) + time.perf_counter() - started
    (run / "progress.json").write_text(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    sys.exit(main())
