"""Named searches and one-off task batches inside an experiment's run directory, each with a journal of its
own, so an experiment killed at any moment continues where it stopped: a finished search is read back from
its ``result.json``, an unfinished one is replayed from its journal and run on, a batch of tasks reuses every
result its journal holds."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from ..cli.dashboard import attach_mirror, mirror_into
from ..evaluation import Evaluation
from ..genotype import Genotype
from ..head.cache import ResultCache
from ..head.evaluators import SimulatedEvaluator
from ..head.journal import RunJournal
from ..head.progress import search_summary
from ..head.runner import Runner
from ..head.search_run import SearchRun, StrategyRun
from ..head.tasks import AsyncEvaluator, Finished, Task
from ..head.watched import WatchedEvaluator
from ..search_config import SearchConfig
from ..space import SearchSpace
from ..spec import TrainSpec
from ..strategies import StrategyOptions
from ..strategy import Report, Strategy

__all__ = ["BenchWatch", "SearchBench", "evaluation_rows"]

log = structlog.get_logger(__name__)


class BenchWatch(Protocol):
    """What a person watching an experiment is told (evo/cli/live.py shows it), all from the head's thread."""

    def search(self, name: str, strategy: Strategy, runner: Runner, max_evaluations: int | None) -> None:
        """Search ``name`` is about to be replayed and run on: observe ``runner`` (``runner.observers``) here."""

    def tasks(self, name: str, total: int, known: int) -> None:
        """The task batch ``name`` begins: ``total`` tasks, ``known`` of them done before (journal, cache)."""

    def polled(self, finished: list[Finished]) -> None:
        """After every poll of the evaluator, with what finished (often nothing)."""


