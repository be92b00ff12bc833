"""What a strategy asks for (a :class:`Candidate`: a genotype at a number of epochs) and what it is told
(an :class:`Evaluation`: the loss, or why there is none)."""
from __future__ import annotations

import enum
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

from .genotype import Genotype, GenotypeError, parse_genotype

__all__ = ["Candidate", "EvalState", "Evaluation", "evaluation_from_metrics", "parse_candidate"]


class EvalState(str, enum.Enum):
    """How an evaluation ended (after Optuna's TrialState).

    ``ok``: trained, with a finite loss. ``failed``: the training itself failed (diverged, out of memory,
    crashed in the trainer). ``lost``: the transport gave up on it (every attempt's worker died, hung or missed
    its heartbeats) - nothing is known of its loss. Failed and lost evaluations have fitness 0.
    """

    OK = "ok"
    FAILED = "failed"
    LOST = "lost"


@dataclass(frozen=True, order=True)
class Candidate:
    """One thing a strategy asks to be evaluated: ``genotype`` trained for ``epochs`` epochs."""

    genotype: Genotype
    epochs: int

    def __post_init__(self) -> None:
        if type(self.epochs) is not int or self.epochs < 1:
            raise ValueError(f"a candidate's epochs must be an integer >= 1, got {self.epochs!r}")

    def __str__(self) -> str:
        return f"{self.genotype}@{self.epochs}"


def parse_candidate(text: str) -> Candidate:
    """The inverse of ``str(candidate)``: ``'850|20|1000@5'``."""
    genotype, sep, epochs = text.rpartition("@")
    if not sep or not epochs.isdigit():
        raise GenotypeError(f"{text!r} is not a candidate: expected GENOTYPE@EPOCHS, e.g. 850|20|1000@5")
    return Candidate(parse_genotype(genotype), int(epochs))


@dataclass(frozen=True)
class Evaluation:
    """The outcome of evaluating one genotype at ``epochs`` epochs.

    ``loss`` is the validation negative ELBO in nats per example; fitness is ``1 / loss`` as in the paper.
    A failed or lost evaluation has ``loss is None``, fitness 0 and an ``error`` saying why; it never survives
    selection. ``epochs`` is the fidelity it was asked at (0 where unknown), ``seconds`` the training time;
    ``metrics`` carries the trainer's extra figures (reconstruction and KL parts, curve, parameters).
    """

    genotype: Genotype
    loss: float | None
    error: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict, compare=False)
    state: EvalState | None = None
    epochs: int = 0
    seconds: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        state = self.state or (EvalState.OK if self.loss is not None else EvalState.FAILED)
        object.__setattr__(self, "state", EvalState(state))
        if self.state is EvalState.OK:
            if self.loss is None or not (math.isfinite(self.loss) and self.loss > 0):
                raise ValueError(f"loss of {self.genotype} must be a finite positive number, got {self.loss!r};"
                                 " report a diverged run with Evaluation.failed(...)")
        else:
            if self.loss is not None:
                raise ValueError(f"a {self.state.value} evaluation of {self.genotype} has no loss")
            if not self.error:
                raise ValueError(f"a {self.state.value} evaluation of {self.genotype} needs an error message")

    @classmethod
    def succeeded(cls, genotype: Genotype, loss: float, metrics: Mapping[str, Any] | None = None, *,
                  epochs: int = 0, seconds: float = 0.0) -> "Evaluation":
        return cls(genotype, float(loss), "", dict(metrics or {}), EvalState.OK, epochs, seconds)

    @classmethod
    def failed(cls, genotype: Genotype, error: str, metrics: Mapping[str, Any] | None = None, *,
               epochs: int = 0, seconds: float = 0.0) -> "Evaluation":
        return cls(genotype, None, error or "unknown failure", dict(metrics or {}), EvalState.FAILED, epochs,
                   seconds)

    @classmethod
    def lost(cls, genotype: Genotype, reason: str, *, epochs: int = 0, attempts: int = 0) -> "Evaluation":
        return cls(genotype, None, reason or "lost", {"attempts": attempts}, EvalState.LOST, epochs)

    @property
    def ok(self) -> bool:
        return self.state is EvalState.OK

    @property
    def fitness(self) -> float:
        return 1.0 / self.loss if self.loss is not None else 0.0

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.genotype, self.epochs)

    def at(self, epochs: int) -> "Evaluation":
        """The same outcome, marked as measured at ``epochs`` (for results that predate fidelities)."""
        return Evaluation(self.genotype, self.loss, self.error, self.metrics, self.state, epochs, self.seconds)


def _finite_positive(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def evaluation_from_metrics(genotype: Genotype, ok: bool, metrics: Mapping[str, Any], error: str = "", *,
                            epochs: int = 0) -> Evaluation:
    """An Evaluation from a trainer's or a worker's report (``metrics['loss']`` in nats per example,
    ``metrics['seconds']`` the training time)."""
    loss = metrics.get("loss")
    seconds = metrics.get("seconds")
    seconds = float(seconds) if _finite_positive(seconds) else 0.0
    if ok and _finite_positive(loss):
        return Evaluation.succeeded(genotype, float(loss), metrics, epochs=epochs, seconds=seconds)
    return Evaluation.failed(genotype, error or f"no finite positive loss reported (loss={loss!r})", metrics,
                             epochs=epochs, seconds=seconds)
