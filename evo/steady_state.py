"""Steady-state (asynchronous) evolution: a new offspring as soon as a result arrives.

The paper names it as future work to cut worker idleness: a generational search waits for the slowest
evaluation of every generation, while here a worker that finishes gets the next offspring at once. Breeding
and selection are the generational engine's ((mu + 1) instead of (mu + lambda)); the seen-set works the
same way.
"""
from __future__ import annotations

from .engine import check_rates
from .evaluation import Evaluation
from .genotype import Genotype
from .selection import select_survivors
from .space import SearchSpace
from .strategy import AsyncStrategy
from .variation import MutationRates, breed

__all__ = ["SteadyStateEngine"]


class SteadyStateEngine(AsyncStrategy):
    """(mu + 1) evolution with asynchronous ask/tell.

    ``ask(n)`` returns up to ``n`` genotypes never seen before: random ones until ``mu`` have been told
    for (or while nothing has succeeded), offspring of the population after. Each evaluation told competes
    for a place in the population at once. A report every ``report_every`` evaluations (a "generation", for
    progress lines). Bounded by ``max_evaluations`` and/or ``budget_epochs``.
    """

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, seed: int = 0, epochs: int = 2,
                 max_evaluations: int | None = None, budget_epochs: int | None = None, report_every: int = 10,
                 crossover_rate: float = 0.5, mutation_rate: float = 0.8,
                 mutation: MutationRates = MutationRates()) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=epochs, max_evaluations=max_evaluations,
                         budget_epochs=budget_epochs, report_every=report_every)
        check_rates(crossover_rate, mutation_rate)
        self.crossover_rate = crossover_rate
        self.mutation_rate = mutation_rate
        self.mutation = mutation

    def _propose(self) -> Genotype:
        if self.evaluation_count < self.mu or not self.population:
            return self.space.sample(self.rng)
        return breed([e.genotype for e in self.population], self.space, self.rng, self.crossover_rate,
                     self.mutation_rate, self.mutation)

    def _absorb(self, evaluation: Evaluation) -> None:
        self.population = select_survivors(self.population, [evaluation], self.mu)
