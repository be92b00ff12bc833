"""Aging (regularized) evolution, Real et al. 2019: the oldest dies, not the worst.

A queue holds the ``population_size`` (P) most recent evaluations. To breed, ``tournament_size`` (S) members
are drawn uniformly without replacement; the best of them is mutated. Every evaluation told joins the queue
and, once it holds more than P, the oldest leaves it. Asynchronous by nature: a child is bred as soon as a
worker is free, from the queue as it is then. Until P genotypes have been asked for, the candidates are
random. NAS-Bench-201's reference run uses P = 10, S = 3. Unlike the paper's, the child of a genotype seen
before is bred again (the seen-set), so no epoch is spent twice on one genotype.
"""
from __future__ import annotations

from collections import deque

from .evaluation import Evaluation
from .genotype import Genotype
from .selection import rank
from .space import SearchSpace
from .strategy import AsyncStrategy
from .variation import MutationRates, mutate

__all__ = ["RegularizedEvolution"]


class RegularizedEvolution(AsyncStrategy):
    """Aging evolution with population (queue) ``mu`` = P and tournaments of ``tournament_size`` = S."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, tournament_size: int = 3,
                 seed: int = 0, epochs: int = 2, max_evaluations: int | None = None,
                 budget_epochs: int | None = None, report_every: int = 10,
                 mutation: MutationRates = MutationRates()) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=epochs, max_evaluations=max_evaluations,
                         budget_epochs=budget_epochs, report_every=report_every)
        if type(tournament_size) is not int or not 1 <= tournament_size <= mu:
            raise ValueError(f"tournament_size must be an integer in [1, population {mu}], got {tournament_size!r}")
        self.tournament_size = tournament_size
        self.mutation = mutation
        self._queue: deque[Evaluation] = deque()

    @property
    def queue(self) -> tuple[Evaluation, ...]:
        """The living population, oldest first."""
        return tuple(self._queue)

    def _propose(self) -> Genotype:
        alive = [e for e in self._queue if e.ok]
        if len(self._seen) < self.mu or not alive:
            return self.space.sample(self.rng)
        picks = self.rng.choice(len(self._queue), size=min(self.tournament_size, len(self._queue)), replace=False)
        contenders = rank(self._queue[int(i)] for i in sorted(picks))
        parent = contenders[0] if contenders else rank(alive)[0]
        return mutate(parent.genotype, self.space, self.rng, self.mutation)

    def _absorb(self, evaluation: Evaluation) -> None:
        self._queue.append(evaluation)
        if len(self._queue) > self.mu:
            self._queue.popleft()
        self.population = tuple(rank(self._queue))
