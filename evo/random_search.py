"""Random search over the same space: the baseline evolution must beat."""
from __future__ import annotations

from .evaluation import Evaluation
from .genotype import Genotype
from .selection import select_survivors
from .space import SearchSpace
from .strategy import Strategy

__all__ = ["RandomSearch"]


class RandomSearch(Strategy):
    """Each round asks for ``batch`` distinct random genotypes never seen
    before; the population is the ``mu`` best found so far."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, batch: int = 10, seed: int = 0) -> None:
        super().__init__(space, mu=mu, seed=seed)
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.batch = batch

    def _propose(self) -> list[Genotype]:
        size = self.mu if self.generation == 0 else self.batch
        return self._random_unseen(size, set())

    def _select(self, batch: list[Evaluation]) -> tuple[Evaluation, ...]:
        return select_survivors(self.population, batch, self.mu)
