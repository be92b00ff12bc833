"""Run a strategy to its end with any batch evaluator: the ask/tell loop."""
from __future__ import annotations

from typing import Callable, Sequence

import structlog

from ..evaluation import Evaluation
from ..genotype import Genotype
from ..strategy import GenerationReport, Strategy

__all__ = ["BatchEvaluator", "format_report", "run_search"]

log = structlog.get_logger(__name__)

#: Evaluates a batch of genotypes, returning one Evaluation for each (any order).
BatchEvaluator = Callable[[Sequence[Genotype]], Sequence[Evaluation]]


def run_search(strategy: Strategy, evaluate: BatchEvaluator, generations: int,
               on_generation: Callable[[GenerationReport], None] | None = None) -> list[GenerationReport]:
    """Ask, evaluate, tell for ``generations`` rounds (generation 0 included)."""
    if generations < 1:
        raise ValueError(f"generations must be >= 1, got {generations}")
    reports = []
    while strategy.generation < generations:
        batch = strategy.ask()
        report = strategy.tell(evaluate(batch) if batch else [])
        best = report.best
        log.info("generation.done", generation=report.generation, evaluated=report.evaluated,
                 failed=report.failed, duplicates=report.duplicates, total=report.total_evaluations,
                 best_loss=best.loss if best else None, best=str(best.genotype) if best else None,
                 median_loss=report.median_loss)
        reports.append(report)
        if on_generation is not None:
            on_generation(report)
    return reports


def format_report(report: GenerationReport, extra: str = "") -> str:
    """One progress line a person reads."""
    best = report.best
    best_text = f"{best.loss:8.2f} {best.genotype}" if best else "     n/a"
    median = f"{report.median_loss:8.2f}" if report.median_loss is not None else "     n/a"
    line = (f"gen {report.generation:3d}  best {best_text}  median {median}  evaluated {report.evaluated:3d}"
            f"  failed {report.failed}  duplicates {report.duplicates}  total {report.total_evaluations}")
    return f"{line}  {extra}" if extra else line
