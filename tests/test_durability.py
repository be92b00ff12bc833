"""Durable searches: the journal, resume after kill -9 of the head, the result cache, steady-state mode."""
import json
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from distributed_helpers import Process, free_port_pair, wait_until
from evo.engine import EvolutionEngine
from evo.evaluation import Candidate, Evaluation
from evo.head.cache import ResultCache
from evo.head.evaluators import InProcessEvaluator
from evo.head.journal import JournalError, RunJournal
from evo.head.runner import Runner
from evo.spec import TrainSpec, task_id
from evo.steady_state import SteadyStateEngine
from evo.strategy import StopReason
from gpuworker.evaluators import fake_evaluator, fake_loss

SPEC = TrainSpec(dataset="synthetic", epochs=1)
# the generational schedule (the same decisions whatever order results arrive in: a resume must match a straight
# run bit for bit), not evovae search's default (asynchronous: tests/test_durability.py's ASHA test covers it)
SEARCH = ["--mode", "generational", "--population", "5", "--offspring", "5", "--generations", "6", "--seed", "3",
          "--dataset", "synthetic",
          "--heartbeat", "0.2", "--log-format", "json", "--log-level", "info"]


def _search(*args, timeout=120, **kw):
    port = free_port_pair()
    return subprocess.run([sys.executable, "-m", "evo.cli", "search", "--bind", f"tcp://127.0.0.1:{port}", *args],
                          capture_output=True, text=True, timeout=timeout, **kw)


def _fake(sleep="0.05"):
    return ["--local-workers", "2", "--worker-arg=--fake", f"--worker-arg=--fake-sleep={sleep}"]


_FAKE = fake_evaluator()


def _fake_train(genotype, spec=SPEC):
    """What the fake worker reports (a TrainResult), for the InProcessEvaluator."""
    return _FAKE(genotype, spec, lambda fraction: None)


def _fake_evaluation(genotype, spec=SPEC):
    """The evaluation an evaluator makes of the fake worker's report."""
    result = _fake_train(genotype, spec)
    return Evaluation.of(Candidate(genotype, spec.epochs), result.ok, result.measurement, result.error)


# -- the journal in-process ---------------------------------------------------------------


def test_replay_restores_the_engine_exactly(tmp_path):
    config = {"seed": 5}
    journal = RunJournal.create(tmp_path / "run", config)
    engine = EvolutionEngine(mu=4, lam=4, seed=5, epochs=1, generations=3)
    Runner(SPEC, journal=journal).run(engine, InProcessEvaluator(_fake_train))
    journal.close()

    reopened = RunJournal.open(tmp_path / "run")
    assert reopened.config == config
    fresh = EvolutionEngine(mu=4, lam=4, seed=5, epochs=1, generations=5)
    runner = Runner(SPEC, journal=reopened)
    assert runner.replay(fresh) == 12  # one tell per result
    assert fresh.snapshot() == engine.snapshot()
    assert runner.run(fresh, InProcessEvaluator(_fake_train)) is StopReason.GENERATIONS
    assert runner.evaluated == 8 and runner.reused == 0  # only the two new generations were paid for

    straight = EvolutionEngine(mu=4, lam=4, seed=5, epochs=1, generations=5)
    Runner(SPEC).run(straight, InProcessEvaluator(_fake_train))
    assert fresh.snapshot() == straight.snapshot()
    curves = {len(e.measurement.curve) for e in fresh.evaluations}
    assert curves == {SPEC.epochs} and all(e.measurement.fake for e in fresh.evaluations)   # one point per epoch


def test_observers_see_every_tell_once_live_then_replayed_on_resume(tmp_path):
    journal = RunJournal.create(tmp_path / "run", {"seed": 5})
    engine = EvolutionEngine(mu=4, lam=4, seed=5, epochs=1, generations=3)
    runner = Runner(SPEC, journal=journal)
    live = []
    runner.observers.append(lambda c, e, key, replayed: live.append((str(c.genotype), e.loss, key, replayed)))
    runner.run(engine, InProcessEvaluator(_fake_train))
    journal.close()
    assert [(str(e.genotype), e.loss) for e in engine.evaluations] == [(g, loss) for g, loss, _, _ in live]
    assert not any(replayed for *_, replayed in live)

    runner = Runner(SPEC, journal=RunJournal.open(tmp_path / "run"))
    seen = []
    runner.observers.append(lambda c, e, key, replayed: seen.append((str(c.genotype), e.loss, replayed)))
    fresh = EvolutionEngine(mu=4, lam=4, seed=5, epochs=1, generations=4)
    runner.replay(fresh)
    assert seen == [(g, loss, True) for g, loss, _, _ in live]
    runner.run(fresh, InProcessEvaluator(_fake_train))
    assert [(str(e.genotype), e.loss) for e in fresh.evaluations] == [(g, loss) for g, loss, _ in seen]
    assert [replayed for *_, replayed in seen].count(False) == 4  # the one new generation, once each


