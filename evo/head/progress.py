"""What a person reads while a search runs, and what a search's result file holds.

:class:`SearchProgress` follows a search (a Runner observer: every evaluation told, replayed ones included)
and :class:`TaskProgress` a batch of one-off tasks (the fidelity study, retrainings); each gives a
:class:`ProgressView`: how far it is towards its end (training epochs of the epoch budget; without one, the
genotypes of the evaluations it was given; tasks of the batch), the rate in this process, the time left, the
best so far. The live display (evo/cli/live.py) and the plain progress lines show it.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..evaluation import Candidate, Evaluation
from ..genotype import Genotype
from ..strategy import Report, Strategy
from .tasks import Finished

__all__ = ["ProgressView", "SearchProgress", "TaskProgress", "anytime", "evaluation_item", "format_duration",
           "format_report", "search_summary"]


def format_report(report: Report, extra: str = "") -> str:
    """One progress line: generation, best and median loss, evaluations, failures, duplicates, epochs."""
    best = report.best
    best_text = f"{best.loss:8.2f} {best.genotype}" if best else "     n/a"
    median = f"{report.median_loss:8.2f}" if report.median_loss is not None else "     n/a"
    line = (f"gen {report.generation:3d}  best {best_text}  median {median}  evaluated {report.evaluated:3d}"
            f"  failed {report.failed}  duplicates {report.duplicates}  total {report.total_evaluations}"
            f"  epochs {report.epochs_total}")
    return f"{line}  {extra}" if extra else line


def anytime(evaluations: Iterable[Evaluation], final_epochs: int,
            cost: Callable[[Candidate], int] = lambda c: c.epochs) -> list[list[float | None]]:
    """The anytime curve of a search: after each evaluation (in the order told), ``[cumulative epochs,
    best loss so far at final_epochs]`` (None until one exists). Epochs count what each evaluation was
    charged (``cost``, the strategy's: its epochs, or those after the checkpoint a promotion continues
    from), whatever its outcome: the compute the strategy chose to spend."""
    curve: list[list[float | None]] = []
    epochs, best = 0, None
    for e in evaluations:
        epochs += cost(e.candidate)
        if e.ok and e.loss is not None and e.epochs == final_epochs and (best is None or e.loss < best):
            best = e.loss
        curve.append([epochs, best])
    return curve


def evaluation_item(e: Evaluation) -> dict[str, Any]:
    """One evaluation in result.json, with its validation curve (the loss after each epoch trained)."""
    return {"genotype": str(e.genotype), "epochs": e.epochs, "state": e.state.value, "loss": e.loss,
            "fitness": e.fitness, "seconds": round(e.seconds, 3), "error": e.error,
            "curve": list(e.measurement.curve)}


def search_summary(strategy: Strategy) -> dict[str, Any]:
    """The search's history, population, evaluations, epoch account and anytime curve (JSON-able)."""
    best = strategy.best
    return {
        "strategy": type(strategy).__name__,
        "seed": strategy.seed,
        "final_epochs": strategy.final_epochs,
        "best": evaluation_item(best) if best else None,
        "epochs_total": strategy.asked_epochs,
        "generations": [
            {"generation": r.generation, "evaluated": r.evaluated, "failed": r.failed, "duplicates": r.duplicates,
             "best_loss": r.best.loss if r.best else None, "median_loss": r.median_loss,
             "epochs_total": r.epochs_total}
            for r in strategy.history
        ],
        "population": [evaluation_item(e) for e in strategy.population],
        "evaluations": [evaluation_item(e) for e in strategy.evaluations],
        "anytime": anytime(strategy.evaluations, strategy.final_epochs, strategy.cost),
    }


