"""Every strategy by name, built from one set of options: what the CLI and the experiments construct."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .genotype import Genotype
from .space import SearchSpace
from .strategy import Strategy

__all__ = ["STRATEGIES", "StrategyOptions", "budget_of", "make_strategy"]

#: name -> what it is (for --help and docs)
STRATEGIES = {
    "evolution": "the paper's (mu + lambda) evolution; with fidelities, multi-fidelity (successive halving in "
                 "each generation); with mode steady-state, (mu + 1) as results arrive",
    "random": "random search over the same space (the baseline)",
    "regularized": "aging evolution (Real et al. 2019): tournaments of tournament_size in a queue of the "
                   "population most recent, the oldest dies; asynchronous",
    "tpe": "Optuna's TPE sampler through its ask-and-tell interface, duplicates answered from the seen-set: "
           "batches of offspring proposals (deterministic), with fidelities climbing successive-halving rungs "
           "(after BOHB); with mode steady-state one proposal per free worker",
}


def budget_of(mu: int, lam: int, generations: int) -> int:
    """Evaluations a generational search of this size pays for (at most)."""
    return mu + lam * max(0, generations - 1)


@dataclass(frozen=True)
class StrategyOptions:
    """What a search is (the journal stores these; the same options and seed give the same search)."""

    strategy: str = "evolution"
    population: int = 10
    offspring: int = 10
    generations: int | None = 5
    budget_epochs: int | None = None
    epochs: int = 2
    fidelities: tuple[int, ...] = ()
    eta: int = 3
    mode: str = "generational"
    tournament_size: int = 3
    startup_trials: int = 10
    crossover_rate: float = 0.5
    mutation_rate: float = 0.8
    initial: tuple[Genotype, ...] = field(default=())
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.mode not in ("generational", "steady-state"):
            raise ValueError(f"mode must be generational or steady-state, got {self.mode!r}")
        if self.generations is None and self.budget_epochs is None:
            raise ValueError("a search needs an end: give generations, budget_epochs or both")
        if self.fidelities and self.strategy not in ("evolution", "tpe"):
            raise ValueError("fidelities apply to --strategy evolution and tpe only")
        if self.fidelities and self.mode != "generational":
            raise ValueError("fidelities need mode generational (promotion happens per generation)")
        if self.initial and (self.strategy != "evolution" or self.mode != "generational"):
            raise ValueError("initial genotypes seed the generational evolution only")
        if self.mode != "generational" and self.strategy not in ("evolution", "tpe"):
            raise ValueError(f"mode steady-state is a form of --strategy evolution or tpe; {self.strategy} is "
                             + ("asynchronous already" if self.strategy == "regularized" else "generational only"))

    @property
    def final_epochs(self) -> int:
        return self.fidelities[-1] if self.fidelities else self.epochs

    @property
    def max_evaluations(self) -> int | None:
        return None if self.generations is None else budget_of(self.population, self.offspring, self.generations)


def make_strategy(options: StrategyOptions, space: SearchSpace = SearchSpace()) -> Strategy:
    """A fresh strategy for ``options`` (TPE imports Optuna only when asked for)."""
    o = options
    common = dict(mu=o.population, seed=o.seed, budget_epochs=o.budget_epochs)
    if o.strategy == "random":
        from .random_search import RandomSearch
        return RandomSearch(space, batch=o.offspring, epochs=o.epochs, generations=o.generations, **common)
    if o.strategy == "regularized":
        from .regularized import RegularizedEvolution
        return RegularizedEvolution(space, tournament_size=o.tournament_size, epochs=o.epochs,
                                    max_evaluations=o.max_evaluations, report_every=o.offspring, **common)
    if o.strategy == "tpe" and o.mode == "generational":  # batches of lambda proposals: deterministic
        from .adapters.tpe import MultiFidelityTPE
        return MultiFidelityTPE(space, lam=o.offspring, fidelities=o.fidelities or (o.epochs,), eta=o.eta,
                                generations=o.generations, startup_trials=o.startup_trials, **common)
    if o.strategy == "tpe":
        from .adapters.tpe import TPESearch
        return TPESearch(space, epochs=o.epochs, max_evaluations=o.max_evaluations, report_every=o.offspring,
                         startup_trials=o.startup_trials, **common)
    rates = dict(crossover_rate=o.crossover_rate, mutation_rate=o.mutation_rate)
    if o.mode == "steady-state":
        from .steady_state import SteadyStateEngine
        return SteadyStateEngine(space, epochs=o.epochs, max_evaluations=o.max_evaluations,
                                 report_every=o.offspring, **rates, **common)
    if o.fidelities:
        from .multifidelity import MultiFidelityEvolution
        return MultiFidelityEvolution(space, lam=o.offspring, fidelities=o.fidelities, eta=o.eta,
                                      generations=o.generations, initial=o.initial, **rates, **common)
    from .engine import EvolutionEngine
    return EvolutionEngine(space, lam=o.offspring, epochs=o.epochs, generations=o.generations, initial=o.initial,
                           **rates, **common)
