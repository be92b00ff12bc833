"""The one ask/evaluate/tell loop (evo.head.runner.Runner, in-process, no journal) and the progress line."""
import json

import pytest

from evo.engine import EvolutionEngine
from evo.evaluation import Candidate, EvalState, Evaluation
from evo.head.evaluators import InProcessEvaluator
from evo.head.progress import format_report, search_summary
from evo.head.runner import Runner
from evo.head.tasks import Finished, Task
from evo.measurement import Measurement
from evo.random_search import RandomSearch
from evo.spec import TrainSpec
from evo.strategy import Report, StopReason
from evo_helpers import ALL, GENERATIONAL, OPTIONS, SMALL, TINY, build, run_batches, run_workers, told, train
from gpuworker.result import TrainResult

SPEC = TrainSpec(dataset="synthetic", epochs=2)


class Trainer:
    """train for the InProcessEvaluator: the helpers' outcome at the spec's epochs, counting calls and the most
    tasks that were ever pending at once."""

    def __init__(self):
        self.calls: list[str] = []
        self.most_pending = 0
        self.evaluator = InProcessEvaluator(self)

    def __call__(self, genotype, spec):
        self.calls.append(f"{genotype}@{spec.epochs}")
        self.most_pending = max(self.most_pending, self.evaluator.pending + 1)   # this one was just taken out
        return train(genotype, spec)


def _run(strategy, capacity=1, **kw):
    trainer = Trainer()
    runner = Runner(SPEC, poll_s=0.0, **kw)
    runner.stopped = runner.run(strategy, trainer.evaluator, capacity=lambda: capacity)
    return runner, trainer


@pytest.mark.parametrize("generations", [1, 2, 6])
def test_the_runner_runs_exactly_the_generations_asked_for(generations):
    engine = EvolutionEngine(SMALL, mu=5, lam=5, seed=0, generations=generations)
    seen_reports = []
    runner, trainer = _run(engine, on_report=seen_reports.append)
    assert engine.done and engine.generation == generations
    assert [r.generation for r in seen_reports] == list(range(generations))
    assert all(a is b for a, b in zip(seen_reports, engine.history, strict=True)) and len(seen_reports) == generations
    assert all(isinstance(r, Report) for r in seen_reports)
    assert runner.evaluated == len(trainer.calls) == engine.evaluation_count == seen_reports[-1].total_evaluations


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("capacity", [1, 3])
def test_the_runner_is_the_hand_driven_loop(name, capacity):
    auto = build(name)
    _runner, trainer = _run(auto, capacity)
    manual = build(name)
    run_workers(manual, capacity)                    # ask for the free room, tell the oldest result
    assert told(auto) == told(manual) and auto.snapshot() == manual.snapshot()
    assert trainer.calls == [str(e.candidate) for e in auto.evaluations]
    assert trainer.most_pending <= capacity
    if name in GENERATIONAL:                         # and, generational, the batch-at-a-time loop
        batches = build(name)
        run_batches(batches)
        assert auto.snapshot() == batches.snapshot()


@pytest.mark.parametrize("name", ALL)
def test_the_runner_accounts_for_the_compute_it_paid(name):
    strategy = build(name)
    runner, trainer = _run(strategy, 2)
    assert strategy.asked_epochs == sum(int(c.rsplit("@")[1]) for c in trainer.calls)
    # what was paid: a run that failed without the trainer's epoch count is not known to have trained
    assert runner.epochs_trained == sum(e.epochs for e in strategy.evaluations if e.ok)
    assert runner.train_seconds == pytest.approx(sum(e.seconds for e in strategy.evaluations))
    assert runner.reused == runner.cache_hits == runner.replayed == 0
    assert trainer.most_pending == 2


def test_a_multi_fidelity_task_is_trained_at_its_rung():
    strategy = build("multifidelity")
    _, trainer = _run(strategy)
    assert {c.rsplit("@")[1] for c in trainer.calls} == {"1", "3", "9"}
    assert all(e.epochs == 9 for e in strategy.population)


def test_a_space_that_runs_dry_ends_the_run():
    search = RandomSearch(TINY, mu=2, batch=2, seed=0, generations=4)
    runner, trainer = _run(search)
    assert sorted(trainer.calls) == ["50|10|50@2", "50|20|50@2"] and search.done
    assert runner.stopped is StopReason.EXHAUSTED
    assert [r.evaluated for r in search.history] == [2, 0]          # the round that found nothing new


def test_epochs_trained_is_the_trainers_count_else_the_fidelity():
    g = SMALL.sample(__import__("numpy").random.default_rng(0))
    assert Evaluation.succeeded(g, 100.0, Measurement(epochs=3), epochs=5).epochs_trained == 3   # stopped early
    assert Evaluation.succeeded(g, 100.0, epochs=5).epochs_trained == 5
    assert Evaluation.failed(g, "diverged", Measurement(epochs=1), epochs=5).epochs_trained == 1
    assert Evaluation.failed(g, "diverged", epochs=5).epochs_trained == 0
    assert Evaluation.lost(g, "worker died", epochs=5, attempts=3).epochs_trained == 0


