"""Optuna's TPE as the proposer of the ASHA schedule (evo/asha.py), after BOHB's pairing of TPE with halving.

Each proposal is an Optuna trial. Its first result (the lowest rung) is reported as the intermediate value
at that many epochs, and the trial is told COMPLETE at the last rung, PRUNED below it (FAIL when training
failed): Optuna's TPE ranks pruned trials by the step they reached, then by their value - the order ASHA
itself keeps (:func:`evo.asha.promotion_rank`). A trial cannot be reopened, so when a promoted genotype's
higher result arrives it joins the study as a new finished trial with the same parameters and every rung's
value so far: TPE then sees the genotype at the highest rung it reached.
"""
from __future__ import annotations

from collections.abc import Sequence

import optuna

from ..asha import AsyncHalving
from ..evaluation import Evaluation
from ..space import SearchSpace
from .tpe import TPESearch

__all__ = ["HalvingTPE"]


class HalvingTPE(AsyncHalving, TPESearch):
    """TPE proposals under ASHA (``--strategy tpe --mode asha``)."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, seed: int = 0,
                 fidelities: Sequence[int] = (1, 3, 9), eta: int = 3, max_evaluations: int | None = None,
                 budget_epochs: int | None = None, report_every: int = 10, startup_trials: int = 10,
                 continue_promotions: bool = True, brackets: int = 1, rung_agreement: float | None = None,
                 random_fraction: float = 0.0, noise_level: float | None = None) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=fidelities[-1] if fidelities else 1,
                         max_evaluations=max_evaluations, budget_epochs=budget_epochs, report_every=report_every,
                         startup_trials=startup_trials, random_fraction=random_fraction, noise_level=noise_level)
        self._init_halving(fidelities, eta, continue_promotions, brackets, rung_agreement)
        self._params: dict = {}  # genotype -> (params, distributions) of its first trial

    def _answer(self, trial: optuna.trial.Trial, evaluation: Evaluation) -> None:
        """Tell a trial what is known of its genotype now: its result at the highest rung it reached."""
        known = self.latest.get(evaluation.genotype, evaluation)
        self._params.setdefault(known.genotype, (trial.params, trial.distributions))
        if known.loss is None:  # not ok: failed or lost
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif known.epochs == self.final_epochs:
            trial.report(known.loss, known.epochs)
            self.study.tell(trial, known.loss)
        else:
            trial.report(known.loss, known.epochs)
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)

    def _learn(self, evaluation: Evaluation) -> None:
        trials = self._trials.pop(evaluation.genotype, [])
        for trial in trials:
            self._answer(trial, evaluation)
        if trials or evaluation.genotype not in self._params:
            return
        # a promotion's result: the genotype joins the study again, at the rung it reached now
        params, distributions = self._params[evaluation.genotype]
        rungs = self._rung_results[self._bracket[evaluation.genotype]]
        values = {e.epochs: e.loss for rung in rungs for g, e in rung.items()
                  if g == evaluation.genotype and e.loss is not None}  # the ok ones
        final = evaluation.epochs == self.final_epochs
        if not evaluation.ok:
            state, value = optuna.trial.TrialState.FAIL, None
        elif final:
            state, value = optuna.trial.TrialState.COMPLETE, evaluation.loss
        else:
            state, value = optuna.trial.TrialState.PRUNED, None
        self.study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value,
                                                       state=state, intermediate_values=values))
