"""``evovae search``: the options become a :class:`~evo.search_config.SearchConfig` (evo/cli/search_options.py),
the run a :class:`~evo.head.search_run.SearchRun`; this module wires it to a trainer in this process or to a
cluster of workers, and shows what a person reads: on a terminal one live progress display (evo/cli/live.py),
elsewhere a plain progress line per report. The head's and the local workers' log lines are kept in
``RUN_DIR/logs/`` (JSON, rotated: evo.cmdline.log_setup.RunLogs) whatever the terminal shows. ``--resume
RUN_DIR`` continues a search that stopped.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cmdline.log_setup import RunLogs, file_level
from ..head.journal import JournalError
from ..head.progress import SearchProgress, format_report
from ..head.search_run import RunDirLocked, SearchRun, StorageError, default_run_dir
from ..head.watched import WatchedEvaluator
from ..search_config import SearchConfig
from .distribution import worker_data_args
from .live import LiveDisplay, WorkersView, quiet_logs, workers_of
from .search_options import (
    UsageError,
    check_data_here,
    check_device,
    check_options,
    cluster_options_of,
    config_of,
    ignored_on_resume,
)

if TYPE_CHECKING:
    from gpuworker.result import TrainResult

    from ..genotype import Genotype
    from ..head.cluster import ClusterOptions
    from ..head.evaluators import InProcessEvaluator, SimulatedEvaluator
    from ..head.tasks import AsyncEvaluator
    from ..spec import TrainSpec
    from ..strategy import Report

__all__ = ["run"]


def _in_process_evaluator(args: argparse.Namespace,
                          checkpoints: Path | None) -> InProcessEvaluator | SimulatedEvaluator:
    """The trainer in this process (gpuworker); with ``checkpoints``, promotions continue from there; with
    ``--simulate-workers N``, results come in the order N workers would deliver them."""
    from gpuworker.checkpoints import CheckpointStore
    from gpuworker.train import evaluate, set_threads

    from ..head.evaluators import InProcessEvaluator, SimulatedEvaluator

    set_threads(args.threads or None)
    store = CheckpointStore(checkpoints) if checkpoints is not None else None

    def train(genotype: Genotype, task_spec: TrainSpec) -> TrainResult:
        return evaluate(genotype, task_spec, device=args.device, data_root=args.data_root, download=args.download,
                        checkpoints=store)

    if args.simulate_workers:
        return SimulatedEvaluator(train, args.simulate_workers)
    return InProcessEvaluator(train)


def _open(args: argparse.Namespace, config: SearchConfig | None) -> SearchRun:
    try:
        if config is None:
            return SearchRun.open(args.resume, cache=args.cache, generations=args.generations)
        return SearchRun.create(args.run_dir or default_run_dir(), config, cache=args.cache)
    except JournalError as exc:  # a refusal of an option names it (exc.option): said here as its flag
        if exc.option is None:
            raise UsageError(str(exc)) from None
        hint = " (or leave the option out)" if exc.option == "generations" else ""
        raise UsageError(f"--{exc.option} {getattr(args, exc.option)}: {exc}{hint}") from None
    except RunDirLocked as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace, parser_defaults: dict[str, Any] | None = None) -> int:
    """Run (or resume) the search ``args`` describe; UsageError (one line, exit status 2) for what is wrong,
    found before a run directory is created, a socket bound or a worker started - and a start refused later
    (a port in use, every local worker unfit) removes what it created while nothing was evaluated. On a
    terminal with the live display, only warnings and errors reach it from the start (RUN_DIR/logs keeps
    every line once the run directory is there)."""
    with quiet_logs():
        return _run(args, parser_defaults)


def _run(args: argparse.Namespace, parser_defaults: dict[str, Any] | None) -> int:
    check_options(args)
    options = cluster_options_of(args)
    ignored = ignored_on_resume(args, parser_defaults or {}) if args.resume else []
    config = None if args.resume else config_of(args)
    if args.in_process or args.local_workers:  # training on this machine: its --device must be here
        check_device(args.device)
    if args.in_process and config is not None:
        check_data_here(args, config.spec)
    search = _open(args, config)
    refused = True
    logs = RunLogs(search.run_dir)  # RUN_DIR/logs: head.log, and the local workers' files
    try:
        if ignored:
            print(f"evovae: note: resuming {search.run_dir}: its journal fixes the search, so "
                  f"{', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored", file=sys.stderr)
        spec = search.config.spec
        data = argparse.Namespace(dataset=spec.dataset, columns=spec.columns, image_size=spec.image_size)
        options = replace(options, worker_data=worker_data_args(data),  # the run's data (a resume: the journal's)
                          log_level=file_level(args.log_level))  # the workers' files keep info; the terminal shows
        #                                                              what --log-level lets through
        checkpoints = search.checkpoints
        if checkpoints is not None and "--checkpoints" not in " ".join(options.worker_args):
            options = replace(options, worker_args=(*options.worker_args, f"--checkpoints={checkpoints}"))
        if getattr(args, "dashboard_mirror", True):  # RUN_DIR/optuna-journal.log, for evovae dashboard
            from .dashboard import attach_mirror

            attach_mirror(search)
        progress = SearchProgress(search.strategy, max_evaluations=search.config.options.max_evaluations)
        search.observe(progress.observe)  # before the replay: what the journal holds counts
        try:
            search.replay()  # a journal that does not replay is refused before any socket is bound
        except JournalError as exc:
            raise UsageError(str(exc)) from None
        print(f"run directory {search.run_dir}", flush=True)
        if args.in_process:
            evaluator = _in_process_evaluator(args, checkpoints)
            capacity = getattr(evaluator, "capacity", lambda: 1)
            status = _search(args, search, progress, lambda: (evaluator, capacity))
        else:
            status = _search_on_cluster(args, search, progress, options, logs)
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
        logs.close()
        search.close(refused=refused)
        if refused and not search.evaluated:
            logs.close(remove=True)


def _search(args: argparse.Namespace, search: SearchRun, progress: SearchProgress,
            wiring: Callable[[], tuple[AsyncEvaluator, Callable[[], int]]], stats: Callable[[], str] = lambda: "",
            at_report: Callable[[], object] = lambda: None,
            workers: Callable[[], WorkersView] | None = None) -> int:
    started = time.perf_counter()
    runner = search.runner
    with LiveDisplay() as display:
        sampled = [0.0]

        def polled(finished: object) -> None:  # after every poll of the evaluator, in this thread
            now = time.monotonic()
            if workers is not None and now - sampled[0] >= 0.5:
                sampled[0] = now
                display.show(workers=workers())
            display.show(progress.view())

        def report_line(report: Report) -> None:
            at_report()  # the head's counters in the log at every report, for an operator after a kill -9
            if display.active:
                display.show(last=format_report(report))
                return
            saved = (f"  reused {runner.reused + runner.replayed}  cache-hits {runner.cache_hits}"
                     if runner.reused or runner.replayed or runner.cache_hits else "")
            print(format_report(report, f"{progress.view().line()}{stats()}{saved}  "
                                        f"{time.perf_counter() - started:.0f}s"), flush=True)

        evaluator, capacity = wiring()
        search.observe(lambda *told: display.show(progress.view()))
        display.show(progress.view(), phase=f"{search.run_dir}")
        progress.start()
        search.run(WatchedEvaluator(evaluator, polled), capacity, on_report=report_line)
        display.show(progress.view(), workers=workers() if workers is not None else None)  # the final frame
    _finish(args, search, evaluator)
    return 0


def _search_on_cluster(args: argparse.Namespace, search: SearchRun, progress: SearchProgress,
                       options: ClusterOptions, logs: RunLogs) -> int:
    from ..cmdline.signals import stop_signals
    from ..head.cluster import Cluster, ClusterError
    from ..head.evaluators import SearchStopped

    with stop_signals() as stop:
        try:
            with Cluster(options, worker_output=logs.workers) as cluster:
                broker = cluster.live_broker
                if threading.current_thread() is threading.main_thread():  # SIGHUP: re-read the --allow keys
                    signal.signal(signal.SIGHUP, lambda *_: broker.request_reload())
                print(cluster.describe(), flush=True)
                if not options.local_workers:  # e.g. a resume that left --local-workers out: say what it waits for
                    print(f"waiting for workers: run `evovae worker --connect {broker.ventilator_endpoint}` "
                          "on each node (or resume with --local-workers N)", flush=True)
                return _search(args, search, progress, lambda: (cluster.evaluator(stop=stop.event), cluster.capacity),
                               stats=lambda: "  " + cluster.stats_line(), at_report=broker.log_counters,
                               workers=lambda: workers_of(cluster))
        except ClusterError as exc:
            raise UsageError(str(exc)) from None
        except SearchStopped as exc:
            print(f"evovae: stopped by {stop.name}: {exc}; resume with: evovae search --resume {search.run_dir}",
                  file=sys.stderr)
            return stop.exit_status


def _finish(args: argparse.Namespace, search: SearchRun, evaluator: AsyncEvaluator) -> None:
    strategy, runner = search.strategy, search.runner
    print("final population (best first):")
    for rank_, e in enumerate(strategy.population, 1):
        print(f"{rank_:3d}. {e.loss:9.3f}  {e.genotype}  ({e.epochs} epochs)")
    summary = search.summary()
    summary["space"] = asdict(search.config.space)  # the grid searched (the options, the latent capped)
    simulated = getattr(evaluator, "summary", None)
    if simulated is not None:  # --simulate-workers: the simulated clock, for anytime-against-time plots
        summary["simulated"] = simulated()
        print(f"simulated: {args.simulate_workers} workers, {summary['simulated']['seconds']:.0f} s of wall clock")
    reason = search.stop_reason.value if search.stop_reason else "nothing more to ask"  # the last line says why
    print(f"stopped: {reason}; evaluations: {runner.evaluated} run now, {runner.replayed + runner.reused} from the "
          f"journal ({runner.replayed} replayed, {runner.reused} received before the restart), {runner.cache_hits} "
          f"from the cache; {strategy.asked_epochs} training epochs in all, {runner.epochs_trained} trained now")
    search.finish(summary)
    if args.output:
        Path(args.output).write_text((search.run_dir / "result.json").read_text())
