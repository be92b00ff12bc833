"""The run journal and the result cache (format 2): what they hold, what they refuse, and format-1 files
(written here with the old schema, by hand) migrated when opened and replayed as before."""
import json
import sqlite3

import pytest

from evo.evaluation import EvalState, Evaluation
from evo.genotype import parse_genotype
from evo.head.cache import ResultCache
from evo.head.evaluators import InProcessEvaluator
from evo.head.journal import JournalError, RunJournal
from evo.head.runner import Runner
from evo.measurement import Measurement
from evo.spec import TrainSpec, task_id
from evo_helpers import build, evaluate, told, train

SPEC = TrainSpec(dataset="synthetic", epochs=2)
G = parse_genotype("850|20|1000")


class Trainer:
    def __init__(self, die_at=None):
        self.calls, self.die_at = [], die_at

    def __call__(self, genotype, spec):
        if len(self.calls) + 1 == self.die_at:
            raise RuntimeError("the head died")
        self.calls.append(f"{genotype}@{spec.epochs}")
        return train(genotype, spec)


def _columns(con, table):
    return [row[1] for row in con.execute(f"PRAGMA table_info({table})")]


# -- format 2 ---------------------------------------------------------------------------------------------

def test_the_journal_holds_candidates_asked_with_their_count_results_and_tells_with_the_state(tmp_path):
    journal = RunJournal.create(tmp_path / "run", {"strategy": "evolution", "seed": 3})
    strategy = build("multifidelity", generations=1)
    Runner(SPEC, journal=journal, poll_s=0.0).run(strategy, InProcessEvaluator(Trainer()), capacity=lambda: 3)
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
        assert results[tid].measurement == e.measurement                 # the trainer's figures, as measured
    assert journal.counts() == {"asks": len(asks), "tells": len(tells), "results_worker": len(results)}
    journal.close()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["version"] == 2


def test_results_keep_their_state_and_worker_key(tmp_path):
    journal = RunJournal.create(tmp_path / "run", {})
    figures = Measurement(loss=95.5, kl=20.0, seconds=1.5, curve=(120.0, 95.5), epochs=5, test_loss=96.0)
    items = [("a", Evaluation.succeeded(G, 95.5, figures, epochs=5), "Z85KEY"),
             ("b", Evaluation.failed(G, "diverged", Measurement(seconds=0.5, epochs=1), epochs=5), None),
             ("c", Evaluation.lost(G, "gave up after 3 attempts", epochs=5, attempts=3), None)]
    journal.record_results(items, "worker")
    journal.record_results([("a", Evaluation.succeeded(G, 1.0, epochs=5), None)], "cache")   # the first is kept
    journal.close()
    journal = RunJournal.open(tmp_path / "run")
    a, b, c = (journal.result(t) for t in "abc")
    assert (a.state, a.loss, a.epochs, a.seconds, a.measurement) == (EvalState.OK, 95.5, 5, 1.5, figures)
    assert a.measurement.test == {"loss": 96.0} and a.measurement.curve == (120.0, 95.5)
    assert (b.state, b.error, b.seconds, b.epochs, b.epochs_trained) == (EvalState.FAILED, "diverged", 0.5, 5, 1)
    assert (c.state, c.attempts, c.measurement, c.epochs) == (EvalState.LOST, 3, Measurement(), 5)
    assert journal.worker_key("a") == "Z85KEY" and journal.worker_key("b") is None
    assert journal.counts()["results_worker"] == 3 and "results_cache" not in journal.counts()
    assert journal.result("nothing") is None
    journal.close()


