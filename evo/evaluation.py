"""What the engine is told about one genotype: its loss, or why it failed."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

from .genotype import Genotype

__all__ = ["Evaluation", "evaluation_from_metrics"]


@dataclass(frozen=True)
class Evaluation:
    """The outcome of evaluating one genotype.

    ``loss`` is the validation negative ELBO in nats per image; fitness is
    ``1 / loss`` as in the paper. A failed evaluation (diverged, crashed,
    given up after its retries) has ``loss is None``, fitness 0 and an
    ``error`` saying why; it never survives selection. ``metrics`` carries the
    trainer's extra figures (reconstruction and KL parts, curve, parameters).
    """

    genotype: Genotype
    loss: float | None
    error: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.loss is not None and not (math.isfinite(self.loss) and self.loss > 0):
            raise ValueError(
                f"loss of {self.genotype} must be a finite positive number, got {self.loss!r};"
                " report a diverged run with Evaluation.failed(...)"
            )
        if self.loss is None and not self.error:
            raise ValueError(f"a failed evaluation of {self.genotype} needs an error message")

    @classmethod
    def succeeded(cls, genotype: Genotype, loss: float, metrics: Mapping[str, Any] | None = None) -> "Evaluation":
        return cls(genotype, float(loss), "", dict(metrics or {}))

    @classmethod
    def failed(cls, genotype: Genotype, error: str, metrics: Mapping[str, Any] | None = None) -> "Evaluation":
        return cls(genotype, None, error or "unknown failure", dict(metrics or {}))

    @property
    def ok(self) -> bool:
        return self.loss is not None

    @property
    def fitness(self) -> float:
        return 1.0 / self.loss if self.loss is not None else 0.0


def evaluation_from_metrics(genotype: Genotype, ok: bool, metrics: Mapping[str, Any], error: str = "") -> Evaluation:
    """An Evaluation from a trainer's or a worker's report (``metrics['loss']`` in nats per image)."""
    loss = metrics.get("loss")
    if ok and isinstance(loss, numbers.Real) and not isinstance(loss, bool) and math.isfinite(loss) and loss > 0:
        return Evaluation.succeeded(genotype, float(loss), metrics)
    return Evaluation.failed(genotype, error or f"no finite positive loss reported (loss={loss!r})", metrics)
