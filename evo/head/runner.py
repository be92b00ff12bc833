"""Drive a strategy with an asynchronous evaluator, journaling and caching as it goes.

Two modes: ``run_generations`` (the paper's generational (mu + lambda): ask a
batch, wait for all of it, tell) and ``run_steady_state`` (ask one offspring
whenever a worker frees up). In both, every ask is journaled before its tasks
go out and every result before the engine is told; a result already in the
journal (a resumed run) or in the cache (an earlier run) is never paid for again.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import structlog

from ..evaluation import Evaluation
from ..genotype import Genotype
from .journal import JournalError, ResultCache, RunJournal
from ..spec import TrainSpec, task_id
from ..steady_state import SteadyStateEngine
from ..strategy import GenerationReport, Strategy

__all__ = ["AsyncEvaluator", "InProcessEvaluator", "Runner"]

log = structlog.get_logger(__name__)


class AsyncEvaluator(Protocol):
    @property
    def pending(self) -> int: ...

    def submit(self, genotypes: Sequence[Genotype]) -> list[str]: ...

    def poll(self, timeout_s: float) -> list[tuple[str, Evaluation]]: ...


class InProcessEvaluator:
    """Evaluates one pending genotype per ``poll`` in this process (no sockets)."""

    def __init__(self, evaluate_one: Callable[[Genotype], Evaluation], spec: TrainSpec) -> None:
        self._evaluate = evaluate_one
        self._spec = spec
        self._pending: dict[str, Genotype] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, genotypes: Sequence[Genotype]) -> list[str]:
        ids = [task_id(g, self._spec) for g in genotypes]
        self._pending.update(zip(ids, genotypes))
        return ids

    def poll(self, timeout_s: float) -> list[tuple[str, Evaluation]]:
        if not self._pending:
            return []
        tid = next(iter(self._pending))
        return [(tid, self._evaluate(self._pending.pop(tid)))]


class Runner:
    """Runs a search to its end; ``journal`` and ``cache`` are optional."""

    def __init__(self, evaluator: AsyncEvaluator, spec: TrainSpec, *, journal: RunJournal | None = None,
                 cache: ResultCache | None = None, on_report: Callable[[GenerationReport], None] | None = None,
                 capacity: Callable[[], int] = lambda: 1, poll_s: float = 0.2) -> None:
        self.evaluator = evaluator
        self.spec = spec
        self.journal = journal
        self.cache = cache
        self.on_report = on_report
        self.capacity = capacity
        self.poll_s = poll_s
        self.reused = 0       # results taken from this run's journal (a resumed run)
        self.cache_hits = 0   # results taken from the cache (an earlier run)
        self.evaluated = 0    # results that came from evaluation now
        self._open_ask: list[str] | None = None

    # -- resuming ------------------------------------------------------------------
    def replay(self, strategy: Strategy | SteadyStateEngine) -> int:
        """Bring a fresh engine (same config and seed) to the journal's last state. Returns tells replayed."""
        if self.journal is None:
            return 0
        results = self.journal.results()
        tells = 0
        for kind, tids, genotypes, state in self.journal.events():
            if kind == "ask":
                if isinstance(strategy, SteadyStateEngine):
                    batch = strategy.ask((state or {}).get("n", len(genotypes)))
                else:
                    batch = strategy.ask()
                if [str(g) for g in batch] != genotypes:
                    raise JournalError(
                        f"replaying {self.journal.run_dir}: the engine asked for {[str(g) for g in batch][:3]}... "
                        f"where the journal has {genotypes[:3]}...; the configuration or the code changed since "
                        "the run started, so it cannot be resumed")
                self._open_ask = genotypes
            else:
                missing = [t for t in tids if t not in results]
                if missing:
                    raise JournalError(f"{self.journal.run_dir}: a tell names results that are not journaled "
                                       f"({missing[:3]}); the journal is corrupt")
                reports = strategy.tell([results[t] for t in tids])
                tells += 1
                if state is not None and strategy.snapshot()["population"] != state["population"]:
                    raise JournalError(f"replaying {self.journal.run_dir}: the population after tell {tells} "
                                       "differs from the journaled one; the code changed since the run started")
                if isinstance(strategy, Strategy):
                    self._open_ask = None
                for report in reports if isinstance(reports, list) else [reports]:
                    self._report(report, replayed=True)
        log.info("run.replayed", tells=tells, results=len(results),
                 evaluations=strategy.evaluation_count, generation=strategy.generation)
        return tells

    # -- the two modes ----------------------------------------------------------------
    def run_generations(self, strategy: Strategy, generations: int) -> None:
        while strategy.generation < generations:
            batch = strategy.ask()
            ids = [task_id(g, self.spec) for g in batch]
            if self.journal is not None and self._open_ask != [str(g) for g in batch]:
                self.journal.record_ask(batch, ids)
            self._open_ask = None
            results = self._known(dict(zip(ids, batch)))
            self.evaluator.submit([g for t, g in zip(ids, batch) if t not in results])
            while len(results) < len(ids):
                results.update(self._receive())
            report = strategy.tell([results[t] for t in ids])
            if self.journal is not None:
                self.journal.record_tell(ids, strategy.snapshot())
            self._report(report)

    def run_steady_state(self, engine: SteadyStateEngine, budget: int) -> None:
        """Evaluate until ``budget`` evaluations exist, keeping every worker busy."""
        self._dispatch_steady(engine, engine.outstanding)  # asked before a restart, never told
        while engine.evaluation_count < budget:
            room = min(max(1, self.capacity()) - self.evaluator.pending,
                       budget - engine.evaluation_count - self.evaluator.pending)
            if room > 0:
                batch = engine.ask(room)
                if self.journal is not None and batch:
                    # the count asked for is part of the RNG's history: replay asks for the same
                    self.journal.record_ask(batch, [task_id(g, self.spec) for g in batch], requested=room)
                self._dispatch_steady(engine, batch)
                if not batch and not self.evaluator.pending:
                    log.warning("search.exhausted", evaluations=engine.evaluation_count, budget=budget)
                    return
            for tid, evaluation in self._receive().items():
                self._tell_steady(engine, tid, evaluation)

    # -- helpers ------------------------------------------------------------------
    def _report(self, report: GenerationReport, replayed: bool = False) -> None:
        best = report.best
        log.info("generation.done", generation=report.generation, evaluated=report.evaluated, failed=report.failed,
                 duplicates=report.duplicates, total=report.total_evaluations,
                 best_loss=best.loss if best else None, best=str(best.genotype) if best else None,
                 median_loss=report.median_loss, replayed=replayed)
        if self.on_report is not None:
            self.on_report(report)

    def _known(self, wanted: dict[str, Genotype]) -> dict[str, Evaluation]:
        """Results already paid for: this run's journal first, then the shared cache."""
        ids = list(wanted)
        found = self.journal.results_for(ids) if self.journal is not None else {}
        self.reused += len(found)
        if self.cache is not None and len(found) < len(ids):
            cached = self.cache.get_many([t for t in ids if t not in found])
            if cached:
                self.cache_hits += len(cached)
                if self.journal is not None:
                    self.journal.record_results([(t, e, "cache") for t, e in cached.items()])
                found.update(cached)
        if found:
            log.info("results.reused", count=len(found), journal=self.reused, cache=self.cache_hits)
        return found

    def _receive(self) -> dict[str, Evaluation]:
        finished = self.evaluator.poll(self.poll_s)
        if finished:
            self.evaluated += len(finished)
            if self.journal is not None:
                self.journal.record_results([(tid, e, "worker") for tid, e in finished])
            if self.cache is not None:
                self.cache.put(finished)
        return dict(finished)

    def _dispatch_steady(self, engine: SteadyStateEngine, genotypes: Sequence[Genotype]) -> None:
        wanted = {task_id(g, self.spec): g for g in genotypes}
        known = self._known(wanted)
        self.evaluator.submit([g for t, g in wanted.items() if t not in known])
        for tid, evaluation in known.items():
            self._tell_steady(engine, tid, evaluation)

    def _tell_steady(self, engine: SteadyStateEngine, tid: str, evaluation: Evaluation) -> None:
        reports = engine.tell([evaluation])
        if self.journal is not None:
            self.journal.record_tell([tid], engine.snapshot())
        for report in reports:
            self._report(report)


def budget_of(mu: int, lam: int, generations: int) -> int:
    """Evaluations a generational search of this size pays for (at most)."""
    return mu + lam * max(0, generations - 1)