def test_the_fake_worker_reports_a_measurement_with_one_curve_point_per_epoch():
    from evo.genotype import parse_genotype
    from gpuworker.result import TrainResult

    g = parse_genotype("200,100|10|100,200")
    result = _fake_train(g, SPEC.replace(epochs=4))
    assert isinstance(result, TrainResult) and result.ok and result.error == "" and result.genotype == str(g)
    m = result.measurement
    assert m.curve == tuple(fake_loss(g, e) for e in range(1, 5)) and list(m.curve) == sorted(m.curve, reverse=True)
    assert (m.loss, m.epochs, m.fake) == (m.curve[-1], 4, True) and m.recon + m.kl == pytest.approx(m.loss)
    e = _fake_evaluation(g, SPEC.replace(epochs=4))
    assert (e.ok, e.epochs, e.epochs_trained, e.loss) == (True, 4, 4, m.loss)


def test_an_open_ask_is_completed_from_journaled_results(tmp_path):
    journal = RunJournal.create(tmp_path / "run", {})
    engine = EvolutionEngine(mu=4, lam=4, seed=1, epochs=1, generations=2)
    Runner(SPEC, journal=journal).run(engine, InProcessEvaluator(_fake_train))
    engine.generations = 3
    batch = engine.ask()  # generation 2 goes out; two results come back; then the head dies
    ids = [task_id(c.genotype, SPEC) for c in batch]
    journal.record_ask(batch, ids)
    journal.record_results([(t, _fake_evaluation(c.genotype), None) for t, c in list(zip(ids, batch, strict=True))[:2]],
                           "worker")
    journal.close()

    fresh = EvolutionEngine(mu=4, lam=4, seed=1, epochs=1, generations=3)
    runner = Runner(SPEC, journal=RunJournal.open(tmp_path / "run"))
    runner.replay(fresh)
    runner.run(fresh, InProcessEvaluator(_fake_train))
    assert runner.reused == 2 and runner.evaluated == len(batch) - 2
    straight = EvolutionEngine(mu=4, lam=4, seed=1, epochs=1, generations=3)
    Runner(SPEC).run(straight, InProcessEvaluator(_fake_train))
    assert fresh.snapshot() == straight.snapshot()


def test_a_changed_configuration_is_refused_on_replay(tmp_path):
    journal = RunJournal.create(tmp_path / "run", {})
    Runner(SPEC, journal=journal).run(EvolutionEngine(mu=4, lam=4, seed=1, epochs=1, generations=2),
                                      InProcessEvaluator(_fake_train))
    with pytest.raises(JournalError, match="configuration or the code changed"):
        Runner(SPEC, journal=journal).replay(
            EvolutionEngine(mu=4, lam=4, seed=2, epochs=1, generations=2))


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b""])
def test_a_corrupt_run_directory_is_refused_and_left_unchanged(tmp_path, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "journal.sqlite").write_bytes(content)
    before = (run / "journal.sqlite").read_bytes()
    with pytest.raises(JournalError, match=r"not an evovae|format"):
        RunJournal.open(run)
    assert (run / "journal.sqlite").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["journal.sqlite"]