def test_lookups_return_results_in_the_order_they_were_recorded(tmp_path):
    journal = RunJournal.create(tmp_path / "run", {})
    ids = ["f", "a", "e", "b", "d", "c"]
    for tid in ids:
        journal.record_results([(tid, Evaluation.succeeded(G, 100.0, epochs=2), None)], "worker")
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
    figures = Measurement(loss=95.5, curve=(101.0, 95.5), epochs=2, seconds=3.0, test_iw_loss=94.0, fake=True)
    cache.put([("a", Evaluation.succeeded(G, 95.5, figures, epochs=2)), ("b", Evaluation.failed(G, "nan", epochs=2)),
               ("c", Evaluation.lost(G, "gave up", epochs=2))])
    cache.close()
    cache = ResultCache(tmp_path / "cache.sqlite")
    a = cache.get("a")
    assert a.seconds == 3.0 and a.measurement == figures and a.epochs == 2
    assert cache.get("b").error == "nan" and cache.get("c") is None
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

    def __init__(self, run_dir, config, spec=SPEC):
        run_dir.mkdir()
        self.spec = spec
        self.con = sqlite3.connect(run_dir / "journal.sqlite", isolation_level=None)
        self.con.executescript(_V1_RUN)
        self.con.executemany("INSERT INTO meta VALUES (?, ?)", [("format", "evovae-run"), ("version", "1"),
                                                               ("config", json.dumps(config)),
                                                               ("created", "2026-01-01T00:00:00Z")])

    def ask(self, candidates, n=None):
        ids = [task_id(c.genotype, self.spec) for c in candidates]
        self.con.execute("INSERT INTO events (kind, at, task_ids, genotypes, state) VALUES ('ask', 0, ?, ?, ?)",
                         (json.dumps(ids), json.dumps([str(c.genotype) for c in candidates]),
                          None if n is None else json.dumps({"n": n})))

    def result(self, e):
        """``e`` as format 1 stored it: no epochs, no state; the trainer's figures as its metrics."""
        gave_up = e.state is EvalState.LOST
        self.con.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, 'worker', 0)",
                         (task_id(e.genotype, self.spec), str(e.genotype), e.loss, e.error,
                          json.dumps({"gave_up": True} if gave_up else e.measurement.to_dict())))

    def tell(self, evaluations, strategy):
        snapshot = {k: v for k, v in strategy.snapshot().items() if k != "asked_epochs"}   # format 1 had none
        self.con.execute("INSERT INTO events (kind, at, task_ids, genotypes, state) VALUES ('tell', 0, ?, '[]', ?)",
                         (json.dumps([task_id(e.genotype, self.spec) for e in evaluations]), json.dumps(snapshot)))

    def close(self):
        self.con.close()


def _straight(name, capacity=1, spec=SPEC, **changes):
    strategy = build(name, **changes)
    Runner(spec, poll_s=0.0).run(strategy, InProcessEvaluator(Trainer()), capacity=lambda: capacity)
    return strategy


def _resume(run_dir, name, capacity=1, spec=SPEC, **changes):
    journal = RunJournal.open(run_dir)
    trainer = Trainer()
    strategy = build(name, **changes)
    runner = Runner(spec, journal=journal, poll_s=0.0)
    runner.replay(strategy)
    runner.run(strategy, InProcessEvaluator(trainer), capacity=lambda: capacity)
    return journal, strategy, runner, trainer


def _write_format_1_generations(old, strategy):
    """The old loop: a whole generation per ask and per tell, twice; then generation 2 goes out and two of its
    results come back, with a transport give-up of G. Returns the evaluations told."""
    for _ in range(2):
        batch = strategy.ask()
        old.ask(batch)
        evaluations = [evaluate(c) for c in batch]
        for e in evaluations:
            old.result(e)
        strategy.tell(evaluations)
        old.tell(evaluations, strategy)
    open_ask = strategy.ask()
    old.ask(open_ask)
    for c in open_ask[:2]:
        old.result(evaluate(c))
    old.result(Evaluation.lost(G, "gave up after 3 attempts", epochs=strategy.final_epochs))
    old.close()


def test_a_format_1_generational_journal_is_migrated_and_replays(tmp_path):
    old = V1Journal(tmp_path / "run", {"strategy": "evolution"})
    strategy = build("evolution")
    _write_format_1_generations(old, strategy)

    journal, resumed, runner, trainer = _resume(tmp_path / "run", "evolution")
    con = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    assert dict(con.execute("SELECT key, value FROM meta"))["version"] == "2"
    assert {"state", "epochs", "seconds", "worker_key"} <= set(_columns(con, "results"))
    con.close()
    lost = journal.result(task_id(G, SPEC))
    assert lost.state is EvalState.LOST and lost.epochs == 2        # no epochs configured: the default of then, 2
    reference = _straight("evolution")
    assert told(resumed) == told(reference) and resumed.snapshot() == reference.snapshot()
    assert runner.replayed == strategy.evaluation_count     # the two told generations
    assert runner.reused == 2 and len(trainer.calls) == reference.evaluation_count - strategy.evaluation_count - 2
    asks = [texts for kind, _, texts, _ in journal.events() if kind == "ask"]
    assert all(text.endswith("@2") for texts in asks for text in texts)   # bare genotypes became candidates
    assert all(e.epochs == 2 for e in journal.results().values())
    journal.close()


@pytest.mark.parametrize("config", [{"strategy": "evolution", "epochs": 3},
                                    {"experiment": "fidelity", "options": {"epochs": 3}},
                                    {"spec": {"dataset": "synthetic", "epochs": 3}}])
