"""The paper's (mu + lambda) generational evolution, driven by ask/tell."""
from __future__ import annotations

from typing import Sequence

from .crossover import crossover
from .evaluation import Evaluation
from .genotype import Genotype
from .mutation import MutationRates, mutate
from .selection import select_survivors
from .space import SearchSpace
from .strategy import Strategy

__all__ = ["EvolutionEngine", "breed"]


def breed(parents: Sequence[Genotype], space: SearchSpace, rng, crossover_rate: float, mutation_rate: float,
          mutation: MutationRates, parent_set: frozenset[Genotype] | None = None) -> Genotype:
    """One offspring: a uniformly drawn parent, crossed with a second, distinct one with probability
    ``crossover_rate``, then mutated with probability ``mutation_rate`` (always when it equals a parent).
    ``parents`` are distinct; pass ``parent_set`` when breeding many children from the same parents."""
    index = int(rng.integers(len(parents)))
    first = child = parents[index]
    if len(parents) > 1 and rng.random() < crossover_rate:
        other = int(rng.integers(len(parents) - 1))  # uniform over the parents but the first
        second = parents[other + (other >= index)]
        child = crossover(first, second, rng)
    if child in (parent_set if parent_set is not None else parents) or rng.random() < mutation_rate:
        child = mutate(child, space, rng, mutation)
    return child


class EvolutionEngine(Strategy):
    """(mu + lambda) evolution of VAE genotypes.

    Generation 0 asks for ``mu`` distinct random genotypes (or ``initial``).
    Each later generation breeds ``lam`` offspring: a parent drawn uniformly
    from the population; with probability ``crossover_rate`` crossed with a
    second, distinct parent; then mutated with probability ``mutation_rate``
    (always, when the child equals a parent). An offspring whose genotype was
    seen before - an evaluated genotype, an outstanding one, or an earlier
    offspring of the same generation - is dropped and counted as a duplicate:
    it is never evaluated again (the paper's seen-set). Parents keep their
    fitness: survivors are the ``mu`` best of parents and offspring (elitism).
    A failed evaluation has fitness 0, stays in the seen-set and never
    survives. If no genotype of the population ever succeeded, the next
    generation starts again from fresh random genotypes.
    """

    def __init__(
        self,
        space: SearchSpace = SearchSpace(),
        *,
        mu: int = 10,
        lam: int = 10,
        seed: int = 0,
        crossover_rate: float = 0.5,
        mutation_rate: float = 0.8,
        mutation: MutationRates = MutationRates(),
        initial: Sequence[Genotype] = (),
    ) -> None:
        super().__init__(space, mu=mu, seed=seed)
        if lam < 1:
            raise ValueError(f"offspring count (lambda) must be >= 1, got {lam}")
        for name, rate in (("crossover_rate", crossover_rate), ("mutation_rate", mutation_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name}={rate} is not a probability in [0, 1]")
        for genotype in initial:
            space.validate(genotype)
        if len(initial) > mu:
            raise ValueError(f"{len(initial)} initial genotypes do not fit a population of {mu}")
        if len(set(initial)) != len(initial):
            raise ValueError("the initial population holds the same genotype twice")
        self.lam = lam
        self.crossover_rate = crossover_rate
        self.mutation_rate = mutation_rate
        self.mutation = mutation
        self._initial = list(initial)

    def _propose(self) -> list[Genotype]:
        if not self.population:
            initial, self._initial = self._initial, []
            taken = set(initial)
            return initial + self._random_unseen(self.mu - len(initial), taken)
        parents = [e.genotype for e in self.population]
        parent_set = frozenset(parents)
        batch: dict[Genotype, None] = {}  # ordered, with O(1) membership
        for _ in range(self.lam):
            child = breed(parents, self.space, self.rng, self.crossover_rate, self.mutation_rate, self.mutation,
                          parent_set)
            if child in self._seen or child in batch:
                self._duplicates += 1
            else:
                batch[child] = None
        return list(batch)

    def _select(self, batch: list[Evaluation]) -> tuple[Evaluation, ...]:
        return select_survivors(self.population, batch, self.mu)
