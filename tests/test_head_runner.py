"""The Runner with the real SQLite journal and the in-process evaluator: a search that dies part-way and is
resumed with a fresh strategy (Runner.replay) is the search that never died, for every strategy; results
received but not told are reused; a changed configuration is refused; the cache and evaluate_specs."""
import dataclasses
import sqlite3

import pytest

from evo.evaluation import Candidate
from evo.genotype import parse_genotype
from evo.head.cache import ResultCache
from evo.head.evaluators import InProcessEvaluator
from evo.head.journal import JournalError, RunJournal
from evo.head.runner import Runner
from evo.spec import TrainSpec, task_id
from evo_helpers import ALL, OPTIONS, build, evaluate, told, train

SPEC = TrainSpec(dataset="synthetic", epochs=2)


class HeadDied(Exception):
    """The head stopped here (a real exception, raised where a crash would strike)."""


class Trainer:
    """train for the InProcessEvaluator: the helpers' deterministic outcome at the spec's epochs; the head dies
    when asked to train for the ``die_at``-th time."""

    def __init__(self, die_at=None):
        self.calls: list[str] = []
        self.die_at = die_at

    def __call__(self, genotype, spec):
        if self.die_at is not None and len(self.calls) + 1 == self.die_at:
            raise HeadDied(f"died training {genotype}@{spec.epochs}")
        self.calls.append(f"{genotype}@{spec.epochs}")
        return train(genotype, spec)


class Sink(InProcessEvaluator):
    """Every pending task finishes at each poll, as when a ZeroMQ sink hands over several results at once;
    each result arrives with its worker's key."""

    def poll(self, timeout_s):
        finished = []
        while self.pending:
            finished += super().poll(timeout_s)
        return [f._replace(worker_key=f"key-of-{f.task_id[:6]}") for f in finished]


class DiesAfterResults(RunJournal):
    """The real journal, in a head that dies right after committing its ``die_after``-th batch of results,
    before telling any of them."""

    die_after = None
    batches = 0

    def record_results(self, items, source):
        super().record_results(items, source)
        self.batches += 1
        if self.batches == self.die_after:
            raise HeadDied("died after journaling results")


def _config(name, **changes):
    return {"strategy": name, **dataclasses.asdict(dataclasses.replace(OPTIONS[name], **changes))}


def _search(name, run_dir, trainer, capacity=1, resume=False, evaluator=InProcessEvaluator, journal_type=RunJournal,
            **changes):
    """One head process: create or reopen the run, replay it into a fresh strategy, run it to the end."""
    journal = journal_type.open(run_dir) if resume else journal_type.create(run_dir, _config(name, **changes))
    strategy = build(name, **changes)
    runner = Runner(SPEC, journal=journal, poll_s=0.0)
    try:
        runner.replay(strategy)                      # before any evaluator exists
        runner.stopped = runner.run(strategy, evaluator(trainer), capacity=lambda: capacity)
    finally:
        journal.close()
    return strategy, runner


def _events(run_dir):
    journal = RunJournal.open(run_dir)
    try:
        return list(journal.events())
    finally:
        journal.close()


def _same_search(strategy, reference):
    assert told(strategy) == told(reference)
    assert strategy.snapshot() == reference.snapshot()
    assert [(r.generation, r.evaluated, r.total_evaluations, r.epochs_total, r.population) for r in
            strategy.history] == [(r.generation, r.evaluated, r.total_evaluations, r.epochs_total, r.population)
                                  for r in reference.history]


_REFERENCES = {}


@pytest.fixture
def straight(tmp_path_factory):
    """The uninterrupted run of a strategy at a capacity (each run once per session) and its run directory."""
    def run(name, capacity):
        if (name, capacity) not in _REFERENCES:
            run_dir = tmp_path_factory.mktemp("straight")
            _REFERENCES[name, capacity] = _search(name, run_dir, Trainer(), capacity)[0], run_dir
        return _REFERENCES[name, capacity]
    return run


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("capacity, k", [(1, 1), (3, 6), (1, 14), (3, 14)])
def test_a_resumed_run_is_the_run_that_never_stopped(tmp_path, straight, name, capacity, k):
    reference, reference_dir = straight(name, capacity)
    assert reference.evaluation_count > k
    first = Trainer(die_at=k + 1)
    with pytest.raises(HeadDied):
        _search(name, tmp_path / "run", first, capacity)
    assert len(first.calls) == k
    second = Trainer()
    resumed, runner = _search(name, tmp_path / "run", second, capacity, resume=True)
    _same_search(resumed, reference)
    assert runner.replayed == k                       # every result trained before the crash was told then
    assert first.calls + second.calls == [str(e.candidate) for e in reference.evaluations]  # none paid twice
    assert runner.evaluated == reference.evaluation_count - k and runner.reused == 0
    assert _events(tmp_path / "run") == _events(reference_dir)           # asks with their n, tells, states


