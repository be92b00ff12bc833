"""The simulated N-worker evaluator: real results, delivered in the order N parallel workers would."""
from __future__ import annotations

import pytest

from evo.asha import HalvingRandom
from evo.evaluation import Candidate
from evo.genotype import parse_genotype
from evo.head.evaluators import SimulatedEvaluator
from evo.head.runner import Runner
from evo.head.tasks import Task
from evo.measurement import Measurement
from evo.multifidelity import MultiFidelityEvolution
from evo.space import SearchSpace
from evo.spec import TrainSpec
from evo_helpers import synthetic_loss
from gpuworker.result import TrainResult

SPEC = TrainSpec(dataset="synthetic", epochs=1)


def trainer(calls: list | None = None):
    """A stand-in trainer whose task takes as many seconds as its epochs (and some genotypes longer)."""
    def train(genotype, spec):
        if calls is not None:
            calls.append(str(genotype))
        slow = 3.0 if genotype.latent == 20 else 1.0
        return TrainResult(str(genotype), True, Measurement(loss=synthetic_loss(genotype, spec.epochs),
                                                            epochs=spec.epochs, seconds=slow * spec.epochs))
    return train


def task(text: str, epochs: int = 1) -> Task:
    return Task.of(parse_genotype(text), SPEC.replace(epochs=epochs))


def test_results_come_in_the_order_two_workers_would_deliver_them():
    calls: list = []
    sim = SimulatedEvaluator(trainer(calls), workers=2)
    sim.submit([task("50|20|50"), task("50|10|50"), task("100|10|50")])  # 3 s, 1 s, then 1 s on the free one
    assert calls == ["50|20|50", "50|10|50"] and sim.pending == 3         # the third waits for a worker
    order = []
    while sim.pending:
        (finished,) = sim.poll(0)
        order.append((str(finished.evaluation.genotype), sim.clock))
    assert order == [("50|10|50", 1.0), ("100|10|50", 2.0), ("50|20|50", 3.0)]
    assert sim.busy == [3.0, 2.0] and sim.utilization() == pytest.approx([1.0, 2 / 3])
    assert calls == ["50|20|50", "50|10|50", "100|10|50"]  # each trained once, for real


def test_the_evaluation_is_stamped_with_its_tasks_epochs_and_a_known_id_is_not_queued_twice():
    sim = SimulatedEvaluator(trainer(), workers=1)
    sim.submit([task("50|10|50", 3), task("50|10|50", 3)])
    assert sim.pending == 1
    (finished,) = sim.poll(0)
    assert finished.evaluation.candidate == Candidate(parse_genotype("50|10|50"), 3) and sim.clock == 3.0


def test_bad_worker_counts_are_refused():
    for bad in (0, -1, 2.0, None):
        with pytest.raises(ValueError, match="workers"):
            SimulatedEvaluator(trainer(), workers=bad)


def utilization(strategy, workers: int) -> float:
    sim = SimulatedEvaluator(trainer(), workers=workers, duration=lambda e: e.epochs_trained)
    Runner(SPEC, poll_s=0).run(strategy, sim, sim.capacity)
    return sum(sim.busy) / (workers * sim.clock)


def test_asha_keeps_sixteen_simulated_workers_busier_than_generational_rungs():
    space = SearchSpace(max_layers=2)
    asha = HalvingRandom(space, mu=10, seed=1, fidelities=(1, 3, 9), eta=3, budget_epochs=900,
                         continue_promotions=False)
    rungs = MultiFidelityEvolution(space, mu=10, lam=10, seed=1, fidelities=(1, 3, 9), eta=3, budget_epochs=900)
    busy_asha, busy_rungs = utilization(asha, 16), utilization(rungs, 16)
    assert busy_asha > 0.9 > busy_rungs, (busy_asha, busy_rungs)


def test_evovae_search_simulate_workers_records_the_simulated_clock(tmp_path, capsys):
    import json

    from evo.cli.app import main

    run = tmp_path / "run"
    assert main(["search", "--in-process", "--simulate-workers", "4", "--dataset", "synthetic", "--train-subset",
                 "200", "--val-size", "100", "--mode", "asha", "--strategy", "random", "--epochs", "3",
                 "--budget-epochs", "20", "--run-dir", str(run), "--log-level", "warning"]) == 0
    done = json.loads((run / "result.json").read_text())
    simulated = done["simulated"]
    assert simulated["workers"] == 4 and len(simulated["utilization"]) == 4
    times = [at for _, at in simulated["delivered"]]
    assert len(times) == len(done["evaluations"]) and times == sorted(times) and times[-1] == simulated["seconds"]
    assert "simulated: 4 workers" in capsys.readouterr().out
    # result.json keeps each evaluation's validation curve, one point per epoch it has trained
    assert all(len(e["curve"]) == e["epochs"] for e in done["evaluations"] if e["state"] == "ok")


def test_over_another_evaluator_delivers_what_the_in_process_simulation_delivers_training_each_task_once():
    from evo.head.evaluators import InProcessEvaluator

    calls: list = []
    direct = SimulatedEvaluator(trainer(), workers=2)
    over = SimulatedEvaluator.over(InProcessEvaluator(trainer(calls)), workers=2, duration=lambda e: e.seconds)
    tasks = [task("50|20|50"), task("50|10|50"), task("100|10|50"), task("150|10|50", 2)]
    orders = []
    for sim in (direct, over):
        sim.submit(tasks)
        order = []
        while sim.pending:
            (finished,) = sim.poll(0)
            order.append((str(finished.evaluation.genotype), finished.evaluation.epochs, sim.clock))
        orders.append(order)
    assert orders[0] == orders[1] == [("50|10|50", 1, 1.0), ("100|10|50", 1, 2.0), ("50|20|50", 1, 3.0),
                                      ("150|10|50", 2, 4.0)]
    assert sorted(calls) == sorted(str(t.genotype) for t in tasks)  # the inner evaluator trained each once


def test_over_counts_epochs_by_default_so_the_order_does_not_depend_on_measured_seconds():
    from evo.head.evaluators import InProcessEvaluator

    sim = SimulatedEvaluator.over(InProcessEvaluator(trainer()), workers=2)  # 50|20|50 measures 3 s an epoch
    sim.submit([task("50|20|50", 1), task("50|10|50", 2)])
    (first,) = sim.poll(0)
    assert str(first.evaluation.genotype) == "50|20|50" and sim.clock == 1.0  # 1 epoch before 2 epochs
