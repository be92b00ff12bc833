"""Every strategy by name, built from one set of options: what the CLI and the experiments construct.

The engine builds its own strategies; a strategy built on an outside library (TPE, on Optuna) lives in
evo.adapters, which the engine never imports: the adapters hand their factory in with
:func:`register_strategy` (``evo.adapters.register_all()``, called by the composition layer, evo.cli and
evo.experiments), and :func:`make_strategy` says what to call when a name was never registered.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .genotype import Genotype
from .space import SearchSpace
from .strategy import Strategy

__all__ = ["EXTERNAL", "STRATEGIES", "StrategyFactory", "StrategyOptions", "budget_of", "make_strategy",
           "register_strategy"]

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


#: A strategy the engine does not build itself: options and space in, a fresh strategy out.
StrategyFactory = Callable[["StrategyOptions", SearchSpace], Strategy]

#: The strategies built outside the pure engine, by name, and the call that registers each.
EXTERNAL = {"tpe": "evo.adapters.register_all()"}

_factories: dict[str, StrategyFactory] = {}


def register_strategy(name: str, factory: StrategyFactory) -> None:
    """Make ``factory`` build the strategy ``name`` (one of :data:`EXTERNAL`); registering again replaces it."""
    if name not in EXTERNAL:
        raise ValueError(f"only a strategy built outside the engine is registered ({', '.join(EXTERNAL)}), "
                         f"not {name!r}")
    _factories[name] = factory


def make_strategy(options: StrategyOptions, space: SearchSpace = SearchSpace()) -> Strategy:
    """A fresh strategy for ``options``; one of :data:`EXTERNAL` through the factory registered for it."""
    o = options
    if o.strategy in EXTERNAL:
        factory = _factories.get(o.strategy)
        if factory is None:
            raise ValueError(f"strategy {o.strategy!r} is built outside the engine and was never registered: "
                             f"call {EXTERNAL[o.strategy]} first (the evovae command and the experiments do)")
        return factory(o, space)
    common = dict(mu=o.population, seed=o.seed, budget_epochs=o.budget_epochs)
    if o.strategy == "random":
        from .random_search import RandomSearch
        return RandomSearch(space, batch=o.offspring, epochs=o.epochs, generations=o.generations, **common)
    if o.strategy == "regularized":
        from .regularized import RegularizedEvolution
        return RegularizedEvolution(space, tournament_size=o.tournament_size, epochs=o.epochs,
                                    max_evaluations=o.max_evaluations, report_every=o.offspring, **common)
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
