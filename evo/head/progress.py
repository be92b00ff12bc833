"""What a person reads while a search runs, and what a search's result file holds."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..evaluation import Candidate, Evaluation
from ..strategy import Report, Strategy

__all__ = ["anytime", "evaluation_item", "format_report", "search_summary"]


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