def test_the_in_process_evaluator_stamps_each_evaluation_with_its_tasks_epochs():
    """The fidelity of an evaluation is the epochs of the task's spec, whatever the trainer says it trained."""
    g, h, k = (SMALL.sample(__import__("numpy").random.default_rng(seed)) for seed in (0, 1, 2))
    reports = {g: TrainResult(str(g), True, Measurement(loss=95.0, epochs=3, seconds=1.5)),   # stopped early
               h: TrainResult(str(h), False, Measurement(epochs=1), "diverged in epoch 1"),
               k: TrainResult(str(k), True, Measurement(loss=float("nan"), epochs=5))}     # ok, but no loss
    evaluator = InProcessEvaluator(lambda genotype, spec: reports[genotype])
    tasks = [Task.of(g, SPEC.replace(epochs=5)), Task.of(h, SPEC.replace(epochs=7)), Task.of(k, SPEC)]
    evaluator.submit(tasks + tasks[:1])                              # a pending id again is ignored
    assert evaluator.pending == 3
    finished = []
    while evaluator.pending:
        finished += evaluator.poll(0.0)
    assert evaluator.poll(0.0) == []
    assert all(isinstance(f, Finished) and f.worker_key is None for f in finished)
    assert [f.task_id for f in finished] == [t.task_id for t in tasks]
    a, b, c = (f.evaluation for f in finished)
    assert (a.state, a.loss, a.epochs, a.epochs_trained, a.seconds) == (EvalState.OK, 95.0, 5, 3, 1.5)
    assert a.candidate == tasks[0].candidate == Candidate(g, 5)
    assert (b.state, b.epochs, b.epochs_trained, b.error) == (EvalState.FAILED, 7, 1, "diverged in epoch 1")
    assert (c.state, c.epochs, c.loss) == (EvalState.FAILED, SPEC.epochs, None) and "no finite positive loss" in c.error


def test_task_of_gives_a_candidate_at_other_epochs_the_search_spec_at_its_epochs():
    runner = Runner(SPEC)
    g = SMALL.sample(__import__("numpy").random.default_rng(0))
    same, other = runner.task_of(Candidate(g, SPEC.epochs)), runner.task_of(Candidate(g, 9))
    assert same == Task.of(g, SPEC) and same.spec is SPEC
    assert other.spec == SPEC.replace(epochs=9) and other.candidate == Candidate(g, 9)
    assert other.task_id != same.task_id


@pytest.mark.parametrize("name", ALL)
def test_run_returns_why_the_strategy_stopped(name):
    strategy = build(name)
    runner, _ = _run(strategy, 2)
    assert runner.stopped is strategy.stop_reason is \
        (StopReason.GENERATIONS if name in GENERATIONAL else StopReason.EVALUATIONS)
    budgeted = build(name, generations=None, budget_epochs=20)
    runner, _ = _run(budgeted, 2)
    assert runner.stopped is StopReason.BUDGET and budgeted.asked_epochs <= 20


@pytest.mark.parametrize("name", ALL)
def test_the_search_summary_is_json_with_the_whole_search(name):
    strategy = build(name)
    _run(strategy, 2)
    summary = json.loads(json.dumps(search_summary(strategy), allow_nan=False))
    assert summary["final_epochs"] == OPTIONS[name].final_epochs
    assert summary["epochs_total"] == strategy.asked_epochs == summary["anytime"][-1][0]
    assert len(summary["evaluations"]) == strategy.evaluation_count == len(summary["anytime"])
    assert len(summary["generations"]) == len(strategy.history)
    assert summary["best"]["genotype"] == str(strategy.best.genotype)
    assert [e["genotype"] for e in summary["population"]] == [str(e.genotype) for e in strategy.population]


def test_format_report_is_one_line_with_the_best_genotype_and_the_epochs():
    engine = EvolutionEngine(SMALL, mu=4, lam=4, seed=0, generations=3)
    _run(engine)
    for report in engine.history:
        line = format_report(report)
        assert "\n" not in line and line.startswith("gen")
        assert str(report.best.genotype) in line and f"{report.best.loss:.2f}" in line
        assert f"gen {report.generation:3d}" in line and line.endswith(f"epochs {report.epochs_total}")
    line = format_report(engine.history[-1], extra="eta 3m")
    assert line.endswith("  eta 3m") and "\n" not in line


def test_format_report_without_a_population():
    engine = EvolutionEngine(SMALL, mu=3, lam=3, seed=0)
    [report] = engine.tell([Evaluation.failed(c.genotype, "crash", epochs=2) for c in engine.ask()])
    line = format_report(report)
    assert "\n" not in line and "n/a" in line and "failed 3" in line
