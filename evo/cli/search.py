"""``evovae search``: the options become a :class:`~evo.search_config.SearchConfig`, the run a
:class:`~evo.head.search_run.SearchRun`; this module parses, checks and wires (in-process trainer or a cluster of
workers), and prints what a person reads. ``--resume RUN_DIR`` continues a search that stopped.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from gpuworker.data_options import spec_from_args

from ..genotype import Genotype, GenotypeError, parse_genotype
from ..head.journal import JournalError
from ..head.progress import format_report
from ..head.search_run import RunDirLocked, SearchRun, StorageError, default_run_dir
from ..multifidelity import parse_fidelities
from ..search_config import SearchConfig
from ..space import SearchSpace
from ..spec import TrainSpec
from ..strategies import OptionError, StrategyOptions
from .distribution import worker_data_args

__all__ = ["SEARCH_KEYS", "UsageError", "config_of", "genotype_arg", "run", "spec_of"]

#: The options that define a search (stored in its journal; a resumed run takes them from there).
SEARCH_KEYS = ("strategy", "mode", "population", "offspring", "generations", "crossover_rate", "mutation_rate",
               "initial", "max_layers", "seed", "dataset", "epochs", "batch_size", "lr", "train_subset", "val_size",
               "split_seed", "budget_epochs", "fidelities", "eta", "tournament_size", "startup_trials",
               "likelihood", "data_sha256", "columns", "image_size", "operators", "continue_promotions",
               "brackets")

#: the strategy of a search that names none: the best of docs/results/fashion-mnist-compare-cpu (see
#: docs/experiments.md); the paper's evolution where an option only it has is given
DEFAULT_STRATEGY = "tpe"


class UsageError(Exception):
    """Bad input from the person at the keyboard: one line, exit status 2."""


def spec_of(args: argparse.Namespace) -> TrainSpec:
    try:  # own data is read, fingerprinted and split here, as the workers will (gpuworker/data_options.py)
        return spec_from_args(args, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              train_subset=args.train_subset, val_size=args.val_size, split_seed=args.split_seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def genotype_arg(text: str) -> Genotype:
    try:
        return parse_genotype(text)
    except GenotypeError as exc:
        raise UsageError(str(exc)) from None


def default_strategy(args: argparse.Namespace) -> None:
    """Fill in what a new search left to the defaults: 5 generations unless an end is given; ``--strategy``
    (multi-fidelity TPE with rungs (0.3 x E, E) at ``--epochs`` E >= 3, as measured best; evolution with
    --mode steady-state or --initial, which only it takes); asha's rungs (E/eta^2, E/eta, E)."""
    if args.generations is None and args.budget_epochs is None:
        args.generations = 5
    if args.mode == "asha" and args.fidelities is None:
        rungs = [max(1, round(args.epochs / args.eta ** k)) for k in (2, 1, 0)]
        args.fidelities = sorted(set(rungs))
    if args.strategy is not None:
        return
    if args.mode == "steady-state" or args.initial:  # the paper's steady-state future work; seeded generation 0
        args.strategy = "evolution"
        return
    args.strategy = DEFAULT_STRATEGY
    if args.fidelities is None and args.epochs >= 3:
        args.fidelities = [max(1, round(0.3 * args.epochs)), args.epochs]


def config_of(args: argparse.Namespace) -> SearchConfig:
    """A new search's configuration from its options, checked as the strategy will take them (UsageError
    naming the option). Own data is read, fingerprinted and split here, once."""
    default_strategy(args)
    space = SearchSpace(max_layers=args.max_layers)
    try:
        options = StrategyOptions(
            strategy=args.strategy, population=args.population, offspring=args.offspring,
            generations=args.generations, budget_epochs=args.budget_epochs, epochs=args.epochs,
            fidelities=parse_fidelities(args.fidelities) if isinstance(args.fidelities, str) else
            tuple(args.fidelities or ()), eta=args.eta, mode=args.mode,
            tournament_size=args.tournament_size, startup_trials=args.startup_trials,
            crossover_rate=args.crossover_rate, mutation_rate=args.mutation_rate,
            initial=tuple(space.validate(parse_genotype(t)) for t in args.initial), seed=args.seed,
            operators=args.operators, continue_promotions=args.continue_promotions, brackets=args.brackets)
    except OptionError as exc:
        raise UsageError(f"--{exc.option.replace('_', '-')}: {exc.message}") from None
    return SearchConfig(options, spec_of(args), space)