def format_duration(seconds: float | None) -> str:
    """``12s``, ``3m05s``, ``2h07m``, ``3d04h``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


@dataclass(frozen=True)
class ProgressView:
    """Where a search or a batch of tasks stands at monotonic time ``at``: ``done`` of ``total`` ``unit``
    (total None: no end known), evaluations told and failed, the best loss and its genotype (at the final
    fidelity), and ``rate``, units per second done in this process (None until some were)."""

    title: str
    unit: str
    done: int
    total: int | None
    evaluations: int
    failed: int
    at: float
    elapsed_s: float
    rate: float | None = None
    best_loss: float | None = None
    best: str | None = None

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at ``at``, at the rate so far (None: no end or no rate yet)."""
        if self.total is None or not self.rate:
            return None
        return max(0, self.total - self.done) / self.rate

    def eta_at(self, now: float) -> float | None:
        """Seconds left at monotonic time ``now`` (counting down from the view's estimate)."""
        eta = self.eta_s
        return None if eta is None else max(0.0, eta - (now - self.at))

    def line(self) -> str:
        """``progress 40/240 epochs  eta 3m05s`` for the plain progress lines."""
        of = f"/{self.total}" if self.total is not None else ""
        return f"progress {self.done}{of} {self.unit}  eta {format_duration(self.eta_s)}"


class SearchProgress:
    """Follows one search for the person watching: pass :meth:`observe` to ``SearchRun.observe`` (or
    ``Runner.observers``) before the replay. Its end: the strategy's epoch budget (training epochs charged,
    counted as each evaluation is told), else ``max_evaluations`` (new genotypes told: every strategy's
    evaluations-or-generations bound counts them), else none. ``start()`` when the search (re)starts: the
    rate counts what is told after it."""

    def __init__(self, strategy: Strategy, *, max_evaluations: int | None = None, title: str = "search",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.strategy = strategy
        self.title = title
        self._clock = clock
        self.total: int | None
        if strategy.budget_epochs:
            self.unit, self.total = "epochs", strategy.budget_epochs
        elif max_evaluations:
            self.unit, self.total = "genotypes", max_evaluations
        else:
            self.unit, self.total = "evaluations", None
        self.epochs = self.evaluations = self.failed = 0
        self._genotypes: set[Genotype] = set()
        self._best: Evaluation | None = None
        self._started: float | None = None
        self._live = 0  # units done since start()

    def _done(self) -> int:
        return {"epochs": self.epochs, "genotypes": len(self._genotypes)}.get(self.unit, self.evaluations)

    def start(self) -> None:
        self._started = self._clock()
        self._live = 0

    @property
    def started(self) -> bool:
        return self._started is not None

    def observe(self, candidate: Candidate, evaluation: Evaluation, worker_key: str | None, replayed: bool) -> None:
        before = self._done()
        self.evaluations += 1
        self.failed += not evaluation.ok
        self.epochs += self.strategy.cost(candidate)
        self._genotypes.add(candidate.genotype)
        if evaluation.ok and evaluation.epochs == self.strategy.final_epochs:
            best = self._best
            if best is None or (-evaluation.fitness, str(evaluation.genotype)) < (-best.fitness, str(best.genotype)):
                self._best = evaluation
        if not replayed:
            if self._started is None:
                self.start()
            self._live += self._done() - before

    def view(self) -> ProgressView:
        now = self._clock()
        elapsed = now - self._started if self._started is not None else 0.0
        best = self._best
        return ProgressView(self.title, self.unit, self._done(), self.total, self.evaluations, self.failed, now,
                            elapsed, self._live / elapsed if self._live and elapsed > 0 else None,
                            best.loss if best else None, str(best.genotype) if best else None)


class TaskProgress:
    """Follows a batch of ``total`` one-off tasks (``known`` of them already done: journaled or cached):
    :meth:`finished` with what each evaluator poll returned."""

    def __init__(self, title: str, total: int, known: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.title = title
        self.total = total
        self.done = min(known, total)
        self.failed = 0
        self._clock = clock
        self._started = clock()
        self._live = 0

    def finished(self, results: Sequence[Finished]) -> None:
        self.done = min(self.total, self.done + len(results))
        self._live += len(results)
        self.failed += sum(not f.evaluation.ok for f in results)

    def view(self) -> ProgressView:
        now = self._clock()
        elapsed = now - self._started
        return ProgressView(self.title, "tasks", self.done, self.total, self.done, self.failed, now, elapsed,
                            self._live / elapsed if self._live and elapsed > 0 else None)
