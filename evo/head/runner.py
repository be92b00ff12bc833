"""Drive any strategy with an asynchronous evaluator, journaling and caching as it goes: the one ask/tell loop.

Whenever evaluation capacity is free, the strategy is asked for that many candidates (a generational strategy
hands its batch out piece by piece and waits for it to be told; an asynchronous one breeds each from what is
known then); every result is told as soon as it arrives. Every ask is journaled before its tasks go out, every
result before the strategy is told, and every tell with the strategy's state after it. A result already in the
journal (a resumed run) or in the cache (an earlier run) is never paid for again.

The Runner holds what a search keeps (journal, cache, counters); the evaluator is passed to ``run``, so a
resumed search is replayed - and refused if its journal does not replay - before any evaluator (sockets,
workers) exists.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from ..evaluation import Candidate, Evaluation
from ..genotype import Genotype
from ..spec import TrainSpec
from ..strategy import Report, StopReason, Strategy
from .cache import ResultCache
from .journal import JournalError, RunJournal
from .tasks import AsyncEvaluator, Finished, Task

__all__ = ["Observer", "Runner"]

#: Called after each tell: ``(candidate, evaluation, worker_key, replayed)``.
Observer = Callable[[Candidate, Evaluation, "str | None", bool], None]

log = structlog.get_logger(__name__)


class Runner:
    """Runs strategies (and one-off tasks) through an evaluator; ``journal`` and ``cache`` are optional.

    ``spec`` is the training spec of the search (a candidate at other epochs gets it with its own epochs);
    ``on_report`` gets every progress report; each of ``observers`` is called after every tell of the strategy
    (live or replayed on resume: ``replayed`` True) with the candidate, its evaluation and the CURVE key of the
    worker that sent it (None: from the journal, the cache or an unauthenticated worker).
    Counters: ``evaluated`` (results that came from evaluation now),
    ``reused`` (taken from this run's journal), ``cache_hits`` (from the cache), ``replayed`` (results replayed
    into the strategy on resume), ``epochs_trained`` and ``train_seconds`` (paid now).
    """

    def __init__(self, spec: TrainSpec, *, journal: RunJournal | None = None, cache: ResultCache | None = None,
                 on_report: Callable[[Report], None] | None = None, poll_s: float = 0.2) -> None:
        self.spec = spec
        self.journal = journal
        self.cache = cache
        self.on_report = on_report
        self.observers: list[Observer] = []
        self.poll_s = poll_s
        self.evaluated = self.reused = self.cache_hits = self.replayed = 0
        self.epochs_trained = 0
        self.train_seconds = 0.0
        self._candidates: dict[str, Candidate] = {}   # task id -> the candidate it evaluates
        self._reported = 0

    def task_of(self, candidate: Candidate) -> Task:
        spec = self.spec if candidate.epochs == self.spec.epochs else self.spec.replace(epochs=candidate.epochs)
        return Task.of(candidate.genotype, spec)

    # -- resuming ------------------------------------------------------------------------
    def replay(self, strategy: Strategy) -> int:
        """Bring a fresh strategy (same options and seed) to the journal's last state. Returns tells replayed."""
        journal = self.journal
        if journal is None:
            return 0
        results = journal.results()
        tells = 0
        for kind, tids, asked, state in journal.events():
            if kind == "ask":
                self._replay_ask(journal, strategy, tids, asked, (state or {}).get("n"))
                continue
            missing = [t for t in tids if t not in results]
            if missing:
                raise JournalError(f"{journal.run_dir}: a tell names results that are not journaled "
                                   f"({missing[:3]}); the journal is corrupt")
            strategy.tell([results[t] for t in tids])
            for t in tids:
                if (candidate := self._candidates.get(t)) is not None:
                    self._observe(candidate, results[t], None, replayed=True)
            tells += 1
            self.replayed += len(tids)
            if state is not None and strategy.snapshot()["population"] != state["population"]:
                raise JournalError(f"replaying {journal.run_dir}: the population after tell {tells} differs "
                                   "from the journaled one; the configuration or the code changed since the run "
                                   "started, so it cannot be resumed")
            self._flush_reports(strategy, replayed=True)
        self._flush_reports(strategy, replayed=True)
        log.info("run.replayed", tells=tells, results=len(results), evaluations=strategy.evaluation_count,
                 generation=strategy.generation, epochs=strategy.asked_epochs)
        return tells

    def _replay_ask(self, journal: RunJournal, strategy: Strategy, tids: list[str], asked: list[str],
                    n: int | None) -> None:
        batch = strategy.ask(n)
        if [str(c) for c in batch] != asked:
            raise JournalError(
                f"replaying {journal.run_dir}: the strategy asked for {[str(c) for c in batch][:3]}... where "
                f"the journal has {asked[:3]}...; the configuration or the code changed since the run started, "
                "so it cannot be resumed")
        self._candidates.update(zip(tids, batch, strict=True))

    # -- the loop --------------------------------------------------------------------------
    def run(self, strategy: Strategy, evaluator: AsyncEvaluator,
            capacity: Callable[[], int] = lambda: 1) -> StopReason | None:
        """Ask, evaluate, tell until ``strategy.done``; ``capacity()`` is how many tasks may be out at once (the
        live workers). Returns why the strategy stopped (None: it asked for nothing more while unfinished)."""
        self._dispatch(strategy, evaluator, strategy.outstanding)  # asked before a restart, never told
        self._flush_reports(strategy)
        while not strategy.done:
            room = max(1, capacity()) - evaluator.pending
            batch = strategy.ask(room) if room > 0 else []
            if batch:
                if self.journal is not None:
                    # the count asked for is part of the RNG's history: replay asks for the same
                    self.journal.record_ask(batch, [self.task_of(c).task_id for c in batch], requested=room)
                self._dispatch(strategy, evaluator, batch)
            self._flush_reports(strategy)
            if strategy.done:
                break
            if not evaluator.pending:
                if batch:
                    continue  # every result was known: ask again
                log.warning("search.exhausted", evaluations=strategy.evaluation_count, epochs=strategy.asked_epochs,
                            outstanding=len(strategy.outstanding))
                return None
            for tid, evaluation, worker_key in self._receive(evaluator):
                self._tell(strategy, tid, evaluation, worker_key)
        return strategy.stop_reason

    def evaluate_specs(self, items: Sequence[tuple[Genotype, TrainSpec]],
                       evaluator: AsyncEvaluator) -> dict[str, Evaluation]:
        """One-off tasks (e.g. retrainings) outside any strategy: ``{task_id: evaluation}``, journal- and
        cache-aware like the search's own tasks."""
        wanted = {task.task_id: task for task in (Task.of(g, spec) for g, spec in items)}
        done = self._known(list(wanted))
        evaluator.submit([task for tid, task in wanted.items() if tid not in done])
        while len(done) < len(wanted):
            done.update((tid, e) for tid, e, _ in self._receive(evaluator))
        return done

    # -- helpers ---------------------------------------------------------------------------
    def _dispatch(self, strategy: Strategy, evaluator: AsyncEvaluator, batch: Sequence[Candidate]) -> None:
        tasks = [self.task_of(c) for c in batch]
        for task, c in zip(tasks, batch, strict=True):
            self._candidates[task.task_id] = c
        known = self._known([task.task_id for task in tasks])
        evaluator.submit([task for task in tasks if task.task_id not in known])
        for tid, evaluation in known.items():
            self._tell(strategy, tid, evaluation)

    def _tell(self, strategy: Strategy, tid: str, evaluation: Evaluation, worker_key: str | None = None) -> None:
        candidate = self._candidates.get(tid)
        if candidate is None:  # a one-off task's result, or a stray one: not the strategy's
            return
        strategy.tell([evaluation])
        if self.journal is not None:
            self.journal.record_tell([tid], strategy.snapshot())
        self._observe(candidate, evaluation, worker_key, replayed=False)
        self._flush_reports(strategy)

    def _observe(self, candidate: Candidate, evaluation: Evaluation, worker_key: str | None, *,
                 replayed: bool) -> None:
        for observer in self.observers:
            observer(candidate, evaluation, worker_key, replayed)

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

    def _known(self, ids: list[str]) -> dict[str, Evaluation]:
        """Results already paid for: this run's journal first, then the shared cache."""
        found = self.journal.results_for(ids) if self.journal is not None else {}
        self.reused += len(found)
        if self.cache is not None and len(found) < len(ids):
            cached = self.cache.get_many([t for t in ids if t not in found])
            if cached:
                self.cache_hits += len(cached)
                if self.journal is not None:
                    self.journal.record_results([(t, e, None) for t, e in cached.items()], "cache")
                found.update(cached)
        if found:
            log.info("results.reused", count=len(found), journal=self.reused, cache=self.cache_hits)
        return found

    def _receive(self, evaluator: AsyncEvaluator) -> list[Finished]:
        finished = evaluator.poll(self.poll_s)
        if finished:
            self.evaluated += len(finished)
            for item in finished:
                self.epochs_trained += item.evaluation.epochs_trained
                self.train_seconds += item.evaluation.seconds
            if self.journal is not None:
                self.journal.record_results(finished, "worker")
            if self.cache is not None:
                self.cache.put((item.task_id, item.evaluation) for item in finished)
        return finished
