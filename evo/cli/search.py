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
import re
import shutil
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from gpuworker.data_options import spec_from_args

from ..evaluation import Evaluation, evaluation_from_metrics
from ..genotype import Genotype, GenotypeError, parse_genotype
from ..head.journal import JournalError, ResultCache, RunJournal
from ..head.progress import format_report, search_summary
from ..head.runner import Runner
from ..multifidelity import parse_fidelities
from ..space import SearchSpace
from ..spec import TrainSpec
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
        raise UsageError(_with_flags(str(exc))) from None


#: the names of the engine's messages that are options of ``evovae search`` (said as the flag)
_AS_FLAGS = re.compile(r"\b(tournament_size|startup_trials|crossover_rate|mutation_rate|budget_epochs|max_layers)\b")


_AS_FLAG_AT_START = re.compile(r"^(fidelities|mode)\b")


def _with_flags(message: str) -> str:
    """An engine's message with the options it speaks of said as ``evovae search`` flags."""
    message = _AS_FLAGS.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)
    return _AS_FLAG_AT_START.sub(r"--\1", message).replace(" need mode ", " need --mode ")


def strategy_of(args: argparse.Namespace) -> Strategy:
    try:
        return make_strategy(options_of(args), SearchSpace(max_layers=args.max_layers))
    except ValueError as exc:
        raise UsageError(_with_flags(str(exc))) from None


def check_options(args: argparse.Namespace) -> None:
    """What the options say together, for a new search (each value was checked while parsing; a resumed one
    takes them from its journal). UsageError naming the options; nothing is created or read here."""
    if args.in_process and args.local_workers:
        raise UsageError(f"--local-workers {args.local_workers} starts worker processes, --in-process trains here "
                         "without any: give one of them")
    if args.resume:
        return
    space = SearchSpace(max_layers=args.max_layers)
    initial = []
    for text in args.initial:  # also from a --config file, whose lists argparse does not check
        try:
            initial.append(space.validate(parse_genotype(text)))
        except GenotypeError as exc:
            raise UsageError(f"--initial: {exc}") from None
    twice = sorted({str(g) for g in initial if initial.count(g) > 1})
    if twice:
        raise UsageError(f"--initial gives {', '.join(twice)} more than once; give each genotype once")
    if len(initial) > args.population:
        raise UsageError(f"--initial gives {len(initial)} genotypes, more than --population {args.population} holds")
    if args.strategy == "regularized" and args.tournament_size > args.population:
        raise UsageError(f"--tournament-size {args.tournament_size} is larger than --population {args.population} "
                         f"(the queue it draws from); give at most {args.population}")


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


