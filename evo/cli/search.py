"""``evovae search``: build the engine, the evaluator, the journal and the cache, and run.

The in-process mode trains in this process (imports torch through gpuworker);
the distributed mode binds a ventilator and a sink (imports transport) and
optionally starts local workers. Either way every search has a run directory
with its journal, and ``--resume RUN_DIR`` continues a search that stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..evaluation import Evaluation, evaluation_from_metrics
from ..genotype import Genotype, GenotypeError, parse_genotype
from ..head.journal import JournalError, ResultCache, RunJournal
from ..head.progress import format_report, search_summary
from ..head.runner import Runner
from ..multifidelity import parse_fidelities
from ..space import SearchSpace
from ..spec import TrainSpec
from .data_options import spec_from_args
from .distribution import worker_data_args
from ..strategies import StrategyOptions, make_strategy
from ..strategy import Strategy

__all__ = ["SEARCH_KEYS", "UsageError", "genotype_arg", "run", "spec_of"]

#: The options that define a search (stored in its journal; a resumed run takes them from there).
SEARCH_KEYS = ("strategy", "mode", "population", "offspring", "generations", "crossover_rate", "mutation_rate",
               "initial", "max_layers", "seed", "dataset", "epochs", "batch_size", "lr", "train_subset", "val_size",
               "split_seed", "budget_epochs", "fidelities", "eta", "tournament_size", "startup_trials",
               "likelihood", "data_sha256", "columns", "image_size")


class UsageError(Exception):
    """Bad input from the person at the keyboard: one line, exit status 2."""


def spec_of(args: argparse.Namespace) -> TrainSpec:
    try:  # own data is read, fingerprinted and split here, as the workers will (evo/cli/data_options.py)
        return spec_from_args(args, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              train_subset=args.train_subset, val_size=args.val_size, split_seed=args.split_seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def genotype_arg(text: str) -> Genotype:
    try:
        return parse_genotype(text)
    except GenotypeError as exc:
        raise UsageError(str(exc)) from None


def options_of(args: argparse.Namespace) -> StrategyOptions:
    """The strategy's options from the command line (or from a resumed run's journal)."""
    try:
        space = SearchSpace(max_layers=args.max_layers)
        initial = tuple(space.validate(genotype_arg(t)) for t in args.initial)
        fidelities = args.fidelities
        if isinstance(fidelities, str):
            fidelities = parse_fidelities(fidelities)
        return StrategyOptions(
            strategy=args.strategy, population=args.population, offspring=args.offspring,
            generations=args.generations, budget_epochs=args.budget_epochs, epochs=args.epochs,
            fidelities=tuple(fidelities or ()), eta=args.eta, mode=args.mode, tournament_size=args.tournament_size,
            startup_trials=args.startup_trials, crossover_rate=args.crossover_rate,
            mutation_rate=args.mutation_rate, initial=initial, seed=args.seed)
    except (ValueError, GenotypeError) as exc:
        raise UsageError(str(exc)) from None


def strategy_of(args: argparse.Namespace) -> Strategy:
    try:
        return make_strategy(options_of(args), SearchSpace(max_layers=args.max_layers))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _summary(strategy: Strategy, spec: TrainSpec, runner: Runner, seconds: float, run_dir: Path) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        "spec": spec.to_dict(),
        **search_summary(strategy),
        "evaluated_now": runner.evaluated,
        "reused_from_journal": runner.reused,
        "replayed_from_journal": runner.replayed,
        "cache_hits": runner.cache_hits,
        "epochs_trained_now": runner.epochs_trained,
        "train_seconds_now": round(runner.train_seconds, 3),
        "seconds": seconds,
    }


def _open_journal(args: argparse.Namespace) -> RunJournal:
    try:
        if args.resume:
            journal = RunJournal.open(args.resume)
            generations = args.generations
            for key, value in journal.config.items():
                setattr(args, key, value)
            if generations is not None:  # a resumed search may be given more generations
                args.generations = generations
            return journal
        if args.generations is None and args.budget_epochs is None:
            args.generations = 5
        if isinstance(args.fidelities, str):  # stored as a list of epochs
            args.fidelities = list(options_of(args).fidelities)
        spec_of(args), strategy_of(args)  # a bad option creates no run directory
        run_dir = Path(args.run_dir or Path("runs") / time.strftime(f"search-%Y%m%dT%H%M%SZ-{os.getpid()}",
                                                                   time.gmtime()))
        return RunJournal.create(run_dir, {key: getattr(args, key) for key in SEARCH_KEYS})
    except JournalError as exc:
        raise UsageError(str(exc)) from None


def _in_process_evaluator(args: argparse.Namespace, spec: TrainSpec):
    from gpuworker.data import DataError, splits
    from gpuworker.train import evaluate, set_threads

    from ..head.evaluators import InProcessEvaluator

    set_threads(args.threads or None)
    try:
        splits(spec, root=args.data_root, download=args.download)  # fail fast, before any generation
    except DataError as exc:
        raise UsageError(str(exc)) from None

    def one(genotype: Genotype, task_spec: TrainSpec) -> Evaluation:
        result = evaluate(genotype, task_spec, device=args.device, data_root=args.data_root, download=args.download)
        return evaluation_from_metrics(genotype, result.ok, result.metrics(), result.error, epochs=task_spec.epochs)

    return InProcessEvaluator(one)


def _cluster_options(args: argparse.Namespace):
    """The cluster's options, checked even with --in-process (a bad value is an error either way)."""
    from ..head.cluster import Cluster, ClusterError
    from .distribution import cluster_options

    try:
        options = cluster_options(args)
        if not args.in_process:
            Cluster(options)  # reads the key files: bad security options fail before anything is created
        return options
    except ClusterError as exc:
        raise UsageError(str(exc)) from None


