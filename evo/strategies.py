"""Every strategy by name, built from one set of options: what the CLI and the experiments construct.

The engine builds its own strategies; a strategy built on an outside library (TPE, on Optuna) lives in
evo.adapters, which the engine never imports: the adapters hand their factory in with
:func:`register_strategy` (``evo.adapters.register_all()``, called by the composition layer, evo.cli and
evo.experiments), and :func:`make_strategy` says what to call when a name was never registered.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

from .genotype import Genotype
from .multifidelity import check_fidelities
from .space import SearchSpace
from .strategy import Strategy
from .variation import MutationRates

__all__ = ["DEFAULT_NOISE_LEVEL", "DEFAULT_RUNG_AGREEMENT", "EXTERNAL", "MODES", "MODE_STRATEGIES", "OPERATORS",
           "OptionError", "STRATEGIES", "StrategyFactory",
           "StrategyOptions", "budget_of", "make_strategy", "register_strategy"]

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


class OptionError(ValueError):
    """An option a search refuses: ``option`` is its name (a :class:`StrategyOptions` field), ``message`` why.
    The command line says it as ``--option``, the Python API as the parameter; ``str()`` is ``option: message``."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


#: how a strategy schedules training (with ``fidelities``: how candidates climb the rungs)
MODES = {
    "generational": "a generation at a time (the paper's); with fidelities, successive halving inside each",
    "steady-state": "one candidate per free worker as results arrive, one fidelity",
    "asha": "asynchronous successive halving: a candidate climbs a rung as soon as it is in the top 1/eta of "
            "the results there so far; no barrier",
}

#: which strategies run under which mode
MODE_STRATEGIES = {
    "generational": ("evolution", "random", "tpe"),
    "steady-state": ("evolution", "tpe"),
    "asha": ("evolution", "random", "regularized", "tpe"),
}

#: the default search's hedges (TPE under asynchronous Hyperband; docs/experiments.md, "The default"): TPE
#: proposes at random while its best final-fidelity loss is within this fraction of their median ...
DEFAULT_NOISE_LEVEL = 0.005
#: ... and a bracket gets new genotypes while its first rung ranks like the final one this well (Spearman's rho)
DEFAULT_RUNG_AGREEMENT = 0.5

#: the mutation operator sets (evo/variation.py): the paper's, and local steps that can also shrink a network
OPERATORS = ("paper", "local")


def _whole(option: str, value: object, low: int) -> None:
    if type(value) is not int or value < low:
        raise OptionError(option, f"must be an integer >= {low}, got {value!r}")


