"""Optuna's TPE sampler as an evovae strategy, through Optuna's own ask-and-tell interface.

The space is the engine's: per network, the number of layers and then one width per existing layer
(conditional parameters: ``encoder_3`` exists only when ``encoder_layers`` >= 4), and the latent size, all on
the space's grids. TPE proposes genotypes it has proposed before (optuna#1547, #2021); such a duplicate is
answered from the seen-set - its known loss is told to Optuna at once, or, while the first one is still
training, when its result arrives - and never trained twice.
"""
from __future__ import annotations

import logging
import statistics
import warnings

import optuna

from ..evaluation import Evaluation
from ..genotype import Genotype
from ..multifidelity import Rungs, check_fidelities
from ..selection import select_survivors
from ..space import SearchSpace
from ..strategies import StrategyOptions
from ..strategy import AsyncStrategy, GenerationalStrategy, Strategy

__all__ = ["MultiFidelityTPE", "TPESearch", "genotype_params", "make_study", "make_tpe", "suggest_genotype"]


def make_study(seed: int, startup_trials: int) -> optuna.study.Study:
    """A minimising study with a seeded TPE sampler (multivariate, grouped: the conditional widths)."""
    if type(startup_trials) is not int or startup_trials < 1:
        raise ValueError(f"startup_trials must be an integer >= 1, got {startup_trials!r}")
    logging.getLogger("optuna").setLevel(logging.WARNING)  # no per-trial chatter on stderr
    with warnings.catch_warnings():  # group=True is marked experimental; it is what conditional spaces need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True,
                                             group=True)
    return optuna.create_study(direction="minimize", sampler=sampler)


def _network(trial: optuna.trial.Trial, space: SearchSpace, name: str) -> tuple[int, ...]:
    layers = trial.suggest_int(f"{name}_layers", space.min_layers, space.max_layers)
    return tuple(trial.suggest_int(f"{name}_{i}", space.width_min, space.width_max, step=space.width_step)
                 for i in range(layers))


def genotype_params(genotype: Genotype) -> dict[str, int]:
    """The parameters :func:`suggest_genotype` gives ``genotype`` (layer counts, one width per layer, latent)."""
    params = {"encoder_layers": len(genotype.encoder), "latent": genotype.latent,
              "decoder_layers": len(genotype.decoder)}
    params.update({f"encoder_{i}": w for i, w in enumerate(genotype.encoder)})
    params.update({f"decoder_{i}": w for i, w in enumerate(genotype.decoder)})
    return params


def suggest_genotype(trial: optuna.trial.Trial, space: SearchSpace) -> Genotype:
    """The genotype a trial proposes: layer counts, then one width per existing layer, and the latent size."""
    encoder = _network(trial, space, "encoder")
    latent = trial.suggest_int("latent", space.latent_min, space.latent_max, step=space.latent_step)
    return Genotype(encoder, latent, _network(trial, space, "decoder"))


