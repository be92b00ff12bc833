"""What a strategy asks for (a :class:`Candidate`: a genotype at a number of epochs) and what it is told
(an :class:`Evaluation`: the loss, or why there is none)."""
from __future__ import annotations

import enum
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from .genotype import Genotype, GenotypeError, parse_genotype
from .measurement import Measurement

__all__ = ["Candidate", "EvalState", "Evaluation", "parse_candidate"]


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


@dataclass(frozen=True, init=False)
class Evaluation:
    """The outcome of evaluating one genotype at ``epochs`` epochs (the fidelity it was asked at).

    ``loss`` is the validation negative ELBO in nats per example; fitness is ``1 / loss`` as in the paper.
    A failed or lost evaluation has ``loss is None``, fitness 0 and an ``error`` saying why; it never survives
    selection. ``state`` may be given as its text (``"lost"``), or left out: ok when there is a loss, else
    failed. ``measurement`` holds the trainer's figures (reconstruction and KL parts, curves, parameters,
    training seconds); ``attempts`` of a lost one, how many times the transport tried.
    """

    genotype: Genotype
    loss: float | None
    epochs: int = field(kw_only=True)
    error: str = field(kw_only=True)
    state: EvalState = field(kw_only=True)
    measurement: Measurement = field(compare=False, kw_only=True)
    attempts: int = field(compare=False, kw_only=True)

    # written out rather than made by @dataclass: ``state`` is accepted as an EvalState, its text or None, and is
    # always an EvalState once made
    def __init__(self, genotype: Genotype, loss: float | None, *, epochs: int, error: str = "",
                 state: EvalState | str | None = None, measurement: Measurement | None = None,
                 attempts: int = 0) -> None:
        if type(epochs) is not int or epochs < 1:
            raise ValueError(f"an evaluation's epochs (its fidelity) must be an integer >= 1, got {epochs!r}")
        derived = EvalState(state or (EvalState.OK if loss is not None else EvalState.FAILED))
        values = {"genotype": genotype, "loss": loss, "epochs": epochs, "error": error, "state": derived,
                  "measurement": measurement if measurement is not None else Measurement(), "attempts": attempts}
        for name, value in values.items():
            object.__setattr__(self, name, value)
        if derived is EvalState.OK:
            if loss is None or not _finite_positive(loss):
                raise ValueError(f"loss of {genotype} must be a finite positive number, got {loss!r};"
                                 " report a diverged run with Evaluation.failed(...)")
        else:
            if loss is not None:
                raise ValueError(f"a {derived.value} evaluation of {genotype} has no loss")
            if not error:
                raise ValueError(f"a {derived.value} evaluation of {genotype} needs an error message")

    @classmethod
    def succeeded(cls, genotype: Genotype, loss: float, measurement: Measurement | None = None, *,
                  epochs: int) -> Evaluation:
        return cls(genotype, float(loss), epochs=epochs, state=EvalState.OK, measurement=measurement or Measurement())

    @classmethod
    def failed(cls, genotype: Genotype, error: str, measurement: Measurement | None = None, *,
               epochs: int) -> Evaluation:
        return cls(genotype, None, epochs=epochs, error=error or "unknown failure", state=EvalState.FAILED,
                   measurement=measurement or Measurement())

    @classmethod
    def lost(cls, genotype: Genotype, reason: str, *, epochs: int, attempts: int = 0) -> Evaluation:
        return cls(genotype, None, epochs=epochs, error=reason or "lost", state=EvalState.LOST, attempts=attempts)

    @classmethod
    def of(cls, candidate: Candidate, ok: bool, measurement: Measurement, error: str = "") -> Evaluation:
        """The evaluation of ``candidate`` from a trainer's or a worker's report: succeeded when ``ok`` and the
        measurement has a finite positive loss, else failed with ``error`` (or why the loss is unusable)."""
        if ok and measurement.loss is not None and _finite_positive(measurement.loss):
            return cls.succeeded(candidate.genotype, measurement.loss, measurement, epochs=candidate.epochs)
        reason = error or f"no finite positive loss reported (loss={measurement.loss!r})"
        return cls.failed(candidate.genotype, reason, measurement, epochs=candidate.epochs)

    @property
    def ok(self) -> bool:
        return self.state is EvalState.OK

    @property
    def fitness(self) -> float:
        return 1.0 / self.loss if self.loss is not None else 0.0

    @property
    def seconds(self) -> float:
        """The training time the trainer measured (0 for a lost evaluation)."""
        return self.measurement.seconds

    @property
    def epochs_trained(self) -> int:
        """The epochs this evaluation actually trained: the trainer's count (a diverged run stops early; a
        run continued from a checkpoint trained only the epochs after it), else its fidelity when it
        succeeded; a lost one is not known to have trained at all."""
        if self.measurement.epochs:
            return self.measurement.epochs - self.measurement.resumed_from
        return self.epochs if self.ok else 0

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.genotype, self.epochs)


def _finite_positive(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and float(value) > 0