@pytest.mark.parametrize("name", ALL)
def test_a_run_that_dies_twice_is_still_the_same_run(tmp_path, straight, name):
    reference, _ = straight(name, 3)
    calls = []
    for die_at in (4, 5):
        trainer = Trainer(die_at=die_at)
        with pytest.raises(HeadDied):
            _search(name, tmp_path / "run", trainer, 3, resume=bool(calls))
        calls += trainer.calls
        calls.append(None)
    last = Trainer()
    resumed, _ = _search(name, tmp_path / "run", last, 3, resume=True)
    _same_search(resumed, reference)
    assert [c for c in calls if c] + last.calls == [str(e.candidate) for e in reference.evaluations]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("die_after", [2])
def test_results_received_but_not_told_are_reused_not_run_again(tmp_path, name, die_after):
    kw = dict(capacity=4, evaluator=Sink, journal_type=DiesAfterResults)
    DiesAfterResults.die_after = None
    reference, _ = _search(name, tmp_path / "straight", Trainer(), **kw)
    DiesAfterResults.die_after = die_after
    try:
        first = Trainer()
        with pytest.raises(HeadDied):
            _search(name, tmp_path / "run", first, **kw)
        untold = [e for e in _events(tmp_path / "run") if e[0] == "tell"]
        second = Trainer()
        resumed, runner = _search(name, tmp_path / "run", second, **{**kw, "journal_type": RunJournal}, resume=True)
    finally:
        DiesAfterResults.die_after = None
    assert runner.reused >= 1 and runner.replayed == len(untold)
    assert runner.replayed + runner.reused == len(first.calls)
    assert first.calls + second.calls == [str(e.candidate) for e in reference.evaluations]
    _same_search(resumed, reference)
    assert runner.stopped is resumed.stop_reason is not None
    journal = RunJournal.open(tmp_path / "run")      # every result journaled with the key of its worker
    try:
        results = journal.results()
        assert len(results) == resumed.evaluation_count
        assert all(journal.worker_key(tid) == f"key-of-{tid[:6]}" for tid in results)
        asked = {t: text for kind, tids, texts, _ in journal.events() if kind == "ask"
                 for t, text in zip(tids, texts, strict=True)}
        assert {tid: str(e.candidate) for tid, e in results.items()} == asked   # each at the epochs it was asked
    finally:
        journal.close()


@pytest.mark.parametrize("name, change", [
    ("evolution", dict(seed=4)), ("evolution", dict(offspring=6)), ("evolution", dict(epochs=3)),
    ("multifidelity", dict(fidelities=(1, 3, 8))), ("random", dict(population=5)),
    ("steady-state", dict(crossover_rate=0.1)), ("regularized", dict(tournament_size=3)), ("tpe", dict(seed=4)),
])
def test_a_changed_configuration_is_refused_and_the_journal_left_as_it_was(tmp_path, name, change):
    with pytest.raises(HeadDied):
        _search(name, tmp_path / "run", Trainer(die_at=13), 2)
    before = _events(tmp_path / "run")
    journal = RunJournal.open(tmp_path / "run")
    try:
        with pytest.raises(JournalError, match="configuration or the code changed since the run started"):
            Runner(SPEC, journal=journal).replay(build(name, **change))
    finally:
        journal.close()
    assert _events(tmp_path / "run") == before


def test_a_journaled_result_that_no_longer_gives_the_journaled_population_is_refused(tmp_path):
    with pytest.raises(HeadDied):
        _search("evolution", tmp_path / "run", Trainer(die_at=10))
    con = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    with con:
        con.execute("UPDATE results SET loss = 1.0 WHERE rowid = 3")   # as if the trainer now said otherwise
    con.close()
    journal = RunJournal.open(tmp_path / "run")
    try:
        with pytest.raises(JournalError, match="population after tell 4 differs"):   # generation 0 ends there
            Runner(SPEC, journal=journal).replay(build("evolution"))
    finally:
        journal.close()


