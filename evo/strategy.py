"""The ask/tell contract shared by every search strategy.

``ask()`` returns the genotypes that need an evaluation; ``tell(evaluations)``
gives back one :class:`Evaluation` for each of them, in any order. The
strategy knows nothing of how evaluation happens (in this process, over
ZeroMQ, from a cache). Asking again before telling returns the same batch.
"""
from __future__ import annotations

import statistics
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from .evaluation import Evaluation
from .genotype import Genotype
from .selection import rank
from .space import SearchSpace

__all__ = ["GenerationReport", "SearchState", "Strategy"]


@dataclass(frozen=True)
class GenerationReport:
    """What one ask/tell round did."""

    generation: int
    evaluated: int
    failed: int
    duplicates: int
    population: tuple[Evaluation, ...]
    total_evaluations: int

    @property
    def best(self) -> Evaluation | None:
        return self.population[0] if self.population else None

    @property
    def median_loss(self) -> float | None:
        losses = [e.loss for e in self.population if e.loss is not None]
        return statistics.median(losses) if losses else None


class SearchState:
    """What every engine keeps, generational or steady-state: the space, the seeded RNG, the
    population, the reports, and the seen-set (every genotype ever asked for, with its
    evaluation once told)."""

    def __init__(self, space: SearchSpace, *, mu: int, seed: int) -> None:
        if mu < 1:
            raise ValueError(f"population size must be >= 1, got {mu}")
        self.space = space
        self.mu = mu
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.population: tuple[Evaluation, ...] = ()
        self.history: list[GenerationReport] = []
        self._seen: dict[Genotype, Evaluation | None] = {}

    # -- views ----------------------------------------------------------------------
    @property
    def seen(self) -> Mapping[Genotype, Evaluation | None]:
        """Every genotype ever asked for, with its evaluation (None while outstanding)."""
        return dict(self._seen)

    @property
    def evaluations(self) -> list[Evaluation]:
        return [e for e in self._seen.values() if e is not None]

    @property
    def evaluation_count(self) -> int:
        return sum(e is not None for e in self._seen.values())

    @property
    def best(self) -> Evaluation | None:
        ranked = rank(self.evaluations)
        return ranked[0] if ranked else None

    def snapshot(self) -> dict:
        """The engine's state as plain JSON-able values: generation, population, RNG state."""
        return {
            "generation": self.generation,
            "population": [[str(e.genotype), e.loss] for e in self.population],
            "evaluations": self.evaluation_count,
            "rng": self.rng.bit_generator.state,
        }


class Strategy(SearchState, ABC):
    """Generational ask/tell: the outstanding batch and the generation count."""

    def __init__(self, space: SearchSpace, *, mu: int, seed: int) -> None:
        super().__init__(space, mu=mu, seed=seed)
        self.generation = 0
        self._outstanding: list[Genotype] | None = None
        self._duplicates = 0

    # -- the contract -------------------------------------------------------------
    def ask(self) -> list[Genotype]:
        if self._outstanding is None:
            self._duplicates = 0
            batch = self._propose()
            for genotype in batch:
                self._seen[genotype] = None
            self._outstanding = batch
        return list(self._outstanding)

    def tell(self, evaluations: Iterable[Evaluation]) -> GenerationReport:
        if self._outstanding is None:
            raise RuntimeError("tell() without ask(): ask for a batch first")
        told: dict[Genotype, Evaluation] = {}
        for e in evaluations:
            if not isinstance(e, Evaluation):
                raise TypeError(f"tell() takes Evaluation objects, got {type(e).__name__}")
            if e.genotype in told:
                raise ValueError(f"{e.genotype} was told twice in one batch")
            told[e.genotype] = e
        expected = set(self._outstanding)
        if set(told) != expected:
            missing = sorted(map(str, expected - set(told)))
            extra = sorted(map(str, set(told) - expected))
            raise ValueError(f"tell() must answer exactly the asked batch; missing {missing}, not asked {extra}")
        batch = [told[g] for g in self._outstanding]
        for e in batch:
            self._seen[e.genotype] = e
        self._outstanding = None
        self.population = self._select(batch)
        report = GenerationReport(
            generation=self.generation,
            evaluated=len(batch),
            failed=sum(not e.ok for e in batch),
            duplicates=self._duplicates,
            population=self.population,
            total_evaluations=self.evaluation_count,
        )
        self.history.append(report)
        self.generation += 1
        return report

    # -- what a strategy defines ------------------------------------------------------
    @abstractmethod
    def _propose(self) -> list[Genotype]:
        """The next batch to evaluate (genotypes not seen before)."""

    @abstractmethod
    def _select(self, batch: list[Evaluation]) -> tuple[Evaluation, ...]:
        """The population after ``batch`` was evaluated."""

    # -- helpers ----------------------------------------------------------------------
    def _random_unseen(self, count: int, taken: set[Genotype]) -> list[Genotype]:
        """``count`` random genotypes seen nowhere before (fewer if the space runs dry)."""
        fresh: list[Genotype] = []
        for _ in range(100 * max(count, 1)):
            if len(fresh) == count:
                break
            genotype = self.space.sample(self.rng)
            if genotype not in self._seen and genotype not in taken:
                taken.add(genotype)
                fresh.append(genotype)
        return fresh
