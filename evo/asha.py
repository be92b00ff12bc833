"""Asynchronous successive halving (ASHA, Li et al. 2018, arXiv 1810.05934) as a schedule for any proposer.

A new candidate trains ``fidelities[0]`` epochs. Whenever a worker is free, the schedule first looks for a
promotion, from the highest rung down: a genotype whose result at rung k is among the best
``floor(n_k / eta)`` of the ``n_k`` results rung k has seen so far, and that was not promoted from it yet, is
trained at ``fidelities[k + 1]``. Only when nothing can be promoted does the proposer propose a new genotype.
Nothing waits for a rung to fill, so every free worker gets work. Decisions depend on the order results
arrive in; the journal keeps that order, so a resumed search replays them exactly.

With ``brackets`` B > 1 (asynchronous Hyperband, Li et al. 2018, section 3.3): new genotypes are dealt to B
brackets in turn; bracket b starts its candidates at ``fidelities[b]`` and halves only above it, so bracket
B - 1 (with B = the number of rungs) trains every candidate at the final fidelity, with no early stopping.
It hedges against cheap rungs that rank at random (a small data set whose first epochs all sit on one
plateau): whatever the low rungs say, a share of the candidates is judged at full fidelity. Promotions are
decided within a bracket.

The proposers (random, the paper's evolution as (mu + 1), aging evolution, TPE) see every result. A genotype
is known by the highest rung it reached: the schedule keeps ``latest`` (each genotype's result at its highest
rung) and ranks genotypes by :func:`promotion_rank` (higher rung first, then the loss at it), the order
Optuna's TPE gives its pruned trials. A population-based proposer breeds from that ranking.

With ``continue_promotions`` (the default) a promoted candidate continues from the checkpoint its lower rung
left (gpuworker/checkpoints.py: the result is the from-scratch one) and is charged only the epochs in between:
9 -> 27 costs 18, not 27. A worker without the checkpoint trains from scratch (same result, more compute):
the strategy's account (``asked_epochs``, the budget) charges the increment, the Runner's ``epochs_trained``
counts what was trained. Without it, a promotion pays every rung again. ``max_evaluations`` (from
``--generations``) bounds the proposals (new genotypes), not the promotions; ``budget_epochs`` bounds every
epoch charged.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from .evaluation import Candidate, Evaluation
from .genotype import Genotype
from .multifidelity import check_fidelities
from .selection import rank
from .space import SearchSpace
from .steady_state import SteadyStateEngine
from .strategy import AsyncStrategy, StopReason
from .variation import MutationRates, mutate

__all__ = ["AsyncHalving", "HalvingEvolution", "HalvingRandom", "HalvingRegularized", "promotion_rank",
           "spearman_rho"]


def promotion_rank(evaluations: Sequence[Evaluation], fidelities: Sequence[int]) -> list[Evaluation]:
    """Successful evaluations, best first: a higher rung before a lower one, then by loss, ties by genotype."""
    level = {epochs: k for k, epochs in enumerate(fidelities)}
    return sorted((e for e in evaluations if e.ok),
                  key=lambda e: (-level.get(e.epochs, -1), e.loss, str(e.genotype)))


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long samples (ties take their mean rank; 0.0 when either
    sample is constant)."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # ties: the mean of their ranks
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


class AsyncHalving(AsyncStrategy):
    """The ASHA schedule, for an asynchronous proposer (put it first among the bases): the proposer's
    ``_propose()`` gives new genotypes; ``_learn(evaluation)`` tells it each result."""

    def _init_halving(self, fidelities: Sequence[int], eta: int, continue_promotions: bool = True,
                      brackets: int = 1, rung_agreement: float | None = None) -> None:
        check_fidelities(tuple(fidelities))
        if type(eta) is not int or eta < 2:
            raise ValueError(f"eta must be an integer >= 2, got {eta!r}")
        if type(brackets) is not int or not 1 <= brackets <= len(fidelities):
            raise ValueError(f"brackets must be an integer from 1 to the number of rungs ({len(fidelities)}), "
                             f"got {brackets!r}")
        if rung_agreement is not None and not (isinstance(rung_agreement, (int, float))
                                               and -1.0 <= float(rung_agreement) <= 1.0):
            raise ValueError(f"rung_agreement must be a number from -1 to 1, got {rung_agreement!r}")
        self.brackets = brackets
        self.rung_agreement = None if rung_agreement is None else float(rung_agreement)
        self.fidelities = tuple(fidelities)
        self.eta = eta
        self.continue_promotions = bool(continue_promotions)
        self.epochs = self.fidelities[0]
        self.final_epochs = self.fidelities[-1]
        # per bracket, per rung: the results in arrival order, and the genotypes promoted from it
        self._rung_results: list[list[dict[Genotype, Evaluation]]] = [[{} for _ in self.fidelities]
                                                                      for _ in range(brackets)]
        self._promoted: list[list[set[Genotype]]] = [[set() for _ in self.fidelities] for _ in range(brackets)]
        self._bracket: dict[Genotype, int] = {}  # each proposed genotype's bracket (= the rung it starts at)
        self.latest: dict[Genotype, Evaluation] = {}  # each genotype's result at the highest rung it reached
        self.proposed = 0                             # new genotypes handed out (promotions not counted)
        self.promotions = 0
        # rung epochs -> Spearman's rho of the loss there with the final loss, over the final results so far
        self.agreement: dict[int, float] = {}
        self._final_pairs: dict[Genotype, dict[int, float]] = {}  # genotype -> {rung epochs: loss}, final incl.

    def cost(self, candidate: Candidate) -> int:
        k = self.fidelities.index(candidate.epochs) if candidate.epochs in self.fidelities else 0
        start = self._bracket.get(candidate.genotype, k)
        if self.continue_promotions and k > start:  # a promotion: it continues from its rung below
            return candidate.epochs - self.fidelities[k - 1]
        return candidate.epochs

    # -- the schedule -------------------------------------------------------------------------
    def _next_promotion(self) -> tuple[int, int, Genotype] | None:
        """(bracket, rung, genotype) of the next promotion, from the highest rung down (the lower bracket
        first at equal rungs); None when there is none."""
        for k in range(len(self.fidelities) - 2, -1, -1):
            for b in range(min(k, self.brackets - 1) + 1):
                results = self._rung_results[b][k]
                top = len(results) // self.eta
                if not top:
                    continue
                for e in rank(results.values())[:top]:
                    if e.genotype not in self._promoted[b][k]:
                        return b, k, e.genotype
        return None

    def _proposals_spent(self, extra: int = 0) -> bool:
        return self.max_evaluations is not None and self.proposed + extra >= self.max_evaluations

    def _ask(self, n: int | None) -> list[Candidate]:
        out: list[Candidate] = []
        spent = 0
        while len(out) < (1 if n is None else n) and not (self.exhausted or self._budget_hit):
            promotion = self._next_promotion()
            if promotion is not None:
                b, k, genotype = promotion
                self._promoted[b][k].add(genotype)  # promoted now, or never: the budget only shrinks
                candidate = Candidate(genotype, self.fidelities[k + 1])
                if not self._fits_budget(spent + self.cost(candidate)):
                    continue
                self.promotions += 1
            else:
                if self._proposals_spent(sum(c.genotype not in self._bracket for c in out)):
                    break
                dealt = self._dealt_brackets()
                bracket = dealt[(self.proposed + sum(c.genotype not in self._bracket for c in out)) % len(dealt)]
                if not self._fits_budget(spent + self.fidelities[bracket]):
                    if not self._fits_budget(spent + self.fidelities[0]):
                        self._budget_hit = True  # not even the cheapest new candidate fits what is left
                        break
                    bracket = 0  # what is left of the budget fits only the cheapest start
                fresh = self._propose_unseen({c.genotype for c in out})
                if fresh is None:
                    self.exhausted = True
                    break
                candidate = Candidate(fresh, self.fidelities[bracket])
            spent += self.cost(candidate)
            out.append(candidate)
        for c in out:
            if c.genotype not in self._bracket:  # a new one: its bracket is the rung it starts at
                self._bracket[c.genotype] = self.fidelities.index(c.epochs)
                self.proposed += 1
        self._close_window_at_end(out)
        return out

    def _absorb(self, evaluation: Evaluation) -> None:
        k = self.fidelities.index(evaluation.epochs)
        self._rung_results[self._bracket[evaluation.genotype]][k][evaluation.genotype] = evaluation
        previous = self.latest.get(evaluation.genotype)
        if previous is None or self.fidelities.index(previous.epochs) <= k:
            self.latest[evaluation.genotype] = evaluation
        if self.rung_agreement is not None and evaluation.ok and evaluation.epochs == self.final_epochs:
            self._measure_agreement(evaluation)
        self._learn(evaluation)
        self.population = tuple(promotion_rank(list(self.latest.values()), self.fidelities)[:self.mu])

    # -- rung agreement ----------------------------------------------------------------------
    #: final-fidelity results needed before a bracket's first rung is judged by its agreement
    MIN_AGREEMENT_PAIRS = 8

    def _dealt_brackets(self) -> list[int]:
        """The brackets new genotypes are dealt to, in turn: all of them, or with ``rung_agreement`` those whose
        first rung ranks like the final one (the highest bracket always: it stops the fewest early)."""
        if self.rung_agreement is None:
            return list(range(self.brackets))
        dealt = [b for b in range(self.brackets - 1)
                 if self.agreement.get(self.fidelities[b], 1.0) >= self.rung_agreement]
        return [*dealt, self.brackets - 1]

    def _measure_agreement(self, final: Evaluation) -> None:
        """Spearman's rho, for every rung below the final one, of the loss there with the final loss, over
        the genotypes with a final result: the loss at a rung from that genotype's own result there, else
        from the final result's learning curve (training is prefix-stable: the loss after e epochs of a
        longer run is the e-epoch result)."""
        g = final.genotype
        losses: dict[int, float] = {self.final_epochs: float(final.loss)}  # type: ignore[arg-type]
        bracket = self._rung_results[self._bracket[g]]
        curve = final.measurement.curve
        for k, epochs in enumerate(self.fidelities[:-1]):
            own = bracket[k].get(g)
            if own is not None and own.ok and own.loss is not None:
                losses[epochs] = float(own.loss)
            elif len(curve) == final.epochs:  # the whole curve (a continued run's holds its checkpoint's too)
                losses[epochs] = float(curve[epochs - 1])
        self._final_pairs[g] = losses
        if len(self._final_pairs) < self.MIN_AGREEMENT_PAIRS:
            return
        for epochs in self.fidelities[:-1]:
            pairs = [(v[epochs], v[self.final_epochs]) for v in self._final_pairs.values() if epochs in v]
            if len(pairs) >= self.MIN_AGREEMENT_PAIRS:
                self.agreement[epochs] = spearman_rho([a for a, _ in pairs], [b for _, b in pairs])

    def _learn(self, evaluation: Evaluation) -> None:
        """Tell the proposer a result (the default: nothing to learn)."""

    # -- the end -------------------------------------------------------------------------------
    def _budget_spent(self) -> bool:
        return self._budget_hit

    def _finished(self) -> bool:
        if self.exhausted or self._budget_spent():
            return True
        return self._end_reached() is not None

    def _end_reached(self) -> StopReason | None:
        if self._proposals_spent() and self._next_promotion() is None:
            return StopReason.EVALUATIONS
        return None

    def snapshot(self) -> dict:
        return {**super().snapshot(), "proposed": self.proposed, "promotions": self.promotions}

    @property
    def rung_results(self) -> list[list[dict[Genotype, Evaluation]]]:
        """Per bracket, per rung, the results so far (arrival order)."""
        return [[dict(rung) for rung in bracket] for bracket in self._rung_results]


class HalvingRandom(AsyncHalving):
    """Random proposals under ASHA (Li et al.'s own baseline)."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, seed: int = 0,
                 fidelities: Sequence[int] = (1, 3, 9), eta: int = 3, max_evaluations: int | None = None,
                 budget_epochs: int | None = None, report_every: int = 10, continue_promotions: bool = True,
                 brackets: int = 1, rung_agreement: float | None = None) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=fidelities[-1] if fidelities else 1,
                         max_evaluations=max_evaluations, budget_epochs=budget_epochs, report_every=report_every)
        self._init_halving(fidelities, eta, continue_promotions, brackets, rung_agreement)

    def _propose(self) -> Genotype:
        return self.space.sample(self.rng)


