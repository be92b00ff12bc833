"""The worker process: receive a task, train, send the result; again.

Stateless: any worker takes any task; the data set is loaded once per process
(and per split) and kept. A training failure becomes a failed result and the
worker lives on. SIGINT/SIGTERM stop it within about a second: a task in the
middle of training is abandoned (its heartbeats stop, so the head re-sends it).
A result the head will not take (it refuses this worker's key: removed from its
allow-list while the worker trained) is one ``result.unsent`` line, no traceback;
the worker goes on asking for work, and joins again if its key is put back.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import structlog

from evo.genotype import GenotypeError, parse_genotype
from evo.spec import TrainSpec

from .evaluators import Evaluator, Interrupted, WorkerUnfit
from .result import TrainResult

__all__ = ["run_worker"]

if TYPE_CHECKING:
    from transport.channel import WorkerChannel
    from transport.keys import CurveClient
    from transport.protocol import Task

log = structlog.get_logger(__name__)


def run_worker(ventilator: str, sink: str, evaluator: Evaluator, *, stop: threading.Event,
               heartbeat_s: float = 1.0, worker_id: str | None = None, max_tasks: int = 0,
               curve: CurveClient | None = None) -> int:
    """Serve tasks until ``stop`` is set (or ``max_tasks`` were done). Returns tasks done.

    ``curve``: a ``transport.keys.CurveClient`` to talk CURVE to the head; None: plain TCP."""
    from transport.channel import WorkerChannel

    done = 0
    with WorkerChannel(ventilator, sink, worker_id=worker_id, heartbeat_s=heartbeat_s, curve=curve) as channel:
        structlog.contextvars.bind_contextvars(worker_id=channel.worker_id)
        log.info("worker.started", ventilator=ventilator, sink=sink)
        while not stop.is_set() and not (max_tasks and done >= max_tasks):
            task = channel.next_task(0.25)
            if task is None:
                continue
            # every line logged while this task runs (trainer and data lines included) carries its ids
            with structlog.contextvars.bound_contextvars(task_id=task.task_id, attempt=task.attempt,
                                                         genotype=task.genotype):
                finished = _serve(channel, task, evaluator)
            if not finished:
                break
            done += 1
        log.info("worker.stopped", tasks=done)
    return done


def _serve(channel: WorkerChannel, task: Task, evaluator: Evaluator) -> bool:
    """Evaluate one task and send its result; False when the worker is stopping and abandoned it."""
    from transport.channel import ResultUnsent
    from transport.protocol import MAX_ERROR_LEN, Result

    started = time.perf_counter()
    try:
        genotype = parse_genotype(task.genotype)
        spec = TrainSpec.from_dict(task.spec)
    except (GenotypeError, ValueError, TypeError) as exc:
        outcome = TrainResult(task.genotype, False, error=f"bad task: {exc}")
    else:
        try:
            with channel.working(task) as job:
                outcome = evaluator(genotype, spec, job.progress)
        except WorkerUnfit:
            raise
        except Interrupted:
            log.info("task.abandoned", reason="worker stopping; the head will re-send it")
            return False
        except Exception as exc:  # a training failure must not kill the worker
            log.exception("task.error")
            outcome = TrainResult(task.genotype, False, error=f"{type(exc).__name__}: {exc}")
    # the wire carries the measurement's flat dict (protocol v1's Result.metrics)
    result = Result(channel.worker_id, task.task_id, task.attempt, outcome.ok, outcome.measurement.to_dict(),
                    outcome.error[:MAX_ERROR_LEN])
    try:
        channel.send_result(result)
        delivered = True
    except ResultUnsent:  # the channel logged why (result.unsent); the head counts the attempt as lost
        delivered = False
    log.info("task.finished", ok=result.ok, loss=outcome.measurement.loss, error=result.error or None,
             seconds=round(time.perf_counter() - started, 3), delivered=delivered)
    return True
