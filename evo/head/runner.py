"""Drive any strategy with an asynchronous evaluator, journaling and caching as it goes: the one ask/tell loop.

Whenever evaluation capacity is free, the strategy is asked for that many candidates (a generational strategy
hands its batch out piece by piece and waits for it to be told; an asynchronous one breeds each from what is
known then); every result is told as soon as it arrives. Every ask is journaled before its tasks go out, every
result before the strategy is told, and every tell with the strategy's state after it. A result already in the
journal (a resumed run) or in the cache (an earlier run) is never paid for again.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import structlog

from ..evaluation import Candidate, Evaluation
from ..genotype import Genotype
from ..spec import TrainSpec, task_id
from ..strategy import Report, Strategy
from .journal import JournalError, ResultCache, RunJournal

__all__ = ["AsyncEvaluator", "Runner", "Task", "epochs_trained"]

log = structlog.get_logger(__name__)

#: one task for an evaluator: (task id, genotype, the spec it is trained with)
Task = tuple[str, Genotype, TrainSpec]


class AsyncEvaluator(Protocol):
    @property
    def pending(self) -> int: ...

    def submit(self, tasks: Sequence[Task]) -> None: ...

    def poll(self, timeout_s: float) -> list[tuple[str, Evaluation]]: ...

    worker_keys: dict[str, str]  # task id -> the CURVE key that sent its result (empty without CURVE)


def epochs_trained(e: Evaluation) -> int:
    """The epochs an evaluation actually trained: the trainer's count (a diverged run stops early), else its
    fidelity when it succeeded; a lost one is not known to have trained at all."""
    trained = e.metrics.get("epochs")
    if type(trained) is int and trained >= 0:
        return trained
    return e.epochs if e.ok else 0


class Runner:
    """Runs strategies (and one-off tasks) through ``evaluator``; ``journal`` and ``cache`` are optional.

    ``capacity()`` is how many tasks may be out at once (the live workers); ``on_report`` gets every progress
    report. Counters: ``evaluated`` (results that came from evaluation now), ``reused`` (taken from this run's
    journal), ``cache_hits`` (from the cache), ``replayed`` (results replayed into the strategy on resume),
    ``epochs_trained`` and ``train_seconds`` (paid now).
    """

    def __init__(self, evaluator: AsyncEvaluator, spec: TrainSpec, *, journal: RunJournal | None = None,
                 cache: ResultCache | None = None, on_report: Callable[[Report], None] | None = None,
                 capacity: Callable[[], int] = lambda: 1, poll_s: float = 0.2) -> None:
        self.evaluator = evaluator
        self.spec = spec
        self.journal = journal
        self.cache = cache
        self.on_report = on_report
        self.capacity = capacity
        self.poll_s = poll_s
        self.evaluated = self.reused = self.cache_hits = self.replayed = 0
        self.epochs_trained = 0
        self.train_seconds = 0.0
        self._candidates: dict[str, Candidate] = {}   # task id -> the candidate it evaluates
        self._reported = 0

    def task_of(self, candidate: Candidate) -> tuple[str, TrainSpec]:
        spec = self.spec if candidate.epochs == self.spec.epochs else self.spec.replace(epochs=candidate.epochs)
        return task_id(candidate.genotype, spec), spec

    # -- resuming ------------------------------------------------------------------------
    def replay(self, strategy: Strategy) -> int:
        """Bring a fresh strategy (same options and seed) to the journal's last state. Returns tells replayed."""
        if self.journal is None:
            return 0
        results = self.journal.results()
        tells = 0
        for kind, tids, asked, state in self.journal.events():
            if kind == "ask":
                self._replay_ask(strategy, tids, asked, (state or {}).get("n"))
                continue
            missing = [t for t in tids if t not in results]
            if missing:
                raise JournalError(f"{self.journal.run_dir}: a tell names results that are not journaled "
                                   f"({missing[:3]}); the journal is corrupt")
            strategy.tell([results[t].at(self._candidates[t].epochs) for t in tids])
            tells += 1
            self.replayed += len(tids)
            if state is not None and strategy.snapshot()["population"] != state["population"]:
                raise JournalError(f"replaying {self.journal.run_dir}: the population after tell {tells} differs "
                                   "from the journaled one; the configuration or the code changed since the run "
                                   "started, so it cannot be resumed")
            self._flush_reports(strategy, replayed=True)
        self._flush_reports(strategy, replayed=True)
        log.info("run.replayed", tells=tells, results=len(results), evaluations=strategy.evaluation_count,
                 generation=strategy.generation, epochs=strategy.asked_epochs)
        return tells

    def _replay_ask(self, strategy: Strategy, tids: list[str], asked: list[str], n: int | None) -> None:
        batch = strategy.ask(n)
        # journals of format 1 hold bare genotypes (no @epochs): compare what they hold
        got = [str(c) if "@" in text else str(c.genotype) for c, text in zip(batch, asked)]
        if len(batch) != len(asked) or got != asked:
            raise JournalError(
                f"replaying {self.journal.run_dir}: the strategy asked for {[str(c) for c in batch][:3]}... where "
                f"the journal has {asked[:3]}...; the configuration or the code changed since the run started, "
                "so it cannot be resumed")
        self._candidates.update(zip(tids, batch))

    # -- the loop --------------------------------------------------------------------------
    def run(self, strategy: Strategy) -> None:
        """Ask, evaluate, tell until ``strategy.done``."""
        self._dispatch(strategy, strategy.outstanding)  # asked before a restart, never told
        self._flush_reports(strategy)
        while not strategy.done:
            room = max(1, self.capacity()) - self.evaluator.pending
            batch = strategy.ask(room) if room > 0 else []
            if batch:
                ids = [self.task_of(c)[0] for c in batch]
                if self.journal is not None:
                    # the count asked for is part of the RNG's history: replay asks for the same
                    self.journal.record_ask(batch, ids, requested=room)
                self._dispatch(strategy, batch)
            self._flush_reports(strategy)
            if strategy.done:
                break
            if not self.evaluator.pending:
                if batch:
                    continue  # every result was known: ask again
                log.warning("search.exhausted", evaluations=strategy.evaluation_count, epochs=strategy.asked_epochs,
                            outstanding=len(strategy.outstanding))
                return
            for tid, evaluation in self._receive():
                self._tell(strategy, tid, evaluation)

    def evaluate_specs(self, items: Sequence[tuple[Genotype, TrainSpec]]) -> dict[str, Evaluation]:
        """One-off tasks (e.g. retrainings) outside any strategy: ``{task_id: evaluation}``, journal- and
        cache-aware like the search's own tasks."""
        wanted = {task_id(g, spec): (g, spec) for g, spec in items}
        done = self._known({t: g for t, (g, _) in wanted.items()})
        self.evaluator.submit([(t, g, spec) for t, (g, spec) in wanted.items() if t not in done])
        while len(done) < len(wanted):
            done.update(self._receive())
        return done

    # -- helpers ---------------------------------------------------------------------------
    def _dispatch(self, strategy: Strategy, batch: Sequence[Candidate]) -> None:
        tasks = {}
        for c in batch:
            tid, spec = self.task_of(c)
            self._candidates[tid] = c
            tasks[tid] = (c.genotype, spec)
        known = self._known({t: g for t, (g, _) in tasks.items()})
        self.evaluator.submit([(t, g, spec) for t, (g, spec) in tasks.items() if t not in known])
        for tid, evaluation in known.items():
            self._tell(strategy, tid, evaluation)

    def _tell(self, strategy: Strategy, tid: str, evaluation: Evaluation) -> None:
        candidate = self._candidates.get(tid)
        if candidate is None:  # a one-off task's result, or a stray one: not the strategy's
            return
        strategy.tell([evaluation.at(candidate.epochs)])
        if self.journal is not None:
            self.journal.record_tell([tid], strategy.snapshot())
        self._flush_reports(strategy)

    def _flush_reports(self, strategy: Strategy, replayed: bool = False) -> None:
        for report in strategy.history[self._reported:]:
            best = report.best
            log.info("generation.done", generation=report.generation, evaluated=report.evaluated,
                     failed=report.failed, duplicates=report.duplicates, total=report.total_evaluations,
                     epochs=report.epochs_total, best_loss=best.loss if best else None,
                     best=str(best.genotype) if best else None, median_loss=report.median_loss, replayed=replayed)
            if self.on_report is not None:
                self.on_report(report)
        self._reported = len(strategy.history)

    def _known(self, wanted: dict[str, Genotype]) -> dict[str, Evaluation]:
        """Results already paid for: this run's journal first, then the shared cache."""
        ids = list(wanted)
        found = self.journal.results_for(ids) if self.journal is not None else {}
        self.reused += len(found)
        if self.cache is not None and len(found) < len(ids):
            cached = self.cache.get_many([t for t in ids if t not in found])
            if cached:
                self.cache_hits += len(cached)
                if self.journal is not None:
                    self.journal.record_results([(t, e, "cache") for t, e in cached.items()])
                found.update(cached)
        if found:
            log.info("results.reused", count=len(found), journal=self.reused, cache=self.cache_hits)
        return found

    def _receive(self) -> list[tuple[str, Evaluation]]:
        finished = self.evaluator.poll(self.poll_s)
        if finished:
            self.evaluated += len(finished)
            for _, e in finished:
                self.epochs_trained += epochs_trained(e)
                self.train_seconds += e.seconds
            if self.journal is not None:
                self.journal.record_results([(tid, e, "worker") for tid, e in finished],
                                            worker_keys=self.evaluator.worker_keys)
            if self.cache is not None:
                self.cache.put(finished)
        return finished