class _Created:
    """What a start creates (a new run directory, a new cache file, with the parent directories made for
    them): removed again when the start is refused before anything was evaluated, so it leaves nothing."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.emptied: list[Path] = []  # directories that were there, empty: what goes into them is removed

    def note(self, path: str | Path) -> None:
        """Call before ``path`` is created: the outermost of it and its parents that does not exist yet (an
        empty directory that exists already is kept, and emptied again)."""
        path = Path(path).absolute()
        if path.is_dir() and not any(path.iterdir()):
            self.emptied.append(path)
        if path.exists():
            return
        while not path.parent.exists():
            path = path.parent
        self.paths.append(path)

    def remove(self) -> None:
        for path in reversed(self.paths):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            for leftover in (path, *(path.with_name(path.name + end) for end in ("-wal", "-shm", "-journal"))):
                if leftover.is_file():
                    leftover.unlink()
        for directory in self.emptied:
            for child in directory.iterdir() if directory.is_dir() else ():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()


#: the strategy of a search that names none: the best of docs/results/fashion-mnist-compare-cpu (see
#: docs/experiments.md); the paper's evolution where an option only it has is given
DEFAULT_STRATEGY = "tpe"


def default_strategy(args: argparse.Namespace) -> None:
    """Fill in ``--strategy`` (and, for the default TPE at 3 or more epochs, its rungs) when it was not given:
    multi-fidelity TPE with rungs (0.3 x E, E), as measured best; evolution with --mode steady-state or
    --initial, which only it takes."""
    if args.strategy is not None:
        return
    if args.mode != "generational" or args.initial:  # the paper's steady-state future work; seeded generation 0
        args.strategy = "evolution"
        return
    args.strategy = DEFAULT_STRATEGY
    if args.fidelities is None and args.epochs >= 3:
        args.fidelities = [max(1, round(0.3 * args.epochs)), args.epochs]


def _complete(args: argparse.Namespace) -> None:
    """A new search's options as the journal stores them: the strategy, 5 generations unless an end is given,
    the fidelities as a list of epochs."""
    default_strategy(args)
    if args.generations is None and args.budget_epochs is None:
        args.generations = 5
    if isinstance(args.fidelities, str):
        args.fidelities = list(options_of(args).fidelities)


def _check_device(name: str | None) -> None:
    if not name or name == "cpu":
        return
    from gpuworker.train import check_device

    try:
        check_device(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _open_journal(args: argparse.Namespace, created: _Created) -> RunJournal:
    try:
        if args.resume:
            journal = RunJournal.open(args.resume)
            generations = args.generations
            for key, value in journal.config.items():
                setattr(args, key, value)
            if generations is not None:  # a resumed search may be given more generations, not fewer
                started = journal.config.get("generations")
                if started is not None and generations < started:
                    journal.close()
                    raise UsageError(f"--generations {generations}: {args.resume} was started for {started}; a "
                                     f"resume may give more, not fewer (or leave the option out)")
                args.generations = generations
            return journal
        run_dir = Path(args.run_dir or Path("runs") / time.strftime(f"search-%Y%m%dT%H%M%SZ-{os.getpid()}",
                                                                   time.gmtime()))
        config = {key: getattr(args, key) for key in SEARCH_KEYS}
        if not (run_dir.exists() and any(run_dir.iterdir())):  # the journal refuses a used one untouched
            created.note(run_dir)
        try:
            return RunJournal.create(run_dir, config)
        except OSError as exc:  # e.g. no room, or a place where nothing can be made
            created.remove()
            raise UsageError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
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
    """The cluster's options, checked even with --in-process (a bad value is an error either way; each was
    checked while parsing, the key files are read here)."""
    from ..head.cluster import Cluster, ClusterError
    from .distribution import cluster_options

    try:
        options = cluster_options(args)
        if not args.in_process or args.server_key_secret or args.allow:
            Cluster(options)  # reads the key files: bad security options fail before anything is created
        return options
    except ClusterError as exc:
        raise UsageError(str(exc)) from None


def _ignored_on_resume(args: argparse.Namespace, defaults: dict[str, Any]) -> list[str]:
    """The options given (on the command line or in the ``--config`` file) that a resumed run takes from its
    journal instead (and ``--run-dir``: the run directory is RUN_DIR). ``defaults`` are the parser's own
    defaults, before a settings file changed them; ``args.config_values`` what the file set, if any."""
    from_file = getattr(args, "config_values", None) or {}
    ignored = []
    for key in (*SEARCH_KEYS, "run_dir"):
        if key == "generations" or key not in defaults or getattr(args, key) == defaults[key]:
            continue
        flag = f"--{key.replace('_', '-')}"
        in_file = key in from_file and getattr(args, key) == from_file[key]
        ignored.append(f"{flag} (from {args.config})" if in_file else flag)
    return ignored


def run(args: argparse.Namespace, parser_defaults: dict[str, Any] | None = None) -> int:
    """Run (or resume) the search ``args`` describe; UsageError (one line, exit status 2) for what is wrong,
    found before a run directory is created, a socket bound or a worker started - and a start refused later
    (a port in use, every local worker unfit) removes what it created while nothing was evaluated."""
    check_options(args)
    options = _cluster_options(args)
    ignored = _ignored_on_resume(args, parser_defaults or {}) if args.resume else []
    if not args.resume:
        _complete(args)
        strategy_of(args)  # options the strategy refuses, before any data is read
    if args.in_process or args.local_workers:  # training on this machine: its --device must be here
        _check_device(args.device)
    # a new search's data is read, fingerprinted and split once, before a run directory exists (a resumed
    # one's comes from its journal, below)
    spec = None if args.resume else spec_of(args)
    evaluator = _in_process_evaluator(args, spec) if args.in_process and spec is not None else None
    created = _Created()
    journal = _open_journal(args, created)
    cache = runner = None
    refused = False
    try:
        if ignored:
            print(f"evovae: note: resuming {journal.run_dir}: its journal fixes the search, so "
                  f"{', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored", file=sys.stderr)
        spec = spec if spec is not None else spec_of(args)
        options = replace(options, worker_data=worker_data_args(args))  # the run's data (a resume: the journal's)
        strategy = strategy_of(args)
        if args.cache:
            created.note(args.cache)
            try:
                cache = ResultCache(args.cache)
            except JournalError as exc:
                raise UsageError(f"--cache: {exc}") from None
            except (OSError, sqlite3.Error) as exc:
                raise UsageError(f"--cache {args.cache}: cannot open or create it ({exc})") from None
        runner = Runner(None, spec, journal=journal, cache=cache)  # the evaluator comes once the replay passed
        try:
            runner.replay(strategy)  # a journal that does not replay is refused before any socket is bound
        except JournalError as exc:
            raise UsageError(str(exc)) from None
        return _run(args, runner, strategy, options, evaluator)
    except UsageError:
        refused = runner is None or not (runner.evaluated or runner.cache_hits)
        raise
    finally:
        if cache is not None:
            cache.close()
        journal.close()
        if refused:
            created.remove()


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