def check_options(args: argparse.Namespace) -> None:
    """What the options say together, for a new search (each value was checked while parsing; a resumed one
    takes them from its journal). UsageError naming the options; nothing is created or read here."""
    if args.in_process and args.local_workers:
        raise UsageError(f"--local-workers {args.local_workers} starts worker processes, --in-process trains here "
                         "without any: give one of them")
    if args.resume:
        return
    space = SearchSpace(max_layers=args.max_layers)
    try:  # also from a --config file, whose lists argparse does not check
        initial = [str(space.validate(parse_genotype(text))) for text in args.initial]
    except GenotypeError as exc:
        raise UsageError(f"--initial: {exc}") from None
    twice = sorted({g for g in initial if initial.count(g) > 1})
    if twice:
        raise UsageError(f"--initial gives {', '.join(twice)} more than once; give each genotype once")
    if len(initial) > args.population:
        raise UsageError(f"--initial gives {len(initial)} genotypes, more than --population {args.population} holds")


def _check_device(name: str | None) -> None:
    if not name or name == "cpu":
        return
    from gpuworker.train import check_device

    try:
        check_device(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check_data_here(args: argparse.Namespace, spec: TrainSpec) -> None:
    """The data the in-process trainer needs, loaded now, before any run directory exists."""
    from gpuworker.data import DataError, splits
    from gpuworker.train import set_threads

    set_threads(args.threads or None)
    try:
        splits(spec, root=args.data_root, download=args.download)
    except DataError as exc:
        raise UsageError(str(exc)) from None


def _in_process_evaluator(args: argparse.Namespace, checkpoints: Path | None):
    """The trainer in this process (gpuworker); with ``checkpoints``, promotions continue from there."""
    from gpuworker.checkpoints import CheckpointStore
    from gpuworker.train import evaluate, set_threads

    from ..head.evaluators import InProcessEvaluator

    set_threads(args.threads or None)
    store = CheckpointStore(checkpoints) if checkpoints is not None else None
    return InProcessEvaluator(lambda genotype, task_spec: evaluate(
        genotype, task_spec, device=args.device, data_root=args.data_root, download=args.download,
        checkpoints=store))


def _cluster_options(args: argparse.Namespace):
    """The cluster's options, checked even with --in-process (the key files are read here)."""
    from ..head.cluster import Cluster, ClusterError
    from .distribution import cluster_options

    try:
        options = cluster_options(args)
        if not args.in_process or args.server_key_secret or args.allow:
            Cluster(options)  # reads the key files: bad security options fail before anything is created
        return options
    except ClusterError as exc:
        raise UsageError(str(exc)) from None


#: the options whose flag is not their name
_FLAGS = {"continue_promotions": "--restart-promotions"}


def _ignored_on_resume(args: argparse.Namespace, defaults: dict[str, Any]) -> list[str]:
    """The options given (on the command line, even at their default value, or in the ``--config`` file) that
    a resumed run takes from its journal instead (and ``--run-dir``: the run directory is RUN_DIR)."""
    from_file = getattr(args, "config_values", None) or {}
    on_line = getattr(args, "given", None)
    ignored = []
    for key in (*SEARCH_KEYS, "run_dir"):
        if key == "generations" or key not in defaults:
            continue
        written = key in on_line if on_line is not None else getattr(args, key) != defaults[key]
        in_file = key in from_file and getattr(args, key) == from_file[key]
        if not (written or in_file):
            continue
        flag = _FLAGS.get(key, f"--{key.replace('_', '-')}")
        ignored.append(f"{flag} (from {args.config})" if in_file and not written else flag)
    return ignored


def _open(args: argparse.Namespace, config: SearchConfig | None) -> SearchRun:
    try:
        if config is None:
            return SearchRun.open(args.resume, cache=args.cache, generations=args.generations)
        return SearchRun.create(args.run_dir or default_run_dir(), config, cache=args.cache)
    except JournalError as exc:
        message = str(exc)
        if args.generations is not None and "generations" in message and "a resume may give more" in message:
            message = f"--generations {args.generations}: {message} (or leave the option out)"
        raise UsageError(message.replace("the cache ", "--cache ")) from None
    except RunDirLocked as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace, parser_defaults: dict[str, Any] | None = None) -> int:
    """Run (or resume) the search ``args`` describe; UsageError (one line, exit status 2) for what is wrong,
    found before a run directory is created, a socket bound or a worker started - and a start refused later
    (a port in use, every local worker unfit) removes what it created while nothing was evaluated."""
    check_options(args)
    options = _cluster_options(args)
    ignored = _ignored_on_resume(args, parser_defaults or {}) if args.resume else []
    config = None if args.resume else config_of(args)
    if args.in_process or args.local_workers:  # training on this machine: its --device must be here
        _check_device(args.device)
    if args.in_process and config is not None:
        _check_data_here(args, config.spec)
    search = _open(args, config)
    refused = True
    try:
        if ignored:
            print(f"evovae: note: resuming {search.run_dir}: its journal fixes the search, so "
                  f"{', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored", file=sys.stderr)
        spec = search.config.spec
        data = argparse.Namespace(dataset=spec.dataset, columns=spec.columns, image_size=spec.image_size)
        options = replace(options, worker_data=worker_data_args(data))  # the run's data (a resume: the journal's)
        checkpoints = search.checkpoints
        if checkpoints is not None and "--checkpoints" not in " ".join(options.worker_args):
            options = replace(options, worker_args=(*options.worker_args, f"--checkpoints={checkpoints}"))
        try:
            search.replay()  # a journal that does not replay is refused before any socket is bound
        except JournalError as exc:
            raise UsageError(str(exc)) from None
        print(f"run directory {search.run_dir}", flush=True)
        if args.in_process:
            status = _search(args, search, lambda: (_in_process_evaluator(args, checkpoints), lambda: 1))
        else:
            status = _search_on_cluster(args, search, options)
        refused = False
        return status
    except UsageError:
        refused = not search.evaluated
        raise
    except StorageError as exc:  # the journal holds everything written before: a resume continues from it
        refused = False
        print(f"evovae: error: {exc}; the search stopped with what it had journaled: fix that, then resume with: "
              f"evovae search --resume {search.run_dir}", file=sys.stderr)
        return 1
    finally:
        search.close(refused=refused)