class HalvingEvolution(AsyncHalving, SteadyStateEngine):
    """The paper's evolution as (mu + 1) under ASHA: parents from the ``mu`` best genotypes by
    :func:`promotion_rank`; crossover and mutation as ``--strategy evolution``."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, seed: int = 0,
                 fidelities: Sequence[int] = (1, 3, 9), eta: int = 3, max_evaluations: int | None = None,
                 budget_epochs: int | None = None, report_every: int = 10, crossover_rate: float = 0.5,
                 mutation_rate: float = 0.8, mutation: MutationRates = MutationRates(),
                 continue_promotions: bool = True,
                 brackets: int = 1, rung_agreement: float | None = None) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=fidelities[-1] if fidelities else 1,
                         max_evaluations=max_evaluations, budget_epochs=budget_epochs, report_every=report_every,
                         crossover_rate=crossover_rate, mutation_rate=mutation_rate, mutation=mutation)
        self._init_halving(fidelities, eta, continue_promotions, brackets, rung_agreement)

    def _propose(self) -> Genotype:
        if len(self.latest) < self.mu or not self.population:
            return self.space.sample(self.rng)
        return super()._propose()


class HalvingRegularized(AsyncHalving):
    """Aging evolution under ASHA: a queue of the ``mu`` genotypes most recently proposed and measured, each
    known by its result at its highest rung; a parent is the best of ``tournament_size`` drawn from it by
    :func:`promotion_rank`, mutated; the oldest leaves."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, tournament_size: int = 3,
                 seed: int = 0, fidelities: Sequence[int] = (1, 3, 9), eta: int = 3,
                 max_evaluations: int | None = None, budget_epochs: int | None = None, report_every: int = 10,
                 mutation: MutationRates = MutationRates(), continue_promotions: bool = True,
                 brackets: int = 1, rung_agreement: float | None = None) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=fidelities[-1] if fidelities else 1,
                         max_evaluations=max_evaluations, budget_epochs=budget_epochs, report_every=report_every)
        if type(tournament_size) is not int or not 1 <= tournament_size <= mu:
            raise ValueError(f"tournament_size must be an integer in [1, population {mu}], got {tournament_size!r}")
        self._init_halving(fidelities, eta, continue_promotions, brackets, rung_agreement)
        self.tournament_size = tournament_size
        self.mutation = mutation
        self._queue: deque[Genotype] = deque()

    def _propose(self) -> Genotype:
        alive = [self.latest[g] for g in self._queue if self.latest[g].ok]
        if len(self._seen) < self.mu or not alive:
            return self.space.sample(self.rng)
        picks = self.rng.choice(len(self._queue), size=min(self.tournament_size, len(self._queue)), replace=False)
        contenders = promotion_rank([self.latest[self._queue[int(i)]] for i in sorted(picks)], self.fidelities)
        parent = contenders[0] if contenders else promotion_rank(alive, self.fidelities)[0]
        return mutate(parent.genotype, self.space, self.rng, self.mutation)

    def _learn(self, evaluation: Evaluation) -> None:
        if evaluation.epochs != self.fidelities[self._bracket[evaluation.genotype]]:
            return  # a promotion's result: the genotype is in the queue already (or aged out)
        self._queue.append(evaluation.genotype)
        if len(self._queue) > self.mu:
            self._queue.popleft()

