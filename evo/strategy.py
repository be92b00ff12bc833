"""The one ask/tell contract of every search strategy (after pycma's OOOptimizer and Ray Tune's Searcher).

- ``ask(n=None) -> list[Candidate]``: up to ``n`` candidates (genotype + epochs) that need an evaluation
  (``n=None``: as many as the strategy has ready). An empty list means "nothing now": a generational
  strategy waits for its batch to be told; a finished one is ``done``.
- ``tell(evaluations) -> list[Report]``: one :class:`Evaluation` for any outstanding candidates, in any
  number and order; returns the progress reports they completed (usually none or one).
- ``done``: the strategy needs nothing more (its generations, evaluations or epoch budget are spent).
- ``best``, ``population``, ``history``, ``evaluations``, ``snapshot()``: the result.

The strategy knows nothing of how evaluation happens (in this process, over ZeroMQ, from a cache). Every
random draw happens inside ``ask`` or ``tell`` from one seeded generator, so a journal of the asks (with their
``n``) and the tells replays a search exactly. Compute is counted in training epochs: ``asked_epochs`` is the
sum of the epochs of every candidate handed out (a failed run counts its full epochs); ``budget_epochs`` bounds
it, and a candidate that would cross the budget is not handed out.
"""
from __future__ import annotations

import enum
import statistics
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .evaluation import Candidate, Evaluation
from .genotype import Genotype
from .selection import rank
from .space import SearchSpace

__all__ = ["AsyncStrategy", "GenerationalStrategy", "Report", "StopReason", "Strategy", "WindowedStrategy"]


class StopReason(str, enum.Enum):
    """Why a strategy is ``done``."""

    BUDGET = "budget"                # the epoch budget is spent (no candidate fits what is left)
    GENERATIONS = "generations"      # the generations it was given are complete
    EVALUATIONS = "evaluations"      # the evaluations it was given are told
    EXHAUSTED = "space exhausted"    # no unseen genotype could be drawn


@dataclass(frozen=True)
class Report:
    """What one generation (or, for asynchronous strategies, one window of evaluations) did."""

    generation: int
    evaluated: int
    failed: int
    duplicates: int
    population: tuple[Evaluation, ...]
    total_evaluations: int
    epochs_total: int = 0      # cumulative training epochs asked for, this report included
    best_so_far: Evaluation | None = None  # the best at the strategy's final fidelity, over the whole run

    @property
    def best(self) -> Evaluation | None:
        return self.best_so_far or (self.population[0] if self.population else None)

    @property
    def median_loss(self) -> float | None:
        losses = [e.loss for e in self.population if e.loss is not None]
        return statistics.median(losses) if losses else None



