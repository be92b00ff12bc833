"""The strategy comparison and the fidelity study: statistics, summaries, prefix-stable training, and a
comparison killed with SIGKILL mid-way and resumed without re-training anything finished."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest

from distributed_helpers import REPO, free_port_pair, wait_until
from evo.experiments.compare import COMPARE_PRESETS, arm_options, summarize
from evo.experiments.stats import bootstrap_mean_ci, kendall_tau, mean_sd, spearman
from evo.strategies import make_strategy


def test_rank_correlations_match_hand_computed_values():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(2 * 3))  # tau-b with one tie


def test_bootstrap_interval_excludes_zero_only_for_a_consistent_difference():
    assert bootstrap_mean_ci([2.0, 2.5, 1.5, 3.0, 2.2])["excludes_zero"]
    mixed = bootstrap_mean_ci([2.0, -2.0, 1.0, -1.5, 0.3])
    assert not mixed["excludes_zero"] and mixed["low"] < 0 < mixed["high"]
    assert mean_sd([1.0, 3.0]) == {"n": 2, "mean": 2.0, "sd": pytest.approx(math.sqrt(2)), "min": 1.0, "max": 3.0}


def _search(arm, seed, curve, test_loss, genotypes=None):
    best = min((b for _, b in curve if b is not None), default=None)
    evaluations = [{"genotype": g, "epochs": 1, "seconds": 1.0, "state": "ok", "loss": 300.0}
                   for g in (genotypes or [f"{100 + k}|10|100" for k in range(len(curve))])]
    return {"arm": arm, "seed": seed, "anytime": curve, "epochs_total": curve[-1][0],
            "best": {"genotype": "100|10|100", "loss": best} if best else None, "evaluations": evaluations,
            "retrain": {"test_loss": test_loss, "test_iw_loss": test_loss - 5}}


def test_summary_computes_compute_to_reach_and_paired_differences():
    preset = COMPARE_PRESETS["tiny"]
    preset = type(preset)(**{**preset.__dict__, "arms": ("multifidelity", "random"), "seeds": 3, "budget_epochs": 10})
    raw = {"searches": []}
    for seed in range(3):  # random reaches 100 at epoch 10; multifidelity reaches 99 at epoch 2
        raw["searches"].append(_search("random", seed, [[5, 110.0], [10, 100.0]], 200.0 + seed))
        raw["searches"].append(_search("multifidelity", seed, [[1, None], [2, 99.0], [10, 98.0]], 198.0 + seed))
    s = summarize(raw, preset)
    reach = s["targets"]["reach_random_median"]
    assert reach["target_val_loss"] == 100.0 and reach["median_epochs"] == 2.0 and reach["ratio"] == 0.2
    assert reach["met"]
    assert s["paired"]["random"]["test_loss"]["mean"] == pytest.approx(2.0)
    assert s["paired"]["random"]["test_loss"]["excludes_zero"]
    assert s["curves"]["random"]["median"][:6] == [None] * 5 + [110.0]
    assert s["curves"]["multifidelity"]["median"][2] == 99.0
    # against random search too (random minus the arm: positive, the arm is better), and every arm's reach
    assert s["paired_random"]["multifidelity"]["test_loss"]["mean"] == pytest.approx(2.0)
    assert set(s["paired_random"]) == {"multifidelity"}
    assert s["reach"]["target_val_loss"] == 100.0
    assert s["reach"]["by_arm"]["multifidelity"]["ratio"] == 0.2 and s["reach"]["by_arm"]["random"]["ratio"] == 1.0
    assert s["arms"]["multifidelity"]["generational"] and not s["arms"]["multifidelity"]["continues"]
    assert set(s["wallclock"]["by_workers"]) == {"1", "16"}


def test_trials_count_configurations_and_tasks_count_results():
    """An optuna-hyperband trial is one configuration told once per epoch: one trial, as many tasks."""
    preset = COMPARE_PRESETS["tiny"]
    preset = type(preset)(**{**preset.__dict__, "arms": ("optuna-hyperband",), "seeds": 1, "budget_epochs": 4})
    steps = _search("optuna-hyperband", 0, [[1, None], [2, 99.0], [3, None], [4, 98.0]], 200.0,
                    genotypes=["100|10|100", "100|10|100", "200|10|100", "200|10|100"])
    arm = summarize({"searches": [steps]}, preset)["arms"]["optuna-hyperband"]
    assert arm["trials"]["mean"] == 2 and arm["tasks"]["mean"] == 4
    assert arm["continues"] and not arm["generational"]


@pytest.mark.parametrize("arm", ["multifidelity", "evolution", "random", "regularized", "tpe"])
def test_every_arm_is_built_with_the_same_budget_and_final_fidelity(arm):
    preset = COMPARE_PRESETS["cpu"]
    strategy = make_strategy(arm_options(arm, preset, seed=1))
    assert strategy.budget_epochs == preset.budget_epochs and strategy.final_epochs == preset.epochs


def test_training_is_prefix_stable_so_one_run_gives_every_fidelity():
    from evo.genotype import parse_genotype
    from evo.spec import TrainSpec
    from gpuworker.train import evaluate

    spec = TrainSpec(dataset="synthetic", epochs=3, train_subset=300, val_size=100)
    g = parse_genotype("100|10|100")
    long_run, short_run = evaluate(g, spec), evaluate(g, spec.replace(epochs=1))
    assert short_run.measurement.curve == long_run.measurement.curve[:1] and len(long_run.measurement.curve) == 3


@pytest.mark.slow
def test_compare_killed_mid_way_resumes_without_retraining_what_finished(tmp_path):
    run = tmp_path / "cmp"
    port = free_port_pair()
    argv = [sys.executable, "-m", "evo.cli.compare", "--preset", "tiny", "--dataset", "synthetic",
            "--fidelity-count", "3", "--bind", f"tcp://127.0.0.1:{port}", "--log-format", "json"]
    first = subprocess.Popen([*argv, "--run-dir", str(run)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: len(list(run.glob("searches/*/result.json"))) >= 2, 120, "two finished searches")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    finished = {p: p.stat().st_mtime_ns for p in run.glob("searches/*/result.json")}
    resumed = subprocess.run([*argv, "--resume", str(run)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads((run / "results.json").read_text())
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # read back, not run again
    assert len(results["searches"]) == 2 * len(COMPARE_PRESETS["tiny"].arms)
    evaluations = sum(len(s["evaluations"]) for s in results["searches"])
    assert results["trained_now"] < evaluations + results["fidelity"]["count"] + len(results["searches"])
    assert (run / "report.md").is_file() and (run / "anytime.png").is_file()


@pytest.mark.slow
def test_compare_with_simulated_workers_tells_each_search_in_the_order_n_workers_would(tmp_path):
    run = tmp_path / "cmp"
    _tiny_compare(run, "--seeds", "1", "--arms", "hyperband-tpe,tpe-multifidelity", "--simulate-workers", "4")
    assert json.loads((run / "compare.json").read_text())["simulate_workers"] == 4
    results = json.loads((run / "results.json").read_text())
    assert results["simulate_workers"] == 4 and "--simulate-workers 4" in results["command"]
    for search in results["searches"]:
        simulated = search["simulated"]
        assert simulated["workers"] == 4
        times = [at for _, at in simulated["delivered"]]
        assert len(times) == len(search["evaluations"]) and times == sorted(times)
        # the clock counts epochs trained: tasks overlapped on the 4 simulated workers (a sequential search's
        # clock would be every epoch it spent), and no faster than 4 at once
        assert search["epochs_total"] / 4 <= simulated["seconds"] < search["epochs_total"]
    assert all(s["retrain"]["ok"] for s in results["searches"] if s["best"])
    assert "decided as 4 workers would" in (run / "report.md").read_text()
    # compare.json fixes it: a resume given another count says so and keeps the run's own
    again = subprocess.run([sys.executable, "-m", "evo.cli.compare", "--resume", str(run), "--simulate-workers", "2",
                            "--bind", f"tcp://127.0.0.1:{free_port_pair()}"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "so --simulate-workers is ignored" in again.stderr, again.stderr[-2000:]
    assert json.loads((run / "results.json").read_text())["simulate_workers"] == 4



@pytest.mark.slow
def test_first_seed_runs_the_comparison_on_other_seeds(tmp_path):
    run = tmp_path / "cmp"
    _tiny_compare(run, "--seeds", "2", "--first-seed", "7", "--arms", "random,hedged-adaptive-tpe")
    results = json.loads((run / "results.json").read_text())
    assert [(s["arm"], s["seed"]) for s in results["searches"]] == [
        ("random", 7), ("hedged-adaptive-tpe", 7), ("random", 8), ("hedged-adaptive-tpe", 8)]
    assert sorted(p.name for p in (run / "searches").iterdir()) == [
        "hedged-adaptive-tpe-seed7", "hedged-adaptive-tpe-seed8", "random-seed7", "random-seed8"]
    stored = json.loads((run / "searches" / "random-seed8" / "run.json").read_text())
    assert stored["config"]["options"]["seed"] == 8
    report = (run / "report.md").read_text()
    assert "seeds 7..8" in report and "| seed 7 | seed 8 |" in report


def _tiny_compare(run, *flags):
    """A tiny comparison on synthetic data without a fidelity study, in ``run``, with ``flags``; it must succeed."""
    argv = [sys.executable, "-m", "evo.cli.compare", "--preset", "tiny", "--dataset", "synthetic", "--fidelity-count",
            "0", *flags, "--bind", f"tcp://127.0.0.1:{free_port_pair()}", "--log-format", "json", "--run-dir", str(run)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
