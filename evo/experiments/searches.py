"""Named searches and one-off task batches inside an experiment's run directory, each with a journal of its
own, so an experiment killed at any moment continues where it stopped: a finished search is read back from
its ``result.json``, an unfinished one is replayed from its journal and run on, a batch of tasks reuses every
result its journal holds."""
from __future__ import annotations

import json
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
from ..strategy import Report

__all__ = ["SearchBench", "options_config"]

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

    def search(self, name: str, options: StrategyOptions, spec: TrainSpec) -> dict[str, Any]:
        """The summary of search ``name`` (evo.head.progress.search_summary), running it first if needed."""
        directory = self.root / "searches" / name
        done = directory / "result.json"
        if done.is_file():
            return json.loads(done.read_text())
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
        summary = {"name": name, **search_summary(strategy), "spec": spec.to_dict()}
        done.write_text(json.dumps(summary, indent=1))
        log.info("experiment.search_done", name=name, best=summary["best"], epochs=summary["epochs_total"])
        return summary

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