class SearchBench:
    """Runs named searches and task batches under ``root`` through one evaluator and one shared cache. With
    ``simulate`` N > 0 every search decides as N workers would: its tasks are trained by the evaluator one at a
    time, and told in the order N simulated workers would deliver them, on a clock in epochs trained
    (:meth:`SimulatedEvaluator.over`; a fresh clock per search, recorded as ``simulated`` in its result).
    Task batches (the fidelity study, the retrainings) are unaffected."""

    def __init__(self, root: Path, evaluator: AsyncEvaluator, capacity: Callable[[], int], *,
                 cache: ResultCache | None = None, space: SearchSpace = SearchSpace(),
                 on_report: Callable[[str, Report], None] | None = None, watch: BenchWatch | None = None,
                 simulate: int = 0) -> None:
        if type(simulate) is not int or simulate < 0:
            raise ValueError(f"simulate must be a whole number of workers (0: none), got {simulate!r}")
        self.simulate = simulate
        self.root = Path(root)
        self.watch = watch
        self.evaluator: AsyncEvaluator = evaluator if watch is None else WatchedEvaluator(evaluator, watch.polled)
        self.capacity = capacity
        self.cache = cache
        self.space = space
        self.on_report = on_report
        self.trained_now = 0  # results that came from evaluation in this process (not journal or cache)

    def search(self, name: str, options: StrategyOptions, spec: TrainSpec,
               summary: Callable[[Strategy], dict[str, Any]] = search_summary) -> dict[str, Any]:
        """The summary of search ``name`` (``summary(strategy)``, by default evo.head.progress.search_summary,
        plus ``name``, ``spec``, ``stop_reason`` and ``seconds``: the wall time of the run that finished it),
        running the search first if needed."""
        directory = self.root / "searches" / name
        if (directory / "result.json").is_file():
            return json.loads((directory / "result.json").read_text())
        with SearchRun.named(directory, SearchConfig(options, spec, self.space), cache=self._runner_cache) as run:
            attach_mirror(run)  # searches/NAME/optuna-journal.log, for evovae dashboard
            return self._run_on(name, run, summary, {}, options.max_evaluations)

    def peer(self, name: str, config: dict[str, Any], make: Callable[[Path], Strategy],
             spec: TrainSpec) -> dict[str, Any]:
        """The summary of search ``name`` driven by a strategy that is no engine strategy (a peer library's
        optimizer, evo.experiments.peers): ``make(directory)`` builds it fresh; ``config`` (JSON-able) is what
        defines it. As :meth:`search`: read back from ``result.json`` when finished, else its journal (which
        holds ``config`` and ``spec``; another config there is refused) is replayed through the fresh strategy
        and the search run on through this bench's evaluator and cache."""
        directory = self.root / "searches" / name
        if (directory / "result.json").is_file():
            return json.loads((directory / "result.json").read_text())
        stored = {"peer": config, "spec": spec.to_dict()}
        with StrategyRun.of(directory, stored, spec, lambda: make(directory), cache=self._runner_cache) as run:
            mirror_into(run.runner, directory, self.space, spec.epochs, spec)
            return self._run_on(name, run, search_summary, {"peer": config}, None)

    def _run_on(self, name: str, run: StrategyRun, summary: Callable[[Strategy], dict[str, Any]],
                extra: dict[str, Any], max_evaluations: int | None) -> dict[str, Any]:
        """Replay ``run`` and run it on through this bench's evaluator; write and return its result
        (``summary(strategy)`` with ``name``, ``spec``, ``extra``, ``stop_reason``, ``seconds``)."""
        if self.watch is not None:
            self.watch.search(name, run.strategy, run.runner, max_evaluations)
        run.replay()
        on_report = self.on_report
        report = (lambda r: on_report(name, r)) if on_report else None
        evaluator, capacity = self._search_evaluator()
        reason = run.run(evaluator, capacity, on_report=report)
        self.trained_now += run.runner.evaluated - self._cache_hits(evaluator)
        result = run.finish({"name": name, **summary(run.strategy), "spec": run.spec.to_dict(), **extra,
                             "stop_reason": reason.value if reason else None,
                             "seconds": run.summary()["seconds"], **self._simulated(evaluator)})
        log.info("experiment.search_done", name=name, best=result["best"], epochs=result["epochs_total"])
        return result

    @property
    def _runner_cache(self) -> ResultCache | None:
        """The cache a search's Runner reads: none when simulating (the simulated workers take known results
        from it, told when they would finish, not at once)."""
        return None if self.simulate else self.cache

    def _search_evaluator(self) -> tuple[AsyncEvaluator, Callable[[], int]]:
        """What one search runs through: this bench's evaluator, or N simulated workers on it."""
        if not self.simulate:
            return self.evaluator, self.capacity
        simulated = SimulatedEvaluator.over(self.evaluator, self.simulate, cache=self.cache)
        return simulated, simulated.capacity

    @staticmethod
    def _cache_hits(evaluator: AsyncEvaluator) -> int:
        """Results a simulated search took from the cache (told through it, not trained)."""
        return evaluator.cache_hits if isinstance(evaluator, SimulatedEvaluator) else 0

    @staticmethod
    def _simulated(evaluator: AsyncEvaluator) -> dict[str, Any]:
        return {"simulated": evaluator.summary()} if isinstance(evaluator, SimulatedEvaluator) else {}

    def tasks(self, name: str, items: Sequence[tuple[Genotype, TrainSpec]]) -> list[Evaluation]:
        """Evaluations of ``items`` (in order), journaled under ``tasks/name``; known results are not re-run."""
        directory = self.root / "tasks" / name
        if (directory / RunJournal.FILE).is_file():
            journal = RunJournal.open(directory)
        else:
            journal = RunJournal.create(directory, {"tasks": name})
        try:
            runner = Runner(items[0][1] if items else TrainSpec(), journal=journal, cache=self.cache)
            if self.watch is not None:
                self.watch.tasks(name, *self._known(journal, items))
            results = runner.evaluate_specs(list(items), self.evaluator)
            self.trained_now += runner.evaluated
        finally:
            journal.close()
        return [results[Task.of(g, spec).task_id] for g, spec in items]

    def _known(self, journal: RunJournal, items: Sequence[tuple[Genotype, TrainSpec]]) -> tuple[int, int]:
        """The distinct tasks of ``items``, and how many of them have a result already (in the batch's journal
        or the shared cache)."""
        ids = list(dict.fromkeys(Task.of(g, spec).task_id for g, spec in items))
        found = set(journal.results_for(ids))
        if self.cache is not None and len(found) < len(ids):
            hits = self.cache.hits
            found.update(self.cache.get_many([t for t in ids if t not in found]))
            self.cache.hits = hits  # a look, not a use: the runner counts the hits it takes
        return len(ids), len(found)


def evaluation_rows(strategy: Strategy) -> list[dict[str, Any]]:
    """Every evaluation of a generational search with the trainer's figures, in the order its candidates were
    asked for, each with the generation it belongs to (a generation's results are all told before the next
    is asked, so the told order splits into generations by the reports' counts)."""
    generation_of: list[int] = []
    for report in strategy.history:
        generation_of += [report.generation] * report.evaluated
    asked = {g: i for i, g in enumerate(strategy.seen)}  # first asked first
    evaluations = strategy.evaluations
    rows = []
    for k, e in enumerate(evaluations):
        m = e.measurement
        rows.append({
            "generation": generation_of[k] if k < len(generation_of) else len(strategy.history),
            "genotype": str(e.genotype), "epochs": e.epochs, "state": e.state.value, "loss": e.loss,
            "recon": m.recon, "kl": m.kl, "fitness": e.fitness, "parameters": m.params or None,
            "curve": list(m.curve), "seconds": e.seconds, "error": e.error,
        })
    order = sorted(range(len(rows)), key=lambda k: (rows[k]["generation"], asked[evaluations[k].genotype]))
    return [rows[k] for k in order]
