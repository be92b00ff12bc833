"""The run journal and the result cache (format 2): what they hold, what they refuse, and format-1 files
(written here with the old schema, by hand) migrated when opened and replayed as before."""
import json
import sqlite3

import pytest
from evo_helpers import build, evaluate, told

from evo.evaluation import Candidate, EvalState, Evaluation
from evo.genotype import parse_genotype
from evo.head.evaluators import InProcessEvaluator
from evo.head.journal import JournalError, ResultCache, RunJournal
from evo.head.runner import Runner
from evo.spec import TrainSpec, task_id

SPEC = TrainSpec(dataset="synthetic", epochs=2)
G = parse_genotype("850|20|1000")


class Trainer:
    def __init__(self, die_at=None):
        self.calls, self.die_at = [], die_at

    def __call__(self, genotype, spec):
        if len(self.calls) + 1 == self.die_at:
            raise RuntimeError("the head died")
        self.calls.append(f"{genotype}@{spec.epochs}")
        return evaluate(Candidate(genotype, spec.epochs))


def _columns(con, table):
    return [row[1] for row in con.execute(f"PRAGMA table_info({table})")]


# -- format 2 ---------------------------------------------------------------------------------------------

def test_the_journal_holds_candidates_asked_with_their_count_results_and_tells_with_the_state(tmp_path):
    journal = RunJournal.create(tmp_path / "run", {"strategy": "evolution", "seed": 3})
    strategy = build("multifidelity", generations=1)
    Runner(InProcessEvaluator(Trainer()), SPEC, journal=journal, capacity=lambda: 3, poll_s=0.0).run(strategy)
    events = list(journal.events())
    asks = [e for e in events if e[0] == "ask"]
    tells = [e for e in events if e[0] == "tell"]
    assert [text for e in asks for text in e[2]] == [str(e.candidate) for e in strategy.evaluations]
    assert all("@" in text for e in asks for text in e[2])
    assert [e[3] for e in asks][:2] == [{"n": 3}, {"n": 1}]      # the free room, as the loop saw it
    assert len(tells) == strategy.evaluation_count and tells[-1][3] == json.loads(json.dumps(strategy.snapshot()))
    results = journal.results()
    for e in strategy.evaluations:
        tid = task_id(e.genotype, SPEC.replace(epochs=e.epochs))
        assert results[tid] == e and results[tid].seconds == e.seconds and results[tid].epochs == e.epochs
    assert journal.counts() == {"asks": len(asks), "tells": len(tells), "results_worker": len(results)}
    journal.close()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["version"] == 2


def test_results_keep_their_state_and_worker_key(tmp_path):
    journal = RunJournal.create(tmp_path / "run", {})
    items = [("a", Evaluation.succeeded(G, 95.5, {"kl": 20.0}, epochs=5, seconds=1.5), "worker"),
             ("b", Evaluation.failed(G, "diverged", epochs=5, seconds=0.5), "worker"),
             ("c", Evaluation.lost(G, "gave up after 3 attempts", epochs=5, attempts=3), "worker")]
    journal.record_results(items, worker_keys={"a": "Z85KEY"})
    journal.record_results([("a", Evaluation.succeeded(G, 1.0, epochs=5), "cache")])   # the first one is kept
    journal.close()
    journal = RunJournal.open(tmp_path / "run")
    a, b, c = (journal.result(t) for t in "abc")
    assert (a.state, a.loss, a.epochs, a.seconds, a.metrics) == (EvalState.OK, 95.5, 5, 1.5, {"kl": 20.0})
    assert (b.state, b.error) == (EvalState.FAILED, "diverged") and c.state is EvalState.LOST
    assert c.metrics == {"attempts": 3}
    assert journal.worker_key("a") == "Z85KEY" and journal.worker_key("b") is None
    assert journal.result("nothing") is None
    journal.close()


def test_lookups_return_results_in_the_order_they_were_recorded(tmp_path):
    journal = RunJournal.create(tmp_path / "run", {})
    ids = ["f", "a", "e", "b", "d", "c"]
    for tid in ids:
        journal.record_results([(tid, Evaluation.succeeded(G, 100.0), "worker")])
    assert list(journal.results_for(sorted(ids))) == ids
    journal.close()


