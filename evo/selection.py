"""Selection: (mu + lambda) truncation, deterministic in its ties."""
from __future__ import annotations

from collections.abc import Iterable

from .evaluation import Evaluation

__all__ = ["rank", "select_survivors"]


def rank(evaluations: Iterable[Evaluation]) -> list[Evaluation]:
    """Successful evaluations, best (highest fitness) first; ties broken by genotype text."""
    return sorted((e for e in evaluations if e.ok), key=lambda e: (-e.fitness, str(e.genotype)))


def select_survivors(parents: Iterable[Evaluation], offspring: Iterable[Evaluation], mu: int) -> tuple[Evaluation, ...]:
    """The ``mu`` best of parents and offspring together; failed ones never survive."""
    if mu < 1:
        raise ValueError(f"mu must be >= 1, got {mu}")
    pool: dict = {}
    for e in (*parents, *offspring):
        pool.setdefault(e.genotype, e)
    return tuple(rank(pool.values())[:mu])