def _rate(option: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise OptionError(option, f"must be a probability in [0, 1], got {value!r}")


@dataclass(frozen=True)
class StrategyOptions:
    """What a search is (the journal stores these; the same options and seed give the same search). Every
    value is checked here, each refusal an :class:`OptionError` naming its option, so a strategy built from
    checked options refuses nothing. ``mode`` ``steady-state`` is the regularized strategy's own schedule."""

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
    operators: str = "paper"
    continue_promotions: bool = True
    brackets: int = 1
    rung_agreement: float | None = None
    random_fraction: float = 0.0
    noise_level: float | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise OptionError("strategy", f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.mode not in MODES:
            raise OptionError("mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        for option, low in (("population", 1), ("offspring", 1), ("epochs", 1), ("eta", 2), ("tournament_size", 1),
                            ("startup_trials", 1), ("seed", 0)):
            _whole(option, getattr(self, option), low)
        for option in ("generations", "budget_epochs"):
            if getattr(self, option) is not None:
                _whole(option, getattr(self, option), 1)
        _rate("crossover_rate", self.crossover_rate)
        _rate("mutation_rate", self.mutation_rate)
        if self.generations is None and self.budget_epochs is None:
            raise OptionError("generations", "a search needs an end: give generations, budget_epochs or both")
        if self.operators not in OPERATORS:
            raise OptionError("operators", f"must be one of {', '.join(OPERATORS)}, got {self.operators!r}")
        if not isinstance(self.continue_promotions, bool):
            raise OptionError("continue_promotions", f"must be true or false, got {self.continue_promotions!r}")
        if self.fidelities:
            try:
                check_fidelities(self.fidelities)
            except ValueError as exc:
                raise OptionError("fidelities", str(exc).removeprefix("fidelities ")) from None
        # the strategy and the mode together (a regularized search is asynchronous in any mode but asha)
        allowed = MODE_STRATEGIES[self.mode]
        if self.strategy == "regularized" and self.mode == "generational":
            pass
        elif self.strategy not in allowed:
            kind = "generational only" if self.strategy == "random" else "asynchronous already"
            raise OptionError("mode", f"{self.mode} is a form of the strategies {', '.join(allowed)}; "
                                      f"{self.strategy} is {kind}")
        if self.mode == "asha" and len(self.fidelities) < 2:
            raise OptionError("fidelities", "asha needs two or more rungs (e.g. 1,3,9)")
        _whole("brackets", self.brackets, 1)
        if self.brackets > 1 and (self.mode != "asha" or self.brackets > len(self.fidelities)):
            raise OptionError("brackets", f"{self.brackets} brackets need mode asha and as many rungs (each "
                                          "bracket starts one rung higher)")
        if isinstance(self.random_fraction, bool) or not isinstance(self.random_fraction, (int, float)) \
                or not 0.0 <= self.random_fraction <= 1.0:
            raise OptionError("random_fraction", f"must be a number from 0 to 1, got {self.random_fraction!r}")
        if self.random_fraction and (self.strategy != "tpe" or self.mode == "generational"):
            raise OptionError("random_fraction", "mixes random proposals into TPE's: it needs strategy tpe in mode "
                                                 "asha or steady-state")
        if self.noise_level is not None:
            if isinstance(self.noise_level, bool) or not isinstance(self.noise_level, (int, float)) \
                    or not 0.0 <= self.noise_level < 1.0:
                raise OptionError("noise_level", f"must be a fraction of the loss from 0 to 1 (e.g. 0.005), got "
                                                 f"{self.noise_level!r}")
            if self.strategy != "tpe" or self.mode == "generational":
                raise OptionError("noise_level", "makes TPE propose at random while its results carry no signal: it "
                                                 "needs strategy tpe in mode asha or steady-state")
        if self.rung_agreement is not None:
            if isinstance(self.rung_agreement, bool) or not isinstance(self.rung_agreement, (int, float)) \
                    or not -1.0 <= self.rung_agreement <= 1.0:
                raise OptionError("rung_agreement", f"must be a number from -1 to 1, got {self.rung_agreement!r}")
            if self.mode != "asha" or self.brackets < 2:
                raise OptionError("rung_agreement", "chooses among brackets: it needs mode asha and brackets >= 2")
        if self.fidelities and self.strategy not in ("evolution", "tpe", "random", "regularized"):
            raise OptionError("fidelities", f"do not apply to strategy {self.strategy}")
        if self.fidelities and self.mode == "steady-state":
            raise OptionError("fidelities", "need mode generational or asha (steady-state trains one fidelity)")
        if self.fidelities and self.mode == "generational" and self.strategy not in ("evolution", "tpe"):
            raise OptionError("fidelities", "apply to the generational strategies evolution and tpe, or to any "
                                            "strategy with mode asha")
        if self.initial and (self.strategy != "evolution" or self.mode != "generational"):
            raise OptionError("initial", "initial genotypes seed the generational evolution only")
        if self.strategy == "regularized" and self.tournament_size > self.population:
            raise OptionError("tournament_size", f"{self.tournament_size} is larger than the population "
                                                 f"{self.population} (the queue it draws from)")

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


class _Common(TypedDict):
    """The keyword arguments every built-in strategy takes from the options."""

    mu: int
    seed: int
    budget_epochs: int | None


class _Halving(_Common):
    """... and those of the asha schedules (evo/asha.py)."""

    fidelities: tuple[int, ...]
    eta: int
    max_evaluations: int | None
    report_every: int
    continue_promotions: bool
    brackets: int
    rung_agreement: float | None


class _Rates(TypedDict):
    """The variation of the evolutionary strategies."""

    crossover_rate: float
    mutation_rate: float
    mutation: MutationRates


def make_strategy(options: StrategyOptions, space: SearchSpace = SearchSpace()) -> Strategy:
    """A fresh strategy for ``options``; one of :data:`EXTERNAL` through the factory registered for it."""
    o = options
    if o.strategy in EXTERNAL:
        factory = _factories.get(o.strategy)
        if factory is None:
            raise ValueError(f"strategy {o.strategy!r} is built outside the engine and was never registered: "
                             f"call {EXTERNAL[o.strategy]} first (the evovae command and the experiments do)")
        return factory(o, space)
    common = _Common(mu=o.population, seed=o.seed, budget_epochs=o.budget_epochs)
    mutation = MutationRates(operators=o.operators)
    if o.mode == "asha":
        from . import asha
        halving: _Halving = {"fidelities": o.fidelities, "eta": o.eta, "max_evaluations": o.max_evaluations,
                             "report_every": o.offspring, "continue_promotions": o.continue_promotions,
                             "brackets": o.brackets, "rung_agreement": o.rung_agreement, **common}
        if o.strategy == "random":
            return asha.HalvingRandom(space, **halving)
        if o.strategy == "regularized":
            return asha.HalvingRegularized(space, tournament_size=o.tournament_size, mutation=mutation, **halving)
        return asha.HalvingEvolution(space, crossover_rate=o.crossover_rate, mutation_rate=o.mutation_rate,
                                     mutation=mutation, **halving)
    if o.strategy == "random":
        from .random_search import RandomSearch
        return RandomSearch(space, batch=o.offspring, epochs=o.epochs, generations=o.generations, **common)
    if o.strategy == "regularized":
        from .regularized import RegularizedEvolution
        return RegularizedEvolution(space, tournament_size=o.tournament_size, epochs=o.epochs,
                                    max_evaluations=o.max_evaluations, report_every=o.offspring,
                                    mutation=mutation, **common)
    rates = _Rates(crossover_rate=o.crossover_rate, mutation_rate=o.mutation_rate, mutation=mutation)
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