def test_a_configuration_that_is_not_json_is_refused_before_anything_is_created(tmp_path):
    with pytest.raises(ValueError):
        RunJournal.create(tmp_path / "run", {"rate": float("nan")})
    assert not (tmp_path / "run").exists()


def test_a_newer_format_is_refused_and_left_unchanged(tmp_path):
    RunJournal.create(tmp_path / "run", {}).close()
    con = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    with con:
        con.execute("UPDATE meta SET value = '3' WHERE key = 'version'")
    con.close()
    before = (tmp_path / "run" / "journal.sqlite").read_bytes()
    with pytest.raises(JournalError, match="format version 3, this evovae reads 1 and 2"):
        RunJournal.open(tmp_path / "run")
    assert (tmp_path / "run" / "journal.sqlite").read_bytes() == before


def test_the_cache_keeps_measurements_not_transport_give_ups(tmp_path):
    cache = ResultCache(tmp_path / "cache.sqlite")
    cache.put([("a", Evaluation.succeeded(G, 95.5, epochs=2, seconds=3.0)), ("b", Evaluation.failed(G, "nan")),
               ("c", Evaluation.lost(G, "gave up", epochs=2))])
    cache.close()
    cache = ResultCache(tmp_path / "cache.sqlite")
    assert cache.get("a").seconds == 3.0 and cache.get("b").error == "nan" and cache.get("c") is None
    assert cache.hits == 2
    cache.close()


# -- format 1 ----------------------------------------------------------------------------------------------

_V1_RUN = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL CHECK (kind IN ('ask', 'tell')),
    at REAL NOT NULL, task_ids TEXT NOT NULL, genotypes TEXT NOT NULL, state TEXT);
CREATE TABLE results (task_id TEXT PRIMARY KEY, genotype TEXT NOT NULL, loss REAL, error TEXT NOT NULL,
    metrics TEXT NOT NULL, source TEXT NOT NULL, at REAL NOT NULL);
"""
_V1_CACHE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE results (task_id TEXT PRIMARY KEY, genotype TEXT NOT NULL, loss REAL, error TEXT NOT NULL,
    metrics TEXT NOT NULL, at REAL NOT NULL);
"""


class V1Journal:
    """A run journal of format 1, written with its schema: asks of bare genotypes, results without state,
    epochs, seconds or worker key (a transport give-up marked by ``metrics['gave_up']``)."""

    def __init__(self, run_dir, config):
        run_dir.mkdir()
        self.con = sqlite3.connect(run_dir / "journal.sqlite", isolation_level=None)
        self.con.executescript(_V1_RUN)
        self.con.executemany("INSERT INTO meta VALUES (?, ?)", [("format", "evovae-run"), ("version", "1"),
                                                               ("config", json.dumps(config)),
                                                               ("created", "2026-01-01T00:00:00Z")])

    def ask(self, candidates, n=None):
        ids = [task_id(c.genotype, SPEC) for c in candidates]
        self.con.execute("INSERT INTO events (kind, at, task_ids, genotypes, state) VALUES ('ask', 0, ?, ?, ?)",
                         (json.dumps(ids), json.dumps([str(c.genotype) for c in candidates]),
                          None if n is None else json.dumps({"n": n})))

    def result(self, e):
        gave_up = e.state is EvalState.LOST
        self.con.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, 'worker', 0)",
                         (task_id(e.genotype, SPEC), str(e.genotype), e.loss, e.error,
                          json.dumps({"gave_up": True} if gave_up else dict(e.metrics))))

    def tell(self, evaluations, strategy):
        snapshot = {k: v for k, v in strategy.snapshot().items() if k != "asked_epochs"}   # format 1 had none
        self.con.execute("INSERT INTO events (kind, at, task_ids, genotypes, state) VALUES ('tell', 0, ?, '[]', ?)",
                         (json.dumps([task_id(e.genotype, SPEC) for e in evaluations]), json.dumps(snapshot)))

    def close(self):
        self.con.close()


def _bare(e):
    """An evaluation as format 1 stored it: no epochs."""
    return Evaluation(e.genotype, e.loss, e.error, e.metrics, e.state)


