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
from pathlib import Path
from typing import Any, Callable

from ..evaluation import Evaluation, evaluation_from_metrics
from ..genotype import Genotype, GenotypeError, parse_genotype
from ..head.journal import JournalError, ResultCache, RunJournal
from ..head.evaluators import InProcessEvaluator
from ..head.progress import format_report, search_summary
from ..head.runner import Runner
from ..multifidelity import parse_fidelities
from ..space import SearchSpace
from ..spec import TrainSpec
from ..strategies import StrategyOptions, make_strategy
from ..strategy import Strategy

__all__ = ["SEARCH_KEYS", "UsageError", "genotype_arg", "run", "spec_of"]

#: The options that define a search (stored in its journal; a resumed run takes them from there).
SEARCH_KEYS = ("strategy", "mode", "population", "offspring", "generations", "crossover_rate", "mutation_rate",
               "initial", "max_layers", "seed", "dataset", "epochs", "batch_size", "lr", "train_subset", "val_size",
               "split_seed", "budget_epochs", "fidelities", "eta", "tournament_size", "startup_trials")


class UsageError(Exception):
    """Bad input from the person at the keyboard: one line, exit status 2."""


def spec_of(args: argparse.Namespace) -> TrainSpec:
    try:
        return TrainSpec(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, train_subset=args.train_subset, val_size=args.val_size,
                         split_seed=args.split_seed)
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


def _in_process_evaluator(args: argparse.Namespace, spec: TrainSpec) -> InProcessEvaluator:
    from gpuworker.data import DataError, splits
    from gpuworker.train import evaluate, set_threads

    set_threads(args.threads or None)
    try:
        splits(spec, root=args.data_root, download=args.download)  # fail fast, before any generation
    except DataError as exc:
        raise UsageError(str(exc)) from None

    def one(genotype: Genotype, task_spec: TrainSpec) -> Evaluation:
        result = evaluate(genotype, task_spec, device=args.device, data_root=args.data_root, download=args.download)
        return evaluation_from_metrics(genotype, result.ok, result.metrics(), result.error, epochs=task_spec.epochs)

    return InProcessEvaluator(one)


def _sink(args: argparse.Namespace) -> str:
    from transport.protocol import sink_endpoint

    try:
        return args.sink_bind or sink_endpoint(args.bind)
    except ValueError as exc:
        raise UsageError(f"{exc} (--sink-bind)") from None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _head_curve(args: argparse.Namespace):
    """The broker's CURVE settings from --server-key-secret/--allow/--insecure (None: plain TCP)."""
    from transport.keys import KeyFileError, head_curve

    try:
        return head_curve(args.bind, _sink(args), server_key_secret=args.server_key_secret,
                          allow=args.allow, insecure=args.insecure)
    except KeyFileError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    curve = None if args.in_process else _head_curve(args)  # bad key options create no run directory
    journal = _open_journal(args)
    try:
        spec = spec_of(args)
        strategy = strategy_of(args)
        cache = None
        if args.cache:
            try:
                cache = ResultCache(args.cache)
            except JournalError as exc:
                raise UsageError(str(exc)) from None
        return _run(args, journal, spec, strategy, cache, curve)
    finally:
        journal.close()


def _run(args, journal: RunJournal, spec: TrainSpec, strategy, cache: ResultCache | None, curve=None) -> int:
    started = time.perf_counter()
    stats: Callable[[], str] = lambda: ""
    runner_box: list[Runner] = []

    def progress(report) -> None:
        runner = runner_box[0]
        saved = f"  reused {runner.reused}  cache-hits {runner.cache_hits}" if runner.reused or runner.cache_hits else ""
        print(format_report(report, f"{stats()}{saved}  {time.perf_counter() - started:.0f}s"), flush=True)

    print(f"run directory {journal.run_dir}", flush=True)
    if args.in_process:
        runner = Runner(_in_process_evaluator(args, spec), spec, journal=journal, cache=cache, on_report=progress)
        runner_box.append(runner)
        _drive(args, runner, strategy)
        _finish(args, strategy, spec, runner, started, journal)
        return 0

    import shutil
    import tempfile

    from transport.broker import Broker
    from transport.keys import local_worker_keys

    from ..head.evaluators import DistributedEvaluator, SearchStopped
    from ..head.local_workers import LocalWorkers

    key_args: list[str] = []
    local_keys = None
    if curve is not None and args.local_workers:  # local workers get a key pair of their own, for this run only
        local_keys = tempfile.mkdtemp(prefix="evovae-local-keys-")
        curve, key_args = local_worker_keys(curve, local_keys)
    try:
        broker = Broker(args.bind, _sink(args), heartbeat_s=args.heartbeat,
                        liveness=args.liveness, lease_s=args.lease, max_attempts=args.max_attempts, curve=curve)
    except Exception as exc:  # ValueError: bad settings; zmq.ZMQError: address in use, bad endpoint
        if local_keys:
            shutil.rmtree(local_keys, ignore_errors=True)
        if isinstance(exc, ValueError):
            raise UsageError(str(exc)) from None
        raise UsageError(f"cannot bind {args.bind}: {exc} (is another search running? pick another --bind)") from None
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    worker_args = [*args.worker_arg, *key_args, "--heartbeat", str(args.heartbeat), "--log-format", "json",
                   "--log-level", args.log_level]
    for flag, value in (("--data-root", args.data_root), ("--device", args.device)):
        if value:
            worker_args += [flag, value]
    if args.download:
        worker_args.append("--download")
    workers = LocalWorkers(args.local_workers, broker.ventilator_endpoint, broker.sink_endpoint, worker_args,
                           threads_each=args.threads or max(1, _cores() // max(1, args.local_workers)))

    def broker_stats() -> str:
        st = broker.stats
        return (f"  workers {len(broker.workers())}  resends {st.resends}  lost {st.failures}"
                f"  duplicate-results {st.duplicates}")

    stats = broker_stats
    print(f"ventilator {broker.ventilator_endpoint}  sink {broker.sink_endpoint}  "
          f"local workers {args.local_workers}", flush=True)
    try:
        workers.start()
        evaluator = DistributedEvaluator(broker, stop=stop, tick=workers.check)
        runner = Runner(evaluator, spec, journal=journal, cache=cache, on_report=progress,
                        capacity=lambda: len(broker.workers()))
        runner_box.append(runner)
        _drive(args, runner, strategy)
    except SearchStopped as exc:
        print(f"evovae: stopped by {signal.Signals(received[0]).name}: {exc}; "
              f"resume with: evovae search --resume {journal.run_dir}", file=sys.stderr)
        return 128 + received[0]
    finally:
        workers.stop()
        broker.close()
        if local_keys:
            shutil.rmtree(local_keys, ignore_errors=True)
    _finish(args, strategy, spec, runner, started, journal)
    return 0


def _drive(args, runner: Runner, strategy: Strategy) -> None:
    try:
        runner.replay(strategy)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    runner.run(strategy)


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