class TPESearch(AsyncStrategy):
    """Tree-structured Parzen estimator (Optuna's ``TPESampler``, ``multivariate=True, group=True``),
    seeded: the same seed and the same sequence of tells give the same proposals. The first
    ``startup_trials`` proposals are random (Optuna's start-up phase). With ``random_fraction`` f > 0 each later
    proposal is drawn uniformly from the space with probability f (BOHB's hedge against a model misled by its
    data: Falkner et al. 2018 use f = 1/3); it is still a trial of the study, so TPE learns from its result.
    With ``noise_level`` t > 0, every proposal after the start-up ones is drawn at random while the results carry no
    signal: until the best final-fidelity (COMPLETE) result beats their median by more than t x |median| (for
    t = 0.005, half a percent of the loss). Where every model sits on one plateau (losses a few hundredths
    apart, the ranking seed noise), TPE would otherwise fit the noise and narrow its search to wherever it
    points; random proposals keep covering the space until some result stands out, and TPE takes over from
    there (docs/experiments.md, "A second data set")."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, seed: int = 0, epochs: int = 2,
                 max_evaluations: int | None = None, budget_epochs: int | None = None, report_every: int = 10,
                 startup_trials: int = 10, random_fraction: float = 0.0, noise_level: float | None = None) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=epochs, max_evaluations=max_evaluations,
                         budget_epochs=budget_epochs, report_every=report_every)
        if isinstance(random_fraction, bool) or not isinstance(random_fraction, (int, float)) \
                or not 0.0 <= random_fraction <= 1.0:
            raise ValueError(f"random_fraction must be a number from 0 to 1, got {random_fraction!r}")
        if noise_level is not None and (isinstance(noise_level, bool) or not isinstance(noise_level, (int, float))
                                        or not 0.0 <= noise_level < 1.0):
            raise ValueError(f"noise_level must be a number from 0 to 1 (a fraction of the loss), got {noise_level!r}")
        self.random_fraction = float(random_fraction)
        self.noise_level = float(noise_level) if noise_level else None  # 0: off
        self.random_while_no_signal = 0  # proposals drawn at random because the results carried no signal yet
        self.startup_trials = startup_trials
        self.study = make_study(seed, startup_trials)
        self._trials: dict[Genotype, list[optuna.trial.Trial]] = {}
        self.answered_duplicates = 0

    #: TPE trials one proposal may take (every duplicate among them answered at once) before the space
    #: counts as exhausted for TPE
    max_proposals = 1000

    def _propose(self) -> Genotype:
        for _ in range(self.max_proposals):
            if len(self.study.trials) >= self.startup_trials:
                if self.noise_level is not None and not self.has_signal():
                    self.random_while_no_signal += 1
                    self.study.enqueue_trial(genotype_params(self.space.sample(self.rng)))  # the next ask takes it
                elif self.random_fraction and self.rng.random() < self.random_fraction:
                    self.study.enqueue_trial(genotype_params(self.space.sample(self.rng)))
            trial = self.study.ask()
            genotype = suggest_genotype(trial, self.space)
            if genotype not in self._seen and genotype not in self._trials:
                self._trials[genotype] = [trial]
                return genotype
            self.answered_duplicates += 1
            self._duplicates += 1
            known = self._seen.get(genotype)
            if known is None:  # still training, or proposed earlier in this ask: answered when its result arrives
                self._trials.setdefault(genotype, []).append(trial)
            else:
                self._answer(trial, known)
        return genotype  # a duplicate, already answered: the space is exhausted for TPE

    def has_signal(self) -> bool:
        """Whether the best finished (COMPLETE: final-fidelity) result beats their median by more than the noise
        level (a fraction of the median's size); False with fewer than two, or without a noise level."""
        if self.noise_level is None:
            return False
        values = [t.value for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                  if t.value is not None]
        if len(values) < 2:
            return False
        median = statistics.median(values)
        return median - min(values) > self.noise_level * abs(median)

    def _propose_unseen(self, taken: set[Genotype]) -> Genotype | None:
        """One ``_propose``: it skips and answers duplicates itself (the base class's hundred retries would
        each take ``max_proposals`` trials more)."""
        genotype = self._propose()
        return None if genotype in self._seen or genotype in taken else genotype

    def _answer(self, trial: optuna.trial.Trial, evaluation: Evaluation) -> None:
        if evaluation.ok:
            self.study.tell(trial, evaluation.loss)
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def _absorb(self, evaluation: Evaluation) -> None:
        for trial in self._trials.pop(evaluation.genotype, []):
            self._answer(trial, evaluation)
        self.population = select_survivors(self.population, [evaluation], self.mu)


class MultiFidelityTPE(Rungs, GenerationalStrategy):
    """TPE proposals climbing successive-halving rungs (the idea of BOHB: Falkner et al. 2018, TPE in place of
    its KDE, one bracket per generation). Each generation asks TPE for ``lam`` genotypes, trains them
    ``fidelities[0]`` epochs and promotes the best ``ceil(n / eta)`` rung by rung. Every rung's loss is
    reported to the genotype's Optuna trial as an intermediate value at its epochs; a trial that stops short
    of the last rung is told PRUNED (TPE ranks pruned trials by how far and how well they got), one that
    reaches it is told its final loss, a failed one FAIL. Duplicates are answered from the seen-set."""

    max_proposals = 1000

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, lam: int = 10, seed: int = 0,
                 fidelities: tuple[int, ...] = (1, 3, 9), eta: int = 3, generations: int | None = None,
                 budget_epochs: int | None = None, startup_trials: int = 10) -> None:
        check_fidelities(tuple(fidelities))
        super().__init__(space, mu=mu, seed=seed, epochs=fidelities[-1], generations=generations,
                         budget_epochs=budget_epochs)
        if type(lam) is not int or lam < 1:
            raise ValueError(f"offspring count (lambda) must be >= 1, got {lam!r}")
        self.lam = lam
        self._init_rungs(fidelities, eta)
        self.study = make_study(seed, startup_trials)
        self._trials: dict[Genotype, optuna.trial.Trial] = {}
        self.answered_duplicates = 0

    def _fresh(self, count: int) -> list[Genotype]:
        """``count`` new TPE proposals (``mu`` in generation 0, as the evolution's first population)."""
        fresh: list[Genotype] = []
        for _ in range(self.mu if self.generation == 0 else count):
            genotype = self._propose(set(fresh))
            if genotype is None:
                self.exhausted = True
                break
            fresh.append(genotype)
        return fresh

    def _propose(self, taken: set[Genotype]) -> Genotype | None:
        for _ in range(self.max_proposals):
            trial = self.study.ask()
            genotype = suggest_genotype(trial, self.space)
            if genotype not in self._seen and genotype not in taken:
                self._trials[genotype] = trial
                return genotype
            self.answered_duplicates += 1
            self._duplicates += 1
            known = self._seen.get(genotype)
            if known is not None and known.ok and known.epochs == self.final_epochs:
                self.study.tell(trial, known.loss)
            else:  # known only at a lower rung, or failed, or still training: no better answer than pruned
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return None

    def _rung_done(self, batch: list[Evaluation], promoted: set[Genotype]) -> None:
        final = self.rung == len(self.fidelities) - 1
        for e in batch:
            trial = self._trials.get(e.genotype)
            if trial is None:
                continue
            if e.loss is None:  # not ok: failed or lost
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                trial.report(e.loss, step=e.epochs)
                if final:
                    self.study.tell(trial, e.loss)
                elif e.genotype not in promoted:
                    self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    continue
            del self._trials[e.genotype]