def _straight(name, capacity=1):
    strategy = build(name)
    Runner(InProcessEvaluator(Trainer()), SPEC, capacity=lambda: capacity, poll_s=0.0).run(strategy)
    return strategy


def _resume(run_dir, name, capacity=1):
    journal = RunJournal.open(run_dir)
    trainer = Trainer()
    strategy = build(name)
    runner = Runner(InProcessEvaluator(trainer), SPEC, journal=journal, capacity=lambda: capacity, poll_s=0.0)
    runner.replay(strategy)
    runner.run(strategy)
    return journal, strategy, runner, trainer


def test_a_format_1_generational_journal_is_migrated_and_replays(tmp_path):
    old = V1Journal(tmp_path / "run", {"strategy": "evolution"})
    strategy = build("evolution")
    for _ in range(2):                                  # the old loop: a whole generation per ask and per tell
        batch = strategy.ask()
        old.ask(batch)
        evaluations = [_bare(evaluate(c)) for c in batch]
        for e in evaluations:
            old.result(e)
        strategy.tell(evaluations)
        old.tell(evaluations, strategy)
    open_ask = strategy.ask()                           # generation 2 went out; two results came back
    old.ask(open_ask)
    for c in open_ask[:2]:
        old.result(_bare(evaluate(c)))
    old.result(Evaluation.lost(G, "gave up after 3 attempts"))   # a transport give-up of format 1
    old.close()

    journal, resumed, runner, trainer = _resume(tmp_path / "run", "evolution")
    con = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    assert dict(con.execute("SELECT key, value FROM meta"))["version"] == "2"
    assert {"state", "epochs", "seconds", "worker_key"} <= set(_columns(con, "results"))
    con.close()
    assert journal.result(task_id(G, SPEC)).state is EvalState.LOST
    reference = _straight("evolution")
    assert told(resumed) == told(reference) and resumed.snapshot() == reference.snapshot()
    assert runner.replayed == strategy.evaluation_count     # the two told generations
    assert runner.reused == 2 and len(trainer.calls) == reference.evaluation_count - strategy.evaluation_count - 2
    journal.close()


def test_a_format_1_steady_state_journal_replays_its_asks_with_their_count(tmp_path):
    old = V1Journal(tmp_path / "run", {"strategy": "evolution", "mode": "steady-state"})
    strategy = build("steady-state")
    out = []
    while strategy.evaluation_count < 9:                # the old loop: ask the free room, tell each result
        batch = strategy.ask(3 - len(out))
        if batch:
            old.ask(batch, n=3 - len(out))
        out += batch
        e = _bare(evaluate(out.pop(0)))
        old.result(e)
        strategy.tell([e])
        old.tell([e], strategy)
    old.close()
    journal, resumed, runner, trainer = _resume(tmp_path / "run", "steady-state", capacity=3)
    reference = _straight("steady-state", capacity=3)
    assert told(resumed) == told(reference) and resumed.snapshot() == reference.snapshot()
    assert runner.replayed == 9 and len(trainer.calls) == reference.evaluation_count - 9
    journal.close()


def test_a_format_1_cache_is_migrated_and_its_results_reused(tmp_path):
    path = tmp_path / "cache.sqlite"
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(_V1_CACHE)
    con.executemany("INSERT INTO meta VALUES (?, ?)", [("format", "evovae-cache"), ("version", "1")])
    strategy = _straight("evolution")
    for e in strategy.evaluations:
        con.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, 0)", (task_id(e.genotype, SPEC), str(e.genotype),
                                                                      e.loss, e.error, json.dumps(dict(e.metrics))))
    con.close()
    cache = ResultCache(path)
    again = build("evolution")
    runner = Runner(InProcessEvaluator(Trainer(die_at=1)), SPEC, cache=cache, poll_s=0.0)
    runner.run(again)
    assert runner.cache_hits == strategy.evaluation_count and told(again) == told(strategy)
    cache.close()
    con = sqlite3.connect(path)
    assert dict(con.execute("SELECT key, value FROM meta"))["version"] == "2"
    con.close()