def _search(args: argparse.Namespace, search: SearchRun, wiring: Callable[[], tuple[Any, Callable[[], int]]],
            stats: Callable[[], str] = lambda: "", at_report: Callable[[], object] = lambda: None) -> int:
    started = time.perf_counter()
    runner = search.runner

    def progress(report) -> None:
        at_report()  # the head's counters in the log at every report, for an operator after a kill -9
        saved = (f"  reused {runner.reused + runner.replayed}  cache-hits {runner.cache_hits}"
                 if runner.reused or runner.replayed or runner.cache_hits else "")
        print(format_report(report, f"{stats()}{saved}  {time.perf_counter() - started:.0f}s"), flush=True)

    evaluator, capacity = wiring()
    search.run(evaluator, capacity, on_report=progress)
    _finish(args, search)
    return 0


def _search_on_cluster(args: argparse.Namespace, search: SearchRun, options) -> int:
    from ..head.cluster import Cluster, ClusterError
    from ..head.evaluators import SearchStopped
    from ..cmdline.signals import stop_signals

    with stop_signals() as stop:
        try:
            with Cluster(options) as cluster:
                if threading.current_thread() is threading.main_thread():  # SIGHUP: re-read the --allow keys
                    signal.signal(signal.SIGHUP, lambda *_: cluster.broker.request_reload())
                print(cluster.describe(), flush=True)
                if not options.local_workers:  # e.g. a resume that left --local-workers out: say what it waits for
                    print(f"waiting for workers: run `evovae worker --connect {cluster.broker.ventilator_endpoint}` "
                          "on each node (or resume with --local-workers N)", flush=True)
                return _search(args, search, lambda: (cluster.evaluator(stop=stop.event), cluster.capacity),
                               stats=lambda: "  " + cluster.stats_line(), at_report=cluster.broker.log_counters)
        except ClusterError as exc:
            raise UsageError(str(exc)) from None
        except SearchStopped as exc:
            print(f"evovae: stopped by {stop.name}: {exc}; resume with: evovae search --resume {search.run_dir}",
                  file=sys.stderr)
            return stop.exit_status


def _finish(args: argparse.Namespace, search: SearchRun) -> None:
    strategy, runner = search.strategy, search.runner
    print("final population (best first):")
    for rank_, e in enumerate(strategy.population, 1):
        print(f"{rank_:3d}. {e.loss:9.3f}  {e.genotype}  ({e.epochs} epochs)")
    reason = search.stop_reason.value if search.stop_reason else "nothing more to ask"
    print(f"stopped: {reason}; evaluations: {runner.evaluated} run now, {runner.replayed + runner.reused} from the "
          f"journal ({runner.replayed} replayed, {runner.reused} received before the restart), {runner.cache_hits} "
          f"from the cache; {strategy.asked_epochs} training epochs in all, {runner.epochs_trained} trained now")
    search.finish()
    if args.output:
        Path(args.output).write_text((search.run_dir / "result.json").read_text())