@pytest.mark.parametrize("name", ALL)
def test_a_second_run_with_the_same_cache_trains_nothing(tmp_path, name):
    cache = ResultCache(tmp_path / "cache.sqlite")
    first_trainer = Trainer()
    journal = RunJournal.create(tmp_path / "first", _config(name))
    first = build(name)
    Runner(SPEC, journal=journal, cache=cache, poll_s=0.0).run(first, InProcessEvaluator(first_trainer))
    journal.close()
    journal = RunJournal.create(tmp_path / "second", _config(name))
    second = build(name)
    runner = Runner(SPEC, journal=journal, cache=cache, poll_s=0.0)
    runner.run(second, InProcessEvaluator(Trainer(die_at=1)))   # die_at=1: any training would raise
    assert journal.counts()["results_cache"] == first.evaluation_count
    journal.close()
    cache.close()
    assert runner.cache_hits == first.evaluation_count and runner.evaluated == 0
    _same_search(second, first)


def test_the_cache_is_consulted_per_task_so_a_bigger_search_trains_only_what_is_new(tmp_path):
    cache = ResultCache(tmp_path / "cache.sqlite")
    small = build("evolution", generations=2)
    Runner(SPEC, cache=cache, poll_s=0.0).run(small, InProcessEvaluator(Trainer()))
    trainer = Trainer()
    bigger = build("evolution", generations=4)
    runner = Runner(SPEC, cache=cache, poll_s=0.0)
    runner.run(bigger, InProcessEvaluator(trainer))
    cache.close()
    assert runner.cache_hits == small.evaluation_count
    assert trainer.calls == [str(e.candidate) for e in bigger.evaluations[small.evaluation_count:]]


def test_evaluate_specs_returns_journaled_results_without_training_again(tmp_path):
    items = [(parse_genotype(t), SPEC.replace(epochs=e)) for t, e in
             (("850|20|1000", 2), ("850|20|1000", 5), ("200,500|20|1000,650,50", 3))]
    ids = [task_id(g, spec) for g, spec in items]
    journal = RunJournal.create(tmp_path / "run", {})
    trainer = Trainer()
    runner = Runner(SPEC, journal=journal, poll_s=0.0)
    results = runner.evaluate_specs(items, InProcessEvaluator(trainer))
    assert sorted(results) == sorted(ids) and len(trainer.calls) == 3
    assert results[ids[1]].loss == evaluate(Candidate(items[1][0], 5)).loss
    assert [results[t].epochs for t in ids] == [2, 5, 3]            # each stamped with its spec's epochs
    again = runner.evaluate_specs(items[1:], InProcessEvaluator(Trainer(die_at=1)))
    assert len(trainer.calls) == 3 and runner.reused == 2 and again == {t: results[t] for t in ids[1:]}
    journal.close()

    journal = RunJournal.open(tmp_path / "run")      # after a restart, too
    later = Runner(SPEC, journal=journal, poll_s=0.0)
    assert later.evaluate_specs(items, InProcessEvaluator(Trainer(die_at=1))) == results
    assert later.reused == 3 and later.evaluated == 0
    extra = (parse_genotype("1000|60|700,750"), SPEC)
    trainer = Trainer()
    assert len(later.evaluate_specs([*items, extra], InProcessEvaluator(trainer))) == 4
    assert trainer.calls == ["1000|60|700,750@2"]
    journal.close()


def test_evaluate_specs_uses_the_cache_and_fills_it(tmp_path):
    cache = ResultCache(tmp_path / "cache.sqlite")
    items = [(parse_genotype("850|20|1000"), SPEC)]
    Runner(SPEC, cache=cache, poll_s=0.0).evaluate_specs(items, InProcessEvaluator(Trainer()))
    runner = Runner(SPEC, cache=cache, poll_s=0.0)
    assert runner.evaluate_specs(items, InProcessEvaluator(Trainer(die_at=1)))[task_id(*items[0])].ok
    assert runner.cache_hits == 1
    cache.close()