def make_tpe(options: StrategyOptions, space: SearchSpace = SearchSpace()) -> Strategy:
    """The TPE search ``options`` describe (``make_strategy``'s factory for ``tpe``, registered by
    ``evo.adapters.register_all``): batches of lambda proposals (deterministic), with mode steady-state one
    proposal per free worker, with mode asha under asynchronous successive halving."""
    o = options
    if o.mode == "asha":
        from .tpe_asha import HalvingTPE
        return HalvingTPE(space, mu=o.population, seed=o.seed, fidelities=o.fidelities, eta=o.eta,
                          max_evaluations=o.max_evaluations, budget_epochs=o.budget_epochs, report_every=o.offspring,
                          startup_trials=o.startup_trials, continue_promotions=o.continue_promotions,
                          brackets=o.brackets, rung_agreement=o.rung_agreement, random_fraction=o.random_fraction,
                          noise_level=o.noise_level)
    if o.mode == "generational":
        return MultiFidelityTPE(space, mu=o.population, lam=o.offspring, seed=o.seed,
                                fidelities=o.fidelities or (o.epochs,), eta=o.eta, generations=o.generations,
                                budget_epochs=o.budget_epochs, startup_trials=o.startup_trials)
    return TPESearch(space, mu=o.population, seed=o.seed, epochs=o.epochs, max_evaluations=o.max_evaluations,
                     budget_epochs=o.budget_epochs, report_every=o.offspring, startup_trials=o.startup_trials,
                     random_fraction=o.random_fraction, noise_level=o.noise_level)

