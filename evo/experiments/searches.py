"""Named searches and one-off task batches inside an experiment's run directory, each with a journal of its
own, so an experiment killed at any moment continues where it stopped: a finished search is read back from
its ``result.json``, an unfinished one is replayed from its journal and run on, a batch of tasks reuses every
result its journal holds."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import structlog

from ..evaluation import Evaluation
from ..genotype import Genotype
from ..head.cache import ResultCache
from ..head.journal import RunJournal
from ..head.progress import search_summary
from ..head.runner import AsyncEvaluator, Runner
from ..space import SearchSpace
from ..spec import TrainSpec, task_id
from ..strategies import StrategyOptions, make_strategy
from ..strategy import Report, Strategy

__all__ = ["SearchBench", "evaluation_rows", "options_config"]

log = structlog.get_logger(__name__)


def options_config(options: StrategyOptions, spec: TrainSpec) -> dict[str, Any]:
    """What a named search's journal stores (a resumed one must match it)."""
    data = asdict(options)
    data["initial"] = [str(g) for g in options.initial]
    data["fidelities"] = list(options.fidelities)
    return {"options": data, "spec": spec.to_dict()}


class SearchBench:
    """Runs named searches and task batches under ``root`` through one evaluator and one shared cache."""

    def __init__(self, root: Path, evaluator: AsyncEvaluator, capacity: Callable[[], int], *,
                 cache: ResultCache | None = None, space: SearchSpace = SearchSpace(),
                 on_report: Callable[[str, Report], None] | None = None) -> None:
        self.root = Path(root)
        self.evaluator = evaluator
        self.capacity = capacity
        self.cache = cache
        self.space = space
        self.on_report = on_report
        self.trained_now = 0  # results that came from evaluation in this process (not journal or cache)

    def _journal(self, directory: Path, config: dict[str, Any]) -> RunJournal:
        if (directory / RunJournal.FILE).is_file():
            journal = RunJournal.open(directory)
            if journal.config != json.loads(json.dumps(config)):
                journal.close()
                raise ValueError(f"{directory} was started with other settings; use a new run directory")
            return journal
        return RunJournal.create(directory, config)

    def search(self, name: str, options: StrategyOptions, spec: TrainSpec,
               summary: Callable[[Strategy], dict[str, Any]] = search_summary) -> dict[str, Any]:
        """The summary of search ``name`` (``summary(strategy)``, by default evo.head.progress.search_summary,
        plus ``name``, ``spec`` and ``seconds``: the wall time of the run that finished it), running the search
        first if needed."""
        directory = self.root / "searches" / name
        done = directory / "result.json"
        if done.is_file():
            return json.loads(done.read_text())
        started = time.perf_counter()
        journal = self._journal(directory, options_config(options, spec))
        try:
            strategy = make_strategy(options, self.space)
            report = (lambda r: self.on_report(name, r)) if self.on_report else None
            runner = Runner(self.evaluator, spec, journal=journal, cache=self.cache, on_report=report,
                            capacity=self.capacity)
            runner.replay(strategy)
            runner.run(strategy)
            self.trained_now += runner.evaluated
        finally:
            journal.close()
        result = {"name": name, **summary(strategy), "spec": spec.to_dict(),
                  "seconds": time.perf_counter() - started}
        partial = directory / "result.json.partial"
        partial.write_text(json.dumps(result, indent=1))
        partial.replace(done)  # a kill leaves no half-written result behind
        log.info("experiment.search_done", name=name, best=result["best"], epochs=result["epochs_total"])
        return result

    def tasks(self, name: str, items: Sequence[tuple[Genotype, TrainSpec]]) -> list[Evaluation]:
        """Evaluations of ``items`` (in order), journaled under ``tasks/name``; known results are not re-run."""
        directory = self.root / "tasks" / name
        journal = self._journal(directory, {"tasks": name})
        try:
            runner = Runner(self.evaluator, items[0][1] if items else TrainSpec(), journal=journal, cache=self.cache,
                            capacity=self.capacity)
            results = runner.evaluate_specs(list(items))
            self.trained_now += runner.evaluated
        finally:
            journal.close()
        return [results[task_id(g, spec)] for g, spec in items]


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
        m = e.metrics
        rows.append({
            "generation": generation_of[k] if k < len(generation_of) else len(strategy.history),
            "genotype": str(e.genotype), "epochs": e.epochs, "state": e.state.value, "loss": e.loss,
            "recon": m.get("recon"), "kl": m.get("kl"), "fitness": e.fitness, "parameters": m.get("params") or None,
            "curve": list(m.get("curve") or []), "seconds": e.seconds or m.get("seconds"), "error": e.error,
        })
    order = sorted(range(len(rows)), key=lambda k: (rows[k]["generation"], asked[evaluations[k].genotype]))
    return [rows[k] for k in order]
