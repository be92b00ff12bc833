"""The head node: the engine's batches go out through the ventilator, and
fitnesses come back through the sink. Imports transport (zmq), never torch."""
from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

import structlog

from transport.broker import Broker, Done, Failed

from .evaluation import Evaluation, evaluation_from_metrics
from .genotype import Genotype
from .spec import TrainSpec, task_id

__all__ = ["DistributedEvaluator", "SearchStopped"]

log = structlog.get_logger(__name__)


class SearchStopped(Exception):
    """The head was asked to stop (SIGINT/SIGTERM) while tasks were out."""


class DistributedEvaluator:
    """A batch evaluator (see :mod:`evo.search`) that runs on remote workers.

    Each genotype becomes a task whose id is derived from its content
    (genotype + training spec), so the broker applies a late or duplicate
    result at most once. A task the broker gave up on (its workers died or
    hung ``max_attempts`` times) is a failed evaluation; so is a result the
    worker reported as failed (diverged, out of memory).
    """

    def __init__(self, broker: Broker, spec: TrainSpec, *, stop: threading.Event | None = None,
                 tick: Callable[[], None] | None = None, status_every_s: float = 30.0) -> None:
        self.broker = broker
        self.spec = spec
        self.stop = stop or threading.Event()
        self.tick = tick
        self.status_every_s = status_every_s
        self._spec_wire = spec.to_dict()

    def __call__(self, batch: Sequence[Genotype]) -> list[Evaluation]:
        ids = {task_id(g, self.spec): g for g in batch}
        for tid, genotype in ids.items():
            self.broker.submit(tid, str(genotype), self._spec_wire)
        results: dict[str, Evaluation] = {}
        next_status = time.monotonic() + self.status_every_s
        while len(results) < len(ids):
            if self.stop.is_set():
                raise SearchStopped(f"stopped with {len(ids) - len(results)} of {len(ids)} tasks unfinished")
            for outcome in self.broker.poll(0.2):
                genotype = ids.get(outcome.task_id)
                if genotype is None or outcome.task_id in results:
                    continue
                results[outcome.task_id] = self._evaluation(genotype, outcome)
            if self.tick is not None:
                self.tick()
            if time.monotonic() >= next_status:
                next_status += self.status_every_s
                workers = self.broker.workers()
                log.info("search.waiting", done=len(results), of=len(ids), workers=len(workers),
                         busy=sum(w["state"] == "busy" for w in workers.values()))
        return [results[tid] for tid in ids]

    def _evaluation(self, genotype: Genotype, outcome: Done | Failed) -> Evaluation:
        tid = outcome.task_id
        if isinstance(outcome, Failed):
            log.warning("task.gave_up", task_id=tid, genotype=str(genotype), attempts=outcome.attempts,
                        reason=outcome.reason)
            return Evaluation.failed(genotype, f"gave up after {outcome.attempts} attempts: {outcome.reason}")
        result = outcome.result
        evaluation = evaluation_from_metrics(genotype, result.ok, result.metrics, result.error)
        log.info("task.completed", task_id=tid, genotype=str(genotype), attempt=result.attempt,
                 worker_id=result.worker_id, ok=evaluation.ok, loss=evaluation.loss, error=evaluation.error or None)
        return evaluation