def _ignored_on_resume(args: argparse.Namespace, parser_defaults: dict[str, Any]) -> list[str]:
    """The search options given on the command line that a resumed run takes from its journal instead."""
    return [f"--{key.replace('_', '-')}" for key in SEARCH_KEYS
            if key != "generations" and key in parser_defaults and getattr(args, key) != parser_defaults[key]]


def run(args: argparse.Namespace, parser_defaults: dict[str, Any] | None = None) -> int:
    options = _cluster_options(args)
    ignored = _ignored_on_resume(args, parser_defaults or {}) if args.resume else []
    evaluator = None
    if args.in_process and not args.resume:  # missing data is an error before a run directory exists
        evaluator = _in_process_evaluator(args, spec_of(args))
    journal = _open_journal(args)
    try:
        if ignored:
            print(f"evovae: note: resuming {journal.run_dir}: its journal fixes the search, so "
                  f"{', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored", file=sys.stderr)
        spec = spec_of(args)
        options = replace(options, worker_data=worker_data_args(args))  # the run's data (a resume: the journal's)
        strategy = strategy_of(args)
        cache = None
        if args.cache:
            try:
                cache = ResultCache(args.cache)
            except JournalError as exc:
                raise UsageError(str(exc)) from None
        runner = Runner(None, spec, journal=journal, cache=cache)  # the evaluator comes once the replay passed
        try:
            runner.replay(strategy)  # a journal that does not replay is refused before any socket is bound
        except JournalError as exc:
            raise UsageError(str(exc)) from None
        return _run(args, runner, strategy, options, evaluator)
    finally:
        journal.close()


def _run(args, runner: Runner, strategy: Strategy, options, evaluator=None) -> int:
    started = time.perf_counter()
    journal = runner.journal
    stats: list[Callable[[], str]] = [lambda: ""]
    at_generation: list[Callable[[], object]] = [lambda: None]

    def progress(report) -> None:
        at_generation[0]()  # the head's counters in the log at every generation, for an operator after a kill -9
        saved = (f"  reused {runner.reused + runner.replayed}  cache-hits {runner.cache_hits}"
                 if runner.reused or runner.replayed or runner.cache_hits else "")
        print(format_report(report, f"{stats[0]()}{saved}  {time.perf_counter() - started:.0f}s"), flush=True)

    runner.on_report = progress
    print(f"run directory {journal.run_dir}", flush=True)
    if args.in_process:
        runner.evaluator = evaluator or _in_process_evaluator(args, runner.spec)
        runner.run(strategy)
        _finish(args, strategy, runner.spec, runner, started, journal)
        return 0

    from ..head.cluster import Cluster, ClusterError
    from ..head.evaluators import SearchStopped
    from .signals import stop_signals

    with stop_signals() as stop:
        try:
            with Cluster(options) as cluster:
                if threading.current_thread() is threading.main_thread():  # SIGHUP: re-read the --allow keys
                    signal.signal(signal.SIGHUP, lambda *_: cluster.broker.request_reload())
                print(cluster.describe(), flush=True)
                stats[0] = lambda: "  " + cluster.stats_line()
                at_generation[0] = cluster.broker.log_counters
                runner.evaluator = cluster.evaluator(stop=stop.event)
                runner.capacity = cluster.capacity
                runner.run(strategy)
        except ClusterError as exc:
            raise UsageError(str(exc)) from None
        except SearchStopped as exc:
            print(f"evovae: stopped by {stop.name}: {exc}; resume with: evovae search --resume {journal.run_dir}",
                  file=sys.stderr)
            return stop.exit_status
    _finish(args, strategy, runner.spec, runner, started, journal)
    return 0


def _finish(args, strategy, spec: TrainSpec, runner: Runner, started: float, journal: RunJournal) -> None:
    print("final population (best first):")
    for rank_, e in enumerate(strategy.population, 1):
        print(f"{rank_:3d}. {e.loss:9.3f}  {e.genotype}  ({e.epochs} epochs)")
    print(f"evaluations: {runner.evaluated} run now, {runner.replayed + runner.reused} from the journal "
          f"({runner.replayed} replayed, {runner.reused} received before the restart), {runner.cache_hits} from "
          f"the cache; {strategy.asked_epochs} training epochs in all, {runner.epochs_trained} trained now")
    summary = json.dumps(_summary(strategy, spec, runner, time.perf_counter() - started, journal.run_dir), indent=2)
    (journal.run_dir / "result.json").write_text(summary)
    if args.output:
        Path(args.output).write_text(summary)
