"""Random search over the same space: the baseline every other strategy must beat."""
from __future__ import annotations

from .evaluation import Candidate, Evaluation
from .selection import select_survivors
from .space import SearchSpace
from .strategy import GenerationalStrategy

__all__ = ["RandomSearch"]


class RandomSearch(GenerationalStrategy):
    """Each round asks for ``batch`` distinct random genotypes never seen before (``mu`` in the first
    round, so that a random search pays what an evolution of the same size pays); the population is the
    ``mu`` best found so far. Bounded by ``generations`` rounds and/or ``budget_epochs``."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, batch: int = 10, seed: int = 0,
                 epochs: int = 2, generations: int | None = None, budget_epochs: int | None = None) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=epochs, generations=generations,
                         budget_epochs=budget_epochs)
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.batch = batch

    def _next_batch(self) -> list[Candidate]:
        size = self.mu if self.generation == 0 else self.batch
        return [Candidate(g, self.epochs) for g in self._random_unseen(size, set())]

    def _complete(self, batch: list[Evaluation]) -> None:
        self.population = select_survivors(self.population, batch, self.mu)
        self._report(batch, 0)