def test_a_foreign_database_is_refused_and_left_unchanged(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    con = sqlite3.connect(run / "journal.sqlite")
    con.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('format', 'something-else')")
    con.commit()
    con.close()
    before = (run / "journal.sqlite").read_bytes()
    with pytest.raises(JournalError, match="not 'evovae-run'"):
        RunJournal.open(run)
    assert (run / "journal.sqlite").read_bytes() == before
    with pytest.raises(JournalError, match="not an evovae run directory"):
        RunJournal.open(tmp_path / "elsewhere")
    with pytest.raises(JournalError, match="already exists and is not empty"):
        RunJournal.create(run, {})


def test_the_cache_keeps_measurements_but_not_transport_give_ups(tmp_path):
    from evo.genotype import parse_genotype

    cache = ResultCache(tmp_path / "cache.sqlite")
    good, bad, lost = (parse_genotype(t) for t in ("100|10|100", "200|10|200", "300|10|300"))
    cache.put([("a", _fake_evaluation(good)), ("b", Evaluation.failed(bad, "diverged", epochs=SPEC.epochs)),
               ("c", Evaluation.lost(lost, "gave up after 3 attempts", epochs=SPEC.epochs))])
    cache.close()
    again = ResultCache(tmp_path / "cache.sqlite")
    a = again.get("a")
    assert a.loss == fake_loss(good, SPEC.epochs) and a.epochs == SPEC.epochs
    assert a.measurement.curve == tuple(fake_loss(good, e) for e in range(1, SPEC.epochs + 1))
    assert a.measurement.fake and a.measurement.epochs == SPEC.epochs and a.measurement.recon == a.loss - 10.0
    assert again.get("b").error == "diverged"
    assert again.get("c") is None
    assert again.hits == 2
    (tmp_path / "junk").write_text("junk" * 1000)
    with pytest.raises(JournalError):
        ResultCache(tmp_path / "junk")


def test_steady_state_completes_its_budget_without_duplicates():
    engine = SteadyStateEngine(mu=4, seed=2, epochs=1, max_evaluations=30, report_every=4)
    runner = Runner(SPEC)
    assert runner.run(engine, InProcessEvaluator(_fake_train), capacity=lambda: 3) is StopReason.EVALUATIONS
    assert engine.evaluation_count == 30 == runner.evaluated
    genotypes = [e.genotype for e in engine.evaluations]
    assert len(set(genotypes)) == 30
    assert len(engine.history) == -(-30 // 4)  # a report every 4, and one for the last 2
    best = [r.best.loss for r in engine.history]
    assert best == sorted(best, reverse=True)


# -- real processes ------------------------------------------------------------------------


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def _untimed(evaluations: list[dict]) -> list[dict]:
    """Evaluations without their wall-clock seconds: a resumed search is the same search, not the same timing."""
    return [{k: v for k, v in e.items() if k != "seconds"} for e in evaluations]


def _total_after(head: Process, generation: int) -> int | None:
    """The "total N" evaluations on the head's progress line for ``generation``, once printed."""
    for line in head.stdout().splitlines():
        found = re.match(rf"gen +{generation} .* total (\d+)", line)
        if found:
            return int(found.group(1))
    return None


@pytest.mark.slow
def test_kill_9_of_the_head_then_resume_matches_an_uninterrupted_run(tmp_path):
    straight = _search(*SEARCH, *_fake(), "--run-dir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]

    run = tmp_path / "killed"
    head = Process("killed", [sys.executable, "-m", "evo.cli", "search", "--bind",
                              f"tcp://127.0.0.1:{free_port_pair()}", *SEARCH, *_fake("0.1"), "--run-dir", str(run)],
                   tmp_path)
    try:
        def mid_generation_3() -> bool:  # generation 2 reported, and results of generation 3 came in since
            total = _total_after(head, 2)
            return total is not None and len(head.log.events("task.completed", role="search")) > total

        wait_until(mid_generation_3, 60, "a result of generation 3 in the head's log", fail=head.describe)
        head.signal(signal.SIGKILL)
        assert head.wait(10) == -signal.SIGKILL
    finally:
        head.kill_group()  # and its local workers
    con = sqlite3.connect(run / "journal.sqlite")
    finished_before = {row[0] for row in con.execute("SELECT task_id FROM results")}
    con.close()
    assert finished_before and not (run / "result.json").exists()

    resumed = _search("--resume", str(run), *_fake(), "--heartbeat", "0.2", "--log-format", "json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _result(tmp_path / "straight"), _result(run)
    assert _untimed(b["population"]) == _untimed(a["population"])
    assert sorted(e["genotype"] for e in b["evaluations"]) == sorted(e["genotype"] for e in a["evaluations"])
    # nothing finished before the kill was evaluated again
    assert b["evaluated_now"] == len(a["evaluations"]) - len(finished_before)
    completed = [json.loads(line) for line in resumed.stderr.splitlines()
                 if line.startswith("{") and '"task.completed"' in line]
    assert not {e["task_id"] for e in completed} & finished_before


@pytest.mark.slow
def test_a_second_search_with_the_same_cache_runs_nothing_twice(tmp_path):
    cache = str(tmp_path / "cache.sqlite")
    first = _search(*SEARCH, *_fake("0"), "--run-dir", str(tmp_path / "one"), "--cache", cache)
    assert first.returncode == 0, first.stderr[-2000:]
    second = _search(*SEARCH, *_fake("0"), "--run-dir", str(tmp_path / "two"), "--cache", cache)
    assert second.returncode == 0, second.stderr[-2000:]
    one, two = _result(tmp_path / "one"), _result(tmp_path / "two")
    assert two["cache_hits"] == len(one["evaluations"]) and two["evaluated_now"] == 0
    assert _untimed(two["population"]) == _untimed(one["population"])
    assert "cache-hits" in second.stdout


@pytest.mark.slow
def test_steady_state_mode_over_zeromq(tmp_path):
    out = _search(*SEARCH, *_fake("0.02"), "--mode", "steady-state", "--run-dir", str(tmp_path / "ss"))
    assert out.returncode == 0, out.stderr[-2000:]
    result = _result(tmp_path / "ss")
    genotypes = [e["genotype"] for e in result["evaluations"]]
    assert len(genotypes) == 5 + 5 * 5 == len(set(genotypes))
    assert all(e["error"] == "" for e in result["evaluations"])


def test_resume_of_a_foreign_directory_is_a_clear_error(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "journal.sqlite").write_text("hello")
    out = _search("--resume", str(tmp_path / "x"))
    assert out.returncode == 2 and "is not an evovae run journal (file is not a database)" in out.stderr
    assert (tmp_path / "x" / "journal.sqlite").read_text() == "hello"


@pytest.mark.slow
def test_kill_9_of_an_asha_head_then_resume_replays_its_decisions_and_continues_its_promotions(tmp_path):
    """An asynchronous multi-fidelity search killed mid-way: the resume replays every journaled decision (a
    replay that asked for anything else would be refused), reuses every result, and finishes its budget."""
    run = tmp_path / "asha"
    asha = ["--mode", "asha", "--strategy", "evolution", "--operators", "local", "--fidelities", "1,3,9",
            "--budget-epochs", "150", "--population", "4", "--offspring", "4", "--seed", "7", "--dataset",
            "synthetic", "--heartbeat", "0.2", "--log-format", "json", "--log-level", "info"]
    workers = [*_fake("0.05"), "--worker-arg=--fake-per-epoch"]
    head = Process("asha", [sys.executable, "-m", "evo.cli", "search", "--bind",
                            f"tcp://127.0.0.1:{free_port_pair()}", *asha, *workers, "--run-dir", str(run)], tmp_path)
    try:
        def promoted_once() -> bool:  # a 3-epoch result is in: the schedule has promoted, and more is out
            return any(e.get("epochs") == 3 for e in head.log.events("task.completed", role="search"))

        wait_until(promoted_once, 60, "a promotion's result in the head's log", fail=head.describe)
        head.signal(signal.SIGKILL)
        assert head.wait(10) == -signal.SIGKILL
    finally:
        head.kill_group()
    con = sqlite3.connect(run / "journal.sqlite")
    finished_before = {row[0] for row in con.execute("SELECT task_id FROM results")}
    con.close()
    assert (run / "checkpoints").is_dir() and not (run / "result.json").exists()

    resumed = _search("--resume", str(run), *workers, "--heartbeat", "0.2", "--log-format", "json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    done = _result(run)
    assert done["stop_reason"] == "budget" and done["epochs_total"] <= 150 and done["strategy"] == "HalvingEvolution"
    assert done["replayed_from_journal"] + done["reused_from_journal"] == len(finished_before)
    assert done["evaluated_now"] == len(done["evaluations"]) - len(finished_before)
    completed = [json.loads(line) for line in resumed.stderr.splitlines()
                 if line.startswith("{") and '"task.completed"' in line]
    assert not {e["task_id"] for e in completed} & finished_before
    assert {e["epochs"] for e in done["evaluations"]} == {1, 3, 9} and not (run / "checkpoints").exists()
