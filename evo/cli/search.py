"""``evovae search``: the options become a :class:`~evo.search_config.SearchConfig` (evo/cli/search_options.py),
the run a :class:`~evo.head.search_run.SearchRun`; this module wires it to a trainer in this process
(evo/cli/in_process.py) or to a cluster of workers, and shows what a person reads while it runs (the end:
evo/cli/search_end.py): on a terminal one live progress display (evo/cli/live.py),
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
from typing import TYPE_CHECKING, Any

from ..cmdline.log_setup import RunLogs, file_level
from ..head.journal import JournalError
from ..head.progress import SearchProgress, format_report
from ..head.search_run import RunDirLocked, SearchRun, StorageError, default_run_dir
from ..head.watched import WatchedEvaluator
from ..search_config import SearchConfig
from .distribution import for_run
from .in_process import in_process_evaluator
from .live import LiveDisplay, WorkersView, quiet_logs, workers_of
from .search_end import finish
from .search_options import (
    UsageError,
    check_data_here,
    check_device,
    check_options,
    cluster_options_of,
    config_of,
    ignored_on_resume,
    resume_command,
)

if TYPE_CHECKING:
    from ..head.cluster import ClusterOptions
    from ..head.tasks import AsyncEvaluator
    from ..strategy import Report

__all__ = ["run"]


def _open(args: argparse.Namespace, config: SearchConfig | None) -> SearchRun:
    try:
        if config is None:
            return SearchRun.open(args.resume, cache=args.cache, generations=args.generations)
        return SearchRun.create(args.run_dir or default_run_dir(), config, cache=args.cache)
    except JournalError as exc:  # a refusal of an option names it (exc.option): said here as its flag
        if exc.option is None:
            raise UsageError(str(exc)) from None
        hint = " (or leave the option out)" if exc.option == "generations" else ""
        raise UsageError(f"--{exc.option} {getattr(args, exc.option, '')}: {exc}{hint}") from None
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
        checkpoints = search.checkpoints  # the workers' files keep info; the terminal shows what --log-level does
        options = for_run(options, search.config.spec, checkpoints, log_level=file_level(args.log_level))
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
            evaluator = in_process_evaluator(checkpoints, device=args.device, threads=args.threads or 0,
                                             data_root=args.data_root, download=args.download,
                                             simulate_workers=args.simulate_workers)
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
              f"{resume_command(args, search.run_dir)}", file=sys.stderr)
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
    finish(search, evaluator, output=args.output)
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
            print(f"evovae: stopped by {stop.name}: {exc}; resume with: {resume_command(args, search.run_dir)}",
                  file=sys.stderr)
            return stop.exit_status
