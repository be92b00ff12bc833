"""Steady-state (asynchronous) evolution: a new offspring as soon as a result arrives.

The paper names it as future work to cut worker idleness: a generational
search waits for the slowest evaluation of every generation, while here a
worker that finishes gets the next offspring at once. Breeding and selection
are the generational engine's ((mu + 1) instead of (mu + lambda)); the
seen-set works the same way.
"""
from __future__ import annotations

from typing import Iterable

from .engine import breed
from .evaluation import Evaluation
from .genotype import Genotype
from .mutation import MutationRates
from .selection import select_survivors
from .space import SearchSpace
from .strategy import GenerationReport, SearchState

__all__ = ["SteadyStateEngine"]


class SteadyStateEngine(SearchState):
    """(mu + 1) evolution with asynchronous ask/tell.

    ``ask(n)`` returns up to ``n`` genotypes never seen before: random ones
    until ``mu`` evaluations exist, offspring of the population after. ``tell``
    takes evaluations of any outstanding genotypes, in any number and order;
    each one competes for a place in the population at once. A report is made
    every ``report_every`` evaluations (a "generation", for progress lines).
    """

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, seed: int = 0, report_every: int = 10,
                 crossover_rate: float = 0.5, mutation_rate: float = 0.8,
                 mutation: MutationRates = MutationRates()) -> None:
        super().__init__(space, mu=mu, seed=seed)
        if report_every < 1:
            raise ValueError(f"report_every must be >= 1, got {report_every}")
        self.report_every = report_every
        self.crossover_rate = crossover_rate
        self.mutation_rate = mutation_rate
        self.mutation = mutation
        self._told = 0
        self._window = {"evaluated": 0, "failed": 0, "duplicates": 0}

    @property
    def generation(self) -> int:
        return len(self.history)

    @property
    def outstanding(self) -> list[Genotype]:
        return [g for g, e in self._seen.items() if e is None]

    @property
    def evaluation_count(self) -> int:
        return self._told

    def ask(self, n: int = 1) -> list[Genotype]:
        batch: list[Genotype] = []
        for _ in range(100 * max(n, 1)):
            if len(batch) == n:
                break
            if self._told < self.mu or not self.population:
                child = self.space.sample(self.rng)
            else:
                child = breed([e.genotype for e in self.population], self.space, self.rng, self.crossover_rate,
                              self.mutation_rate, self.mutation)
            if child in self._seen:
                self._window["duplicates"] += 1
                continue
            self._seen[child] = None
            batch.append(child)
        return batch

    def tell(self, evaluations: Iterable[Evaluation]) -> list[GenerationReport]:
        """Apply evaluations; returns the reports completed by them (usually none or one)."""
        reports = []
        for e in evaluations:
            if self._seen.get(e.genotype, 0) is not None:
                raise ValueError(f"{e.genotype} is not outstanding: ask for it first, and tell it once")
            self._seen[e.genotype] = e
            self._told += 1
            self._window["evaluated"] += 1
            self._window["failed"] += not e.ok
            self.population = select_survivors(self.population, [e], self.mu)
            if self._told % self.report_every == 0:
                reports.append(self._report())
        return reports

    def _report(self) -> GenerationReport:
        report = GenerationReport(generation=self.generation, population=self.population,
                                  total_evaluations=self._told, **self._window)
        self.history.append(report)
        self._window = {"evaluated": 0, "failed": 0, "duplicates": 0}
        return report
