"""The paper's (mu + lambda) generational evolution, driven by ask/tell."""
from __future__ import annotations

from collections.abc import Sequence

from .evaluation import Candidate, Evaluation
from .genotype import Genotype
from .selection import select_survivors
from .space import SearchSpace
from .strategy import GenerationalStrategy
from .variation import MutationRates, breed

__all__ = ["EvolutionEngine", "check_rates", "check_initial"]


def check_rates(crossover_rate: float, mutation_rate: float) -> None:
    for name, rate in (("crossover_rate", crossover_rate), ("mutation_rate", mutation_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name}={rate} is not a probability in [0, 1]")


def check_initial(initial: Sequence[Genotype], space: SearchSpace, mu: int) -> list[Genotype]:
    for genotype in initial:
        space.validate(genotype)
    if len(initial) > mu:
        raise ValueError(f"{len(initial)} initial genotypes do not fit a population of {mu}")
    if len(set(initial)) != len(initial):
        raise ValueError("the initial population holds the same genotype twice")
    return list(initial)


class EvolutionEngine(GenerationalStrategy):
    """(mu + lambda) evolution of VAE genotypes, every candidate trained ``epochs`` epochs.

    Generation 0 asks for ``mu`` distinct random genotypes (or ``initial``). Each later generation breeds
    ``lam`` offspring (:func:`evo.variation.breed`). An offspring whose genotype was seen before - an
    evaluated genotype, an outstanding one, or an earlier offspring of the same generation - is dropped and
    counted as a duplicate: it is never evaluated again (the paper's seen-set). Parents keep their fitness:
    survivors are the ``mu`` best of parents and offspring (elitism). A failed evaluation has fitness 0,
    stays in the seen-set and never survives. If no genotype of the population ever succeeded, the next
    generation starts again from fresh random genotypes. The search ends after ``generations`` generations
    (counting generation 0) or when ``budget_epochs`` would be crossed.
    """

    def __init__(
        self,
        space: SearchSpace = SearchSpace(),
        *,
        mu: int = 10,
        lam: int = 10,
        seed: int = 0,
        epochs: int = 2,
        generations: int | None = None,
        budget_epochs: int | None = None,
        crossover_rate: float = 0.5,
        mutation_rate: float = 0.8,
        mutation: MutationRates = MutationRates(),
        initial: Sequence[Genotype] = (),
    ) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=epochs, generations=generations,
                         budget_epochs=budget_epochs)
        if lam < 1:
            raise ValueError(f"offspring count (lambda) must be >= 1, got {lam}")
        check_rates(crossover_rate, mutation_rate)
        self.lam = lam
        self.crossover_rate = crossover_rate
        self.mutation_rate = mutation_rate
        self.mutation = mutation
        self._initial = check_initial(initial, space, mu)

    def _offspring(self, count: int) -> list[Genotype]:
        """``count`` children bred from the population, duplicates dropped and counted (or random ones
        while there is no population)."""
        if not self.population:
            initial, self._initial = self._initial, []
            return initial + self._random_unseen(self.mu - len(initial), set(initial))
        parents = [e.genotype for e in self.population]
        parent_set = frozenset(parents)
        batch: dict[Genotype, None] = {}  # ordered, with O(1) membership
        for _ in range(count):
            child = breed(parents, self.space, self.rng, self.crossover_rate, self.mutation_rate, self.mutation,
                          parent_set)
            if child in self._seen or child in batch:
                self._duplicates += 1
            else:
                batch[child] = None
        return list(batch)

    def _next_batch(self) -> list[Candidate]:
        return [Candidate(g, self.epochs) for g in self._offspring(self.lam)]

    def _complete(self, batch: list[Evaluation]) -> None:
        self.population = select_survivors(self.population, batch, self.mu)
        self._report(batch, self._duplicates)