class Strategy(ABC):
    """State every strategy keeps: the space, the seeded RNG, the seen-set, the outstanding candidates,
    the told evaluations, the reports and the epoch account."""

    #: the epochs a result counts as final (selection and ``best`` use only these); set by subclasses
    final_epochs: int

    def __init__(self, space: SearchSpace, *, mu: int, seed: int, epochs: int = 2,
                 budget_epochs: int | None = None) -> None:
        if mu < 1:
            raise ValueError(f"population size must be >= 1, got {mu}")
        if type(epochs) is not int or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        if budget_epochs is not None and (type(budget_epochs) is not int or budget_epochs < 1):
            raise ValueError(f"budget_epochs must be an integer >= 1, got {budget_epochs!r}")
        self.space = space
        self.mu = mu
        self.seed = seed
        self.epochs = epochs
        self.final_epochs = epochs
        self.budget_epochs = budget_epochs
        self.rng = np.random.default_rng(seed)
        self.population: tuple[Evaluation, ...] = ()
        self.history: list[Report] = []
        self.asked_epochs = 0
        self.exhausted = False  # the space ran dry: no unseen genotype could be drawn
        self._seen: dict[Genotype, Evaluation | None] = {}  # genotype -> its latest evaluation (None: none yet)
        self._outstanding: dict[Candidate, None] = {}       # handed out, not told (ordered)
        self._budget_hit = False
        self._told: list[Evaluation] = []
        self._duplicates = 0

    # -- the contract -------------------------------------------------------------------
    def ask(self, n: int | None = None) -> list[Candidate]:
        if n is not None and (type(n) is not int or n < 0):
            raise ValueError(f"ask(n): n must be None or an integer >= 0, got {n!r}")
        if self.done or n == 0:
            return []
        batch = self._ask(n)
        for c in batch:
            self._outstanding[c] = None
            self._seen.setdefault(c.genotype, None)
            self.asked_epochs += self.cost(c)
        return batch

    def tell(self, evaluations: Iterable[Evaluation]) -> list[Report]:
        before = len(self.history)
        resolved: dict[Candidate, Evaluation] = {}
        for e in evaluations:
            if not isinstance(e, Evaluation):
                raise TypeError(f"tell() takes Evaluation objects, got {type(e).__name__}")
            if e.candidate not in self._outstanding or e.candidate in resolved:
                raise ValueError(f"{e.candidate} is not outstanding: ask for it first, and tell it once")
            resolved[e.candidate] = e
        for e in resolved.values():
            del self._outstanding[e.candidate]
            self._seen[e.genotype] = e
            self._told.append(e)
            self._tell(e)
        return self.history[before:]

    @property
    def done(self) -> bool:
        return not self._outstanding and self._finished()

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the strategy is done (None while it is not)."""
        if not self.done:
            return None
        if self.exhausted:
            return StopReason.EXHAUSTED
        return self._end_reached() or StopReason.BUDGET

    # -- views --------------------------------------------------------------------------
    @property
    def outstanding(self) -> list[Candidate]:
        return list(self._outstanding)

    @property
    def seen(self) -> Mapping[Genotype, Evaluation | None]:
        """Every genotype ever asked for, with its latest evaluation (None while outstanding)."""
        return dict(self._seen)

    @property
    def evaluations(self) -> list[Evaluation]:
        """Every evaluation told, in the order told."""
        return list(self._told)

    @property
    def evaluation_count(self) -> int:
        return len(self._told)

    @property
    def generation(self) -> int:
        return len(self.history)

    @property
    def best(self) -> Evaluation | None:
        """The best evaluation at the final fidelity (``final_epochs``) so far."""
        ranked = rank([e for e in self._told if e.epochs == self.final_epochs])
        return ranked[0] if ranked and ranked[0].ok else None

    def snapshot(self) -> dict:
        """The strategy's state as plain JSON-able values: checked against the journal on replay."""
        return {
            "generation": self.generation,
            "population": [[str(e.genotype), e.loss] for e in self.population],
            "evaluations": self.evaluation_count,
            "asked_epochs": self.asked_epochs,
            "rng": self.rng.bit_generator.state,
        }

    def cost(self, candidate: Candidate) -> int:
        """The training epochs ``candidate`` is charged: its epochs (a schedule that continues promoted
        candidates from checkpoints charges only the epochs in between)."""
        return candidate.epochs

    # -- what a strategy defines ----------------------------------------------------------
    @abstractmethod
    def _ask(self, n: int | None) -> list[Candidate]:
        """Up to ``n`` new candidates (the base class registers them)."""

    @abstractmethod
    def _tell(self, evaluation: Evaluation) -> None:
        """Take one evaluation in (already recorded in the seen-set and ``evaluations``)."""

    @abstractmethod
    def _finished(self) -> bool:
        """Nothing more will be asked (outstanding candidates may still be told)."""

    def _end_reached(self) -> StopReason | None:
        """The count-based end (generations, evaluations) that finished the search, if one did."""
        return None

    # -- helpers --------------------------------------------------------------------------
    def _fits_budget(self, epochs: int) -> bool:
        return self.budget_epochs is None or self.asked_epochs + epochs <= self.budget_epochs

    def _budget_spent(self) -> bool:
        return self._budget_hit or (self.budget_epochs is not None
                                    and self.asked_epochs + self.final_epochs > self.budget_epochs)

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
        if len(fresh) < count:
            self.exhausted = True
        return fresh

    def _report(self, evaluated: list[Evaluation], duplicates: int) -> Report:
        report = Report(generation=self.generation, evaluated=len(evaluated),
                        failed=sum(not e.ok for e in evaluated), duplicates=duplicates,
                        population=self.population, total_evaluations=self.evaluation_count,
                        epochs_total=self.asked_epochs, best_so_far=self.best)
        self.history.append(report)
        return report


class GenerationalStrategy(Strategy):
    """A batch at a time: ``_next_batch()`` proposes it, it is handed out over any number of asks, and
    ``_complete(evaluations)`` runs once all of it was told. Deterministic whatever the order results
    arrive in. ``generations`` (counting the first) bounds the number of completed batches that end a
    generation; ``budget_epochs`` the epochs asked."""

    def __init__(self, space: SearchSpace, *, mu: int, seed: int, epochs: int = 2, generations: int | None = None,
                 budget_epochs: int | None = None) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=epochs, budget_epochs=budget_epochs)
        if generations is not None and (type(generations) is not int or generations < 1):
            raise ValueError(f"generations must be an integer >= 1, got {generations!r}")
        self.generations = generations
        self._batch: list[Candidate] | None = None
        self._handed = 0
        self._results: dict[Candidate, Evaluation] = {}
        self._empty_in_a_row = 0

    @property
    def generation(self) -> int:
        return self._generation_count()

    def _generation_count(self) -> int:
        return len(self.history)

    def _ask(self, n: int | None) -> list[Candidate]:
        while self._batch is None:
            if self._finished():
                return []
            self._duplicates = 0
            self._batch, self._handed, self._results = self._next_batch(), 0, {}
            if not self._batch:  # every offspring was a duplicate: the batch completes at once
                self._batch = None
                self._empty_in_a_row += 1
                self._complete([])
                if self._empty_in_a_row >= 100:
                    self.exhausted = True
        self._empty_in_a_row = 0
        stop = len(self._batch) if n is None else min(len(self._batch), self._handed + n)
        out: list[Candidate] = []
        for c in self._batch[self._handed:stop]:
            if not self._fits_budget(c.epochs + sum(x.epochs for x in out)):
                del self._batch[self._handed + len(out):]  # the budget cuts the batch here, for good
                self._budget_hit = True
                break
            out.append(c)
        self._handed += len(out)
        if self._budget_hit:
            if not self._handed:  # nothing of it fits: the batch ends empty (a multi-fidelity generation
                self._batch = None  # cut between rungs still reports what its lower rungs measured)
                self._complete([])
            else:
                self._maybe_complete()
        return out

    def _tell(self, evaluation: Evaluation) -> None:
        self._results[evaluation.candidate] = evaluation
        self._maybe_complete()

    def _maybe_complete(self) -> None:
        if self._batch is not None and len(self._results) == len(self._batch) == self._handed:
            batch = [self._results[c] for c in self._batch]
            self._batch = None
            self._complete(batch)

    def _finished(self) -> bool:
        if self._batch is not None:
            return False
        if self.exhausted or self._end_reached():
            return True
        return self._budget_spent()

    def _end_reached(self) -> StopReason | None:
        if self.generations is not None and self._generation_count() >= self.generations:
            return StopReason.GENERATIONS
        return None

    @abstractmethod
    def _next_batch(self) -> list[Candidate]:
        """The next batch to evaluate (candidates whose genotypes are new, unless a subclass promotes)."""

    @abstractmethod
    def _complete(self, batch: list[Evaluation]) -> None:
        """The whole batch was told: select, promote, report."""


