"""The head's evaluators: where tasks go and results come from.

:class:`DistributedEvaluator`: tasks go out through the ventilator and results come back through the sink
(imports transport, never torch). :class:`InProcessEvaluator`: one task at a time in this process, with any
``evaluate_one(genotype, spec)`` (the CLI passes gpuworker's trainer). Both are asynchronous: ``submit`` tasks,
``poll`` for finished ones; the :class:`~evo.head.runner.Runner` drives them.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from transport.broker import Broker, Done, Failed

from ..evaluation import Evaluation
from ..genotype import Genotype
from ..measurement import Measurement
from ..spec import TrainSpec
from .cache import ResultCache
from .tasks import AsyncEvaluator, Finished, Task

__all__ = ["DistributedEvaluator", "InProcessEvaluator", "SearchStopped", "SimulatedEvaluator", "TrainOutcome"]

log = structlog.get_logger(__name__)


class SearchStopped(Exception):
    """The head was asked to stop (SIGINT/SIGTERM) while tasks were out."""


class TrainOutcome(Protocol):
    """What a trainer in this process reports (gpuworker's TrainResult is one): ``ok``, its figures, and why
    not when not ok."""

    @property
    def ok(self) -> bool: ...

    @property
    def measurement(self) -> Measurement: ...

    @property
    def error(self) -> str: ...


class InProcessEvaluator:
    """Evaluates one pending task per ``poll`` in this process (no sockets) with ``train(genotype, spec)``."""

    def __init__(self, train: Callable[[Genotype, TrainSpec], TrainOutcome]) -> None:
        self._train = train
        self._pending: dict[str, Task] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            self._pending.setdefault(task.task_id, task)

    def poll(self, timeout_s: float) -> list[Finished]:
        if not self._pending:
            return []
        tid = next(iter(self._pending))
        task = self._pending.pop(tid)
        outcome = self._train(task.genotype, task.spec)
        return [Finished(tid, Evaluation.of(task.candidate, outcome.ok, outcome.measurement, outcome.error))]


class DistributedEvaluator:
    """Evaluates tasks on remote workers, through a :class:`Broker`.

    Each task id is derived from its content (genotype + training spec), so the broker applies a late or
    duplicate result at most once. A task the broker gave up on (its workers died or hung ``max_attempts``
    times) is a *lost* evaluation; a result the worker reported as failed (diverged, out of memory) is a
    *failed* one. Each :class:`Finished` result carries the CURVE key of the worker that sent it.
    """

    def __init__(self, broker: Broker, *, stop: threading.Event | None = None,
                 tick: Callable[[], None] | None = None, status_every_s: float = 30.0) -> None:
        self.broker = broker
        self.stop = stop or threading.Event()
        self.tick = tick
        self.status_every_s = status_every_s
        self._pending: dict[str, Task] = {}
        self._wire: dict[TrainSpec, dict] = {}
        self._next_status = time.monotonic() + status_every_s

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            if task.task_id not in self._pending:
                wire = self._wire.get(task.spec)
                if wire is None:
                    wire = self._wire[task.spec] = task.spec.to_dict()
                self._pending[task.task_id] = task
                self.broker.submit(task.task_id, str(task.genotype), wire)

    def poll(self, timeout_s: float) -> list[Finished]:
        """The tasks that finished within ``timeout_s``."""
        if self.stop.is_set():
            raise SearchStopped(f"stopped with {len(self._pending)} tasks unfinished")
        finished = []
        for outcome in self.broker.poll(timeout_s):
            task = self._pending.pop(outcome.task_id, None)
            if task is not None:
                finished.append(self._finished(task, outcome))
        if self.tick is not None:
            self.tick()
        if time.monotonic() >= self._next_status:
            self._next_status = time.monotonic() + self.status_every_s
            workers = self.broker.workers()
            log.info("search.waiting", pending=len(self._pending), workers=len(workers),
                     busy=sum(w["state"] == "busy" for w in workers.values()))
        return finished

    def _finished(self, task: Task, outcome: Done | Failed) -> Finished:
        tid, genotype = task.task_id, task.genotype
        if isinstance(outcome, Failed):
            log.warning("task.gave_up", task_id=tid, genotype=str(genotype), attempts=outcome.attempts,
                        reason=outcome.reason)
            return Finished(tid, Evaluation.lost(genotype, f"gave up after {outcome.attempts} attempts: "
                                                 f"{outcome.reason}", epochs=task.spec.epochs,
                                                 attempts=outcome.attempts))
        result = outcome.result
        try:
            measurement = Measurement.from_dict(result.metrics)
        except ValueError as exc:  # well-formed on the wire, but not figures this head can read
            log.warning("task.bad_metrics", task_id=tid, worker_id=result.worker_id, error=str(exc))
            measurement, ok, error = Measurement(), False, f"the worker's result is unreadable: {exc}"
        else:
            ok, error = result.ok, result.error
        evaluation = Evaluation.of(task.candidate, ok, measurement, error)
        log.info("task.completed", task_id=tid, genotype=str(genotype), epochs=task.spec.epochs,
                 attempt=result.attempt, worker_id=result.worker_id, ok=evaluation.ok, loss=evaluation.loss,
                 error=evaluation.error or None)
        return Finished(tid, evaluation, outcome.peer_key)


class SimulatedEvaluator:
    """``workers`` workers simulated in this process: every task is trained for real, one after another, but
    results are delivered in the order ``workers`` parallel workers would deliver them, on a simulated clock
    (after Syne Tune's simulated back-end), so a search's decisions at that concurrency are made with real
    losses on one machine. A task starts on the first simulated worker free when it is submitted and takes
    ``duration(evaluation)`` simulated seconds (by default the training seconds measured; pass e.g.
    ``lambda e: e.epochs_trained`` for a clock in epochs). ``clock`` is the simulated time now, ``busy`` the
    simulated seconds each worker trained; ``capacity()`` is ``workers``. :meth:`over` trains each task on
    another evaluator (e.g. a cluster's workers) instead of in this process."""

    def __init__(self, train: Callable[[Genotype, TrainSpec], TrainOutcome], workers: int,
                 duration: Callable[[Evaluation], float] = lambda e: e.seconds) -> None:
        def run(task: Task) -> Finished:
            outcome = train(task.genotype, task.spec)
            return Finished(task.task_id, Evaluation.of(task.candidate, outcome.ok, outcome.measurement,
                                                        outcome.error))

        self._setup(run, workers, duration)

    @classmethod
    def over(cls, evaluator: AsyncEvaluator, workers: int,
             duration: Callable[[Evaluation], float] = lambda e: e.epochs_trained, *,
             cache: ResultCache | None = None) -> SimulatedEvaluator:
        """``workers`` simulated workers whose tasks ``evaluator`` trains, one at a time (submit one, poll
        until its result is back; what the evaluator raises, e.g. :class:`SearchStopped`, goes through). The
        head needs no trainer of its own, so an experiment run on a cluster can decide as N workers would.
        The default clock counts epochs trained, so the delivery order, and with it every decision, does not
        depend on how busy the machine was (measured seconds do). A result in ``cache`` is taken from there
        instead of trained, and still delivered when the simulated worker would finish it (give the cache
        here, not to the Runner, which would tell it at once); what is trained is put there.
        ``cache_hits`` counts the results taken from it."""
        simulated = cls.__new__(cls)  # an alternative constructor: set up by _setup below

        def run(task: Task) -> Finished:
            if cache is not None:
                known = cache.get(task.task_id)
                if known is not None:
                    simulated.cache_hits += 1
                    return Finished(task.task_id, known)
            evaluator.submit([task])
            while True:
                for finished in evaluator.poll(1.0):
                    if finished.task_id == task.task_id:
                        if cache is not None:
                            cache.put([(finished.task_id, finished.evaluation)])
                        return finished

        simulated._setup(run, workers, duration)
        return simulated

    def _setup(self, run: Callable[[Task], Finished], workers: int,
               duration: Callable[[Evaluation], float]) -> None:
        if type(workers) is not int or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self._run = run
        self._duration = duration
        self.cache_hits = 0
        self.workers = workers
        self.clock = 0.0
        self.busy = [0.0] * workers
        self._free_at = [0.0] * workers
        self._queue: list[Task] = []                                  # submitted, no worker free yet
        self._running: dict[str, tuple[float, int, Finished]] = {}    # task id -> (finish time, worker, result)
        self.delivered: list[tuple[str, float]] = []                  # (task id, simulated time) as delivered

    def capacity(self) -> int:
        return self.workers

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._running)

    def submit(self, tasks: Sequence[Task]) -> None:
        known = {t.task_id for t in self._queue} | set(self._running)
        for task in tasks:
            if task.task_id not in known:
                known.add(task.task_id)
                self._queue.append(task)
        self._start()

    def _start(self) -> None:
        """Give queued tasks to the simulated workers free now (the earliest free first), training each."""
        while self._queue:
            worker = min(range(self.workers), key=lambda w: (self._free_at[w], w))
            if self._free_at[worker] > self.clock:
                return
            task = self._queue.pop(0)
            finished = self._run(task)
            took = max(0.0, float(self._duration(finished.evaluation)))
            self._free_at[worker] = self.clock + took
            self.busy[worker] += took
            self._running[task.task_id] = (self.clock + took, worker, finished)

    def poll(self, timeout_s: float) -> list[Finished]:
        """The next result in simulated time (the clock moves to it); ties in submission order."""
        if not self._running:
            return []
        tid = min(self._running, key=lambda t: self._running[t][0])
        finish, _, finished = self._running.pop(tid)
        self.clock = max(self.clock, finish)
        self.delivered.append((tid, self.clock))
        self._start()
        return [finished]

    def summary(self) -> dict[str, object]:
        """What result.json records of the simulation: workers, simulated seconds, each worker's busy
        fraction, and the simulated time at which each result was delivered (in order)."""
        return {"workers": self.workers, "seconds": self.clock, "utilization": self.utilization(),
                "delivered": [[tid, at] for tid, at in self.delivered]}

    def utilization(self) -> list[float]:
        """Each simulated worker's busy fraction of the simulated time so far."""
        return [b / self.clock if self.clock else 0.0 for b in self.busy]
