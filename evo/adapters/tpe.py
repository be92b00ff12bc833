"""Optuna's TPE sampler as an evovae strategy, through Optuna's own ask-and-tell interface.

The space is the engine's: per network, the number of layers and then one width per existing layer
(conditional parameters: ``encoder_3`` exists only when ``encoder_layers`` >= 4), and the latent size, all on
the space's grids. TPE proposes genotypes it has proposed before (optuna#1547, #2021); such a duplicate is
answered from the seen-set - its known loss is told to Optuna at once, or, while the first one is still
training, when its result arrives - and never trained twice.
"""
from __future__ import annotations

import logging
import warnings

import optuna

from ..evaluation import Evaluation
from ..genotype import Genotype
from ..selection import select_survivors
from ..space import SearchSpace
from ..strategy import AsyncStrategy

__all__ = ["TPESearch"]


class TPESearch(AsyncStrategy):
    """Tree-structured Parzen estimator (Optuna's ``TPESampler``, ``multivariate=True, group=True``),
    seeded: the same seed and the same sequence of tells give the same proposals. The first
    ``startup_trials`` proposals are random (Optuna's start-up phase)."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, seed: int = 0, epochs: int = 2,
                 max_evaluations: int | None = None, budget_epochs: int | None = None, report_every: int = 10,
                 startup_trials: int = 10) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=epochs, max_evaluations=max_evaluations,
                         budget_epochs=budget_epochs, report_every=report_every)
        if type(startup_trials) is not int or startup_trials < 1:
            raise ValueError(f"startup_trials must be an integer >= 1, got {startup_trials!r}")
        logging.getLogger("optuna").setLevel(logging.WARNING)  # no per-trial chatter on stderr
        with warnings.catch_warnings():  # group=True is marked experimental; it is what conditional spaces need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True,
                                                 group=True)
        self.study = optuna.create_study(direction="minimize", sampler=sampler)
        self._trials: dict[Genotype, list[optuna.trial.Trial]] = {}
        self.answered_duplicates = 0

    def _network(self, trial: optuna.trial.Trial, name: str) -> tuple[int, ...]:
        s = self.space
        layers = trial.suggest_int(f"{name}_layers", s.min_layers, s.max_layers)
        return tuple(trial.suggest_int(f"{name}_{i}", s.width_min, s.width_max, step=s.width_step)
                     for i in range(layers))

    #: TPE trials one proposal may take (every duplicate among them answered at once) before the space
    #: counts as exhausted for TPE
    max_proposals = 1000

    def _propose(self) -> Genotype:
        for _ in range(self.max_proposals):
            trial = self.study.ask()
            encoder = self._network(trial, "encoder")
            s = self.space
            latent = trial.suggest_int("latent", s.latent_min, s.latent_max, step=s.latent_step)
            genotype = Genotype(encoder, latent, self._network(trial, "decoder"))
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