class WindowedStrategy(Strategy):
    """A strategy without generations: a report every ``report_every`` evaluations told (a window), and one for
    what is left when the search ends. ``_record(evaluation)`` after taking each result in;
    ``_close_window_at_end(asked)`` when an ask hands out nothing more."""

    def __init__(self, space: SearchSpace, *, mu: int, seed: int, epochs: int, budget_epochs: int | None,
                 report_every: int) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=epochs, budget_epochs=budget_epochs)
        if type(report_every) is not int or report_every < 1:
            raise ValueError(f"report_every must be an integer >= 1, got {report_every!r}")
        self.report_every = report_every
        self._window: list[Evaluation] = []

    def _record(self, evaluation: Evaluation) -> None:
        self._window.append(evaluation)
        if len(self._window) >= self.report_every or (self._finished() and not self._outstanding):
            self._close_window()

    def _close_window_at_end(self, asked: Sequence[Candidate]) -> None:
        """The search ends here (nothing asked, nothing out, finished): report what was told since the last
        report."""
        if not asked and not self._outstanding and self._window and self._finished():
            self._close_window()

    def _close_window(self) -> None:
        window, self._window = self._window, []
        duplicates, self._duplicates = self._duplicates, 0
        self._report(window, duplicates)


class AsyncStrategy(WindowedStrategy):
    """A candidate as soon as a worker is free: ``_propose()`` breeds one genotype from what is known now,
    ``_absorb(evaluation)`` takes each result in at once. ``max_evaluations`` and ``budget_epochs`` bound the
    search; a report is made every ``report_every`` evaluations."""

    def __init__(self, space: SearchSpace, *, mu: int, seed: int, epochs: int = 2,
                 max_evaluations: int | None = None, budget_epochs: int | None = None,
                 report_every: int = 10) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=epochs, budget_epochs=budget_epochs,
                         report_every=report_every)
        if max_evaluations is not None and (type(max_evaluations) is not int or max_evaluations < 1):
            raise ValueError(f"max_evaluations must be an integer >= 1, got {max_evaluations!r}")
        self.max_evaluations = max_evaluations

    def _ask(self, n: int | None) -> list[Candidate]:
        out: list[Candidate] = []
        for _ in range(1 if n is None else n):
            if self._finished() or not self._fits_budget(self.epochs * (len(out) + 1)):
                break
            if self.max_evaluations is not None and \
                    self.evaluation_count + len(self._outstanding) + len(out) >= self.max_evaluations:
                break
            genotype = self._propose_unseen({c.genotype for c in out})
            if genotype is None:
                self.exhausted = True
                self._close_window_at_end(out)
                break
            out.append(Candidate(genotype, self.epochs))
        return out

    def _propose_unseen(self, taken: set[Genotype]) -> Genotype | None:
        for _ in range(100):
            genotype = self._propose()
            if genotype not in self._seen and genotype not in taken:
                return genotype
            self._duplicates += 1
        return None

    def _tell(self, evaluation: Evaluation) -> None:
        self._absorb(evaluation)
        self._record(evaluation)

    def _finished(self) -> bool:
        return self.exhausted or self._budget_spent() or self._end_reached() is not None

    def _end_reached(self) -> StopReason | None:
        if self.max_evaluations is not None and \
                self.evaluation_count + len(self._outstanding) >= self.max_evaluations:
            return StopReason.EVALUATIONS
        return None

    @abstractmethod
    def _propose(self) -> Genotype:
        """One genotype to evaluate next (the base class drops duplicates and retries)."""

    @abstractmethod
    def _absorb(self, evaluation: Evaluation) -> None:
        """Take one evaluation into the population."""
