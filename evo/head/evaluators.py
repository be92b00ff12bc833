"""The head node's evaluators: genotypes go out through the ventilator and
fitnesses come back through the sink. Imports transport (zmq), never torch."""
from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

import structlog

from transport.broker import Broker, Done, Failed

from ..evaluation import Evaluation, evaluation_from_metrics
from ..genotype import Genotype
from ..spec import TrainSpec, task_id

__all__ = ["DistributedEvaluator", "SearchStopped"]

log = structlog.get_logger(__name__)


class SearchStopped(Exception):
    """The head was asked to stop (SIGINT/SIGTERM) while tasks were out."""


class DistributedEvaluator:
    """Evaluates genotypes on remote workers, through a :class:`Broker`.

    Asynchronous: ``submit(genotypes)`` hands tasks out, ``poll(timeout)``
    returns the evaluations that finished. Called with a batch, it is a batch
    evaluator (see :mod:`evo.search`). Each genotype becomes a task whose id
    is derived from its content (genotype + training spec), so the broker
    applies a late or duplicate result at most once. A task the broker gave
    up on (its workers died or hung ``max_attempts`` times) is a failed
    evaluation with ``metrics["gave_up"]``; so is a result the worker
    reported as failed (diverged, out of memory), without that mark.
    """

    def __init__(self, broker: Broker, spec: TrainSpec, *, stop: threading.Event | None = None,
                 tick: Callable[[], None] | None = None, status_every_s: float = 30.0) -> None:
        self.broker = broker
        self.spec = spec
        self.stop = stop or threading.Event()
        self.tick = tick
        self.status_every_s = status_every_s
        self._spec_wire = spec.to_dict()
        self._pending: dict[str, Genotype] = {}
        self._next_status = time.monotonic() + status_every_s

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, genotypes: Sequence[Genotype]) -> list[str]:
        ids = []
        for genotype in genotypes:
            tid = task_id(genotype, self.spec)
            if tid not in self._pending:
                self._pending[tid] = genotype
                self.broker.submit(tid, str(genotype), self._spec_wire)
            ids.append(tid)
        return ids

    def poll(self, timeout_s: float) -> list[tuple[str, Evaluation]]:
        """``(task_id, evaluation)`` pairs that finished within ``timeout_s``."""
        if self.stop.is_set():
            raise SearchStopped(f"stopped with {len(self._pending)} tasks unfinished")
        finished = []
        for outcome in self.broker.poll(timeout_s):
            genotype = self._pending.pop(outcome.task_id, None)
            if genotype is not None:
                finished.append((outcome.task_id, self._evaluation(genotype, outcome)))
        if self.tick is not None:
            self.tick()
        if time.monotonic() >= self._next_status:
            self._next_status = time.monotonic() + self.status_every_s
            workers = self.broker.workers()
            log.info("search.waiting", pending=len(self._pending), workers=len(workers),
                     busy=sum(w["state"] == "busy" for w in workers.values()))
        return finished

    def __call__(self, batch: Sequence[Genotype]) -> list[Evaluation]:
        ids = self.submit(batch)
        wanted = len(set(ids))
        results: dict[str, Evaluation] = {}
        while len(results) < wanted:
            results.update(self.poll(0.2))
        return [results[tid] for tid in ids]

    def _evaluation(self, genotype: Genotype, outcome: Done | Failed) -> Evaluation:
        tid = outcome.task_id
        if isinstance(outcome, Failed):
            log.warning("task.gave_up", task_id=tid, genotype=str(genotype), attempts=outcome.attempts,
                        reason=outcome.reason)
            return Evaluation.failed(genotype, f"gave up after {outcome.attempts} attempts: {outcome.reason}",
                                     {"gave_up": True, "attempts": outcome.attempts})
        result = outcome.result
        evaluation = evaluation_from_metrics(genotype, result.ok, result.metrics, result.error)
        log.info("task.completed", task_id=tid, genotype=str(genotype), attempt=result.attempt,
                 worker_id=result.worker_id, ok=evaluation.ok, loss=evaluation.loss, error=evaluation.error or None)
        return evaluation