def test_a_format_1_journal_takes_its_epochs_from_its_configuration(tmp_path, config):
    spec = SPEC.replace(epochs=3)
    old = V1Journal(tmp_path / "run", config, spec)
    strategy = build("evolution", epochs=3)
    _write_format_1_generations(old, strategy)
    journal, resumed, runner, _ = _resume(tmp_path / "run", "evolution", spec=spec, epochs=3)
    asks = [texts for kind, _, texts, _ in journal.events() if kind == "ask"]
    assert all(text.endswith("@3") for texts in asks for text in texts)
    results = journal.results()
    assert all(e.epochs == 3 for e in results.values()) and results[task_id(G, spec)].state is EvalState.LOST
    ok = [e for e in results.values() if e.ok]
    assert ok and all(e.seconds == e.measurement.seconds > 0 for e in ok)   # the training time of then, kept
    reference = _straight("evolution", spec=spec, epochs=3)
    assert told(resumed) == told(reference) and resumed.snapshot() == reference.snapshot()
    assert runner.replayed == strategy.evaluation_count and runner.reused == 2
    journal.close()


def test_a_format_1_journal_is_migrated_once(tmp_path):
    old = V1Journal(tmp_path / "run", {"strategy": "evolution"})
    _write_format_1_generations(old, build("evolution"))
    RunJournal.open(tmp_path / "run").close()
    con = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    before = (list(con.execute("SELECT * FROM events ORDER BY seq")), list(con.execute("SELECT * FROM results")))
    con.close()
    RunJournal.open(tmp_path / "run").close()                       # a second open changes nothing
    con = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    after = (list(con.execute("SELECT * FROM events ORDER BY seq")), list(con.execute("SELECT * FROM results")))
    con.close()
    assert after == before and all("@2@" not in text for row in before[0] for text in [row[4]])


def test_a_format_1_steady_state_journal_replays_its_asks_with_their_count(tmp_path):
    old = V1Journal(tmp_path / "run", {"strategy": "evolution", "mode": "steady-state"})
    strategy = build("steady-state")
    out = []
    while strategy.evaluation_count < 9:                # the old loop: ask the free room, tell each result
        batch = strategy.ask(3 - len(out))
        if batch:
            old.ask(batch, n=3 - len(out))
        out += batch
        e = evaluate(out.pop(0))
        old.result(e)
        strategy.tell([e])
        old.tell([e], strategy)
    old.close()
    journal, resumed, runner, trainer = _resume(tmp_path / "run", "steady-state", capacity=3)
    reference = _straight("steady-state", capacity=3)
    assert told(resumed) == told(reference) and resumed.snapshot() == reference.snapshot()
    assert runner.replayed == 9 and len(trainer.calls) == reference.evaluation_count - 9
    journal.close()


def test_a_format_1_cache_is_migrated_and_its_results_reused_where_their_epochs_are_known(tmp_path):
    path = tmp_path / "cache.sqlite"
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(_V1_CACHE)
    con.executemany("INSERT INTO meta VALUES (?, ?)", [("format", "evovae-cache"), ("version", "1")])
    strategy = _straight("evolution")
    ok = [e for e in strategy.evaluations if e.ok]
    unsaid = ok[3]                                      # a success whose metrics do not say its epochs
    for e in strategy.evaluations:
        metrics = e.measurement.to_dict()
        if e is unsaid:
            del metrics["epochs"]
        con.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, 0)", (task_id(e.genotype, SPEC), str(e.genotype),
                                                                      e.loss, e.error, json.dumps(metrics)))
    con.close()
    cache = ResultCache(path)
    again = build("evolution")
    trainer = Trainer()
    runner = Runner(SPEC, cache=cache, poll_s=0.0)
    runner.run(again, InProcessEvaluator(trainer))
    assert told(again) == told(strategy)
    # the failed rows (no trainer's count of a success) and the unsaid one are measured again, not guessed
    again_measured = [str(e.candidate) for e in strategy.evaluations if not e.ok or e is unsaid]
    assert strategy.evaluation_count > len(again_measured) >= 2
    assert trainer.calls == again_measured and runner.cache_hits == len(ok) - 1
    cache.close()
    con = sqlite3.connect(path)
    assert dict(con.execute("SELECT key, value FROM meta"))["version"] == "2"
    rows = con.execute("SELECT state, epochs FROM results").fetchall()
    assert len(rows) == strategy.evaluation_count                   # the measured-again ones were put back
    assert all(epochs == 2 for _, epochs in rows) and {state for state, _ in rows} == {"ok", "failed"}
    con.close()
