"""What goes to an evaluator and what comes back: a :class:`Task` (a candidate with its task id and the
training spec at its epochs) and a :class:`Finished` result (its task id, the :class:`Evaluation`, and the
CURVE key of the worker that sent it), and the :class:`AsyncEvaluator` contract every evaluator keeps."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ..evaluation import Candidate, Evaluation
from ..genotype import Genotype
from ..spec import TrainSpec, task_id

__all__ = ["AsyncEvaluator", "Finished", "Task"]


@dataclass(frozen=True)
class Task:
    """``genotype`` trained as ``spec`` says (``spec.epochs`` is its fidelity), under its content-derived id."""

    task_id: str
    genotype: Genotype
    spec: TrainSpec

    @classmethod
    def of(cls, genotype: Genotype, spec: TrainSpec) -> Task:
        return cls(task_id(genotype, spec), genotype, spec)

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.genotype, self.spec.epochs)


class Finished(NamedTuple):
    """A task's outcome: ``evaluation`` of ``task_id``; ``worker_key`` the CURVE public key (Z85) of the worker
    that sent it (None in plain mode, in process, or for a task the transport gave up on)."""

    task_id: str
    evaluation: Evaluation
    worker_key: str | None = None


class AsyncEvaluator(Protocol):
    """Where tasks go and results come from: ``submit`` tasks (an id already pending is ignored), ``poll`` for
    the ones that finished within ``timeout_s``. Each evaluation is stamped with its task's epochs here, and
    only here."""

    @property
    def pending(self) -> int: ...

    def submit(self, tasks: Sequence[Task]) -> None: ...

    def poll(self, timeout_s: float) -> list[Finished]: ...
