"""Multi-fidelity evolution: (mu + lambda) whose offspring climb successive-halving rungs.

Cheap evaluations rank architectures badly (the paper's 2-epoch searches), yet they are what make a search
affordable. Successive halving (Jamieson & Talwalkar; Hyperband, ASHA, BOHB, DEHB build on it) spends them
where they are informative: every generation's ``lam`` offspring are trained ``fidelities[0]`` epochs; the
best ``1/eta`` of each rung (at least one) are trained at the next fidelity, up to ``fidelities[-1]``. Only
results of the highest rung enter the population, so selection never compares losses of different epochs.

A promoted genotype is trained again from scratch at its new fidelity (workers are stateless): it pays every
rung it reaches, and the epoch account says so. With fidelities (1, 3, 9) and eta 3, a generation of 9
offspring costs 9 x 1 + 3 x 3 + 1 x 9 = 27 epochs and yields one 9-epoch result; the plain engine pays 81
epochs for nine. Deterministic for a seed: promotion ranks by loss, ties by genotype text.
"""
from __future__ import annotations

import itertools
import math
from abc import abstractmethod
from collections.abc import Sequence

from .engine import EvolutionEngine
from .evaluation import Candidate, Evaluation
from .genotype import Genotype
from .selection import rank, select_survivors
from .space import SearchSpace
from .strategy import GenerationalStrategy
from .variation import MutationRates

__all__ = ["MultiFidelityEvolution", "Rungs", "check_fidelities", "parse_fidelities"]


def parse_fidelities(text: str) -> tuple[int, ...]:
    """``'1,3,9'`` -> ``(1, 3, 9)``: strictly increasing epochs, each >= 1."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"fidelities {text!r}: expected increasing whole epochs separated by commas, "
                         "e.g. 1,3,9") from None
    check_fidelities(values)
    return values


def check_fidelities(values: Sequence[int]) -> None:
    if not values or any(type(v) is not int or v < 1 for v in values) or \
            any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"fidelities must be strictly increasing whole epochs >= 1, e.g. 1,3,9; "
                         f"got {','.join(map(str, values))}")


class Rungs(GenerationalStrategy):
    """Successive halving inside each generation, for a :class:`~evo.strategy.GenerationalStrategy`:
    ``_fresh(lam)`` gives a generation's new genotypes (trained ``fidelities[0]`` epochs), the best
    ``ceil(n / eta)`` of each rung climb to the next, and the last rung's results are selected into the
    population. ``_rung_done(batch, promoted)`` lets a subclass see every finished rung (TPE tells its trials).
    Put it first among the bases."""

    lam: int  # a generation's new genotypes: set by the strategy it is mixed into

    def _init_rungs(self, fidelities: Sequence[int], eta: int) -> None:
        check_fidelities(tuple(fidelities))
        if type(eta) is not int or eta < 2:
            raise ValueError(f"eta must be an integer >= 2, got {eta!r}")
        self.fidelities = tuple(fidelities)
        self.eta = eta
        self.rung = 0
        self._promoted: list[Genotype] = []
        self._generation_evals: list[Evaluation] = []

    @abstractmethod
    def _fresh(self, count: int) -> list[Genotype]:
        """A generation's ``count`` new genotypes (trained at the first rung)."""

    # an optional hook, not abstract: a subclass overrides it only when it wants to see the rungs
    def _rung_done(self, batch: list[Evaluation], promoted: set[Genotype]) -> None:
        """Called once per finished rung, before the next is asked for (``promoted`` empty on the last)."""

    def _next_batch(self) -> list[Candidate]:
        if self.rung == 0:
            return [Candidate(g, self.fidelities[0]) for g in self._fresh(self.lam)]
        promoted, self._promoted = self._promoted, []
        return [Candidate(g, self.fidelities[self.rung]) for g in promoted]

    def _complete(self, batch: list[Evaluation]) -> None:
        self._generation_evals += batch
        last = len(self.fidelities) - 1
        if self.rung < last and not self._budget_hit:
            keep = math.ceil(len(batch) / self.eta)
            self._promoted = [e.genotype for e in rank(batch)[:keep]]
            self._rung_done(batch, set(self._promoted))
            if self._promoted:
                self.rung += 1
                return
        else:
            self._rung_done(batch, set())
        if self.rung == last:
            self.population = select_survivors(self.population, batch, self.mu)
        evaluated, self._generation_evals = self._generation_evals, []
        self.rung = 0
        self._promoted = []
        self._report(evaluated, self._duplicates)

    def _finished(self) -> bool:
        if self._promoted and not self._budget_hit:
            return False
        return super()._finished()

    def snapshot(self) -> dict:
        return {**super().snapshot(), "rung": self.rung}


class MultiFidelityEvolution(Rungs, EvolutionEngine):
    """(mu + lambda) evolution with successive halving inside each generation (see the module)."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, lam: int = 10, seed: int = 0,
                 fidelities: Sequence[int] = (1, 3, 9), eta: int = 3, generations: int | None = None,
                 budget_epochs: int | None = None, crossover_rate: float = 0.5, mutation_rate: float = 0.8,
                 mutation: MutationRates = MutationRates(), initial: Sequence[Genotype] = ()) -> None:
        check_fidelities(tuple(fidelities))
        super().__init__(space, mu=mu, lam=lam, seed=seed, epochs=fidelities[-1], generations=generations,
                         budget_epochs=budget_epochs, crossover_rate=crossover_rate, mutation_rate=mutation_rate,
                         mutation=mutation, initial=initial)
        self._init_rungs(fidelities, eta)

    def _fresh(self, count: int) -> list[Genotype]:
        return self._offspring(count)
