"""The head's evaluators: where tasks go and results come from.

:class:`DistributedEvaluator`: tasks go out through the ventilator and results come back through the sink
(imports transport, never torch). :class:`InProcessEvaluator`: one task at a time in this process, with any
``evaluate_one(genotype, spec)`` (the CLI passes gpuworker's trainer). Both are asynchronous: ``submit`` tasks,
``poll`` for finished ones; the :class:`~evo.head.runner.Runner` drives them.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

import structlog

from transport.broker import Broker, Done, Failed

from ..evaluation import Evaluation, evaluation_from_metrics
from ..genotype import Genotype
from ..spec import TrainSpec

__all__ = ["DistributedEvaluator", "InProcessEvaluator", "SearchStopped"]

log = structlog.get_logger(__name__)

Task = tuple[str, Genotype, TrainSpec]


class SearchStopped(Exception):
    """The head was asked to stop (SIGINT/SIGTERM) while tasks were out."""


class InProcessEvaluator:
    """Evaluates one pending task per ``poll`` in this process (no sockets)."""

    def __init__(self, evaluate_one: Callable[[Genotype, TrainSpec], Evaluation]) -> None:
        self._evaluate = evaluate_one
        self._pending: dict[str, tuple[Genotype, TrainSpec]] = {}
        self.worker_keys: dict[str, str] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, tasks: Sequence[Task]) -> None:
        for tid, genotype, spec in tasks:
            self._pending.setdefault(tid, (genotype, spec))

    def poll(self, timeout_s: float) -> list[tuple[str, Evaluation]]:
        if not self._pending:
            return []
        tid = next(iter(self._pending))
        genotype, spec = self._pending.pop(tid)
        return [(tid, self._evaluate(genotype, spec))]


class DistributedEvaluator:
    """Evaluates tasks on remote workers, through a :class:`Broker`.

    Each task id is derived from its content (genotype + training spec), so the broker applies a late or
    duplicate result at most once. A task the broker gave up on (its workers died or hung ``max_attempts``
    times) is a *lost* evaluation; a result the worker reported as failed (diverged, out of memory) is a
    *failed* one. ``worker_keys`` maps the task ids of results to the CURVE key that sent them.
    """

    def __init__(self, broker: Broker, *, stop: threading.Event | None = None,
                 tick: Callable[[], None] | None = None, status_every_s: float = 30.0) -> None:
        self.broker = broker
        self.stop = stop or threading.Event()
        self.tick = tick
        self.status_every_s = status_every_s
        self.worker_keys: dict[str, str] = {}
        self._pending: dict[str, tuple[Genotype, int]] = {}
        self._wire: dict[TrainSpec, dict] = {}
        self._next_status = time.monotonic() + status_every_s

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, tasks: Sequence[Task]) -> None:
        for tid, genotype, spec in tasks:
            if tid not in self._pending:
                wire = self._wire.get(spec)
                if wire is None:
                    wire = self._wire[spec] = spec.to_dict()
                self._pending[tid] = (genotype, spec.epochs)
                self.broker.submit(tid, str(genotype), wire)

    def poll(self, timeout_s: float) -> list[tuple[str, Evaluation]]:
        """``(task_id, evaluation)`` pairs that finished within ``timeout_s``."""
        if self.stop.is_set():
            raise SearchStopped(f"stopped with {len(self._pending)} tasks unfinished")
        finished = []
        for outcome in self.broker.poll(timeout_s):
            entry = self._pending.pop(outcome.task_id, None)
            if entry is not None:
                finished.append((outcome.task_id, self._evaluation(*entry, outcome)))
        if self.tick is not None:
            self.tick()
        if time.monotonic() >= self._next_status:
            self._next_status = time.monotonic() + self.status_every_s
            workers = self.broker.workers()
            log.info("search.waiting", pending=len(self._pending), workers=len(workers),
                     busy=sum(w["state"] == "busy" for w in workers.values()))
        return finished

    def _evaluation(self, genotype: Genotype, epochs: int, outcome: Done | Failed) -> Evaluation:
        tid = outcome.task_id
        if isinstance(outcome, Failed):
            log.warning("task.gave_up", task_id=tid, genotype=str(genotype), attempts=outcome.attempts,
                        reason=outcome.reason)
            return Evaluation.lost(genotype, f"gave up after {outcome.attempts} attempts: {outcome.reason}",
                                   epochs=epochs, attempts=outcome.attempts)
        result = outcome.result
        key = getattr(outcome, "peer_key", None)
        if key:
            self.worker_keys[tid] = key
        evaluation = evaluation_from_metrics(genotype, result.ok, result.metrics, result.error, epochs=epochs)
        log.info("task.completed", task_id=tid, genotype=str(genotype), epochs=epochs, attempt=result.attempt,
                 worker_id=result.worker_id, ok=evaluation.ok, loss=evaluation.loss, error=evaluation.error or None)
        return evaluation
