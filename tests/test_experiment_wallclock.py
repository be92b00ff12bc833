"""The comparison's simulated wall clock (evo/experiments/wallclock.py): list scheduling with a generational
strategy's barriers and a promotion's wait for the result below it, the batches read off a search's record,
and the curves and figures per worker count. Hand-computed schedules; no training."""
from __future__ import annotations

import math

import pytest

from evo.experiments.wallclock import batches, list_schedule, simulate, wallclock_summary


def test_tasks_without_prerequisites_fill_every_worker():
    assert list_schedule([1.0, 1.0, 1.0], [[], [], []], workers=2) == [1.0, 1.0, 2.0]
    assert list_schedule([1.0, 1.0, 1.0], [[], [], []], workers=1) == [1.0, 2.0, 3.0]


def test_a_batch_waits_for_the_whole_batch_before_it():
    seconds = [1.0, 3.0, 1.0]
    assert list_schedule(seconds, [[], [], [0, 1]], workers=2, barriers=True) == [1.0, 3.0, 4.0]
    assert list_schedule(seconds, [[], [], []], workers=2) == [1.0, 3.0, 2.0]  # no barrier: the free worker


def test_a_promotion_waits_for_its_rung_below_and_later_tasks_go_first():
    # A@1 (2 s), B@1 (1 s), A@3 (1 s, after A@1), C@1 (1 s) on 2 workers: at t=1 A@3 may not start, C does
    assert list_schedule([2.0, 1.0, 1.0, 1.0], [[], [], [0], []], workers=2) == [2.0, 1.0, 3.0, 2.0]


def test_a_prerequisite_after_its_task_is_refused():
    with pytest.raises(ValueError, match="never runs"):
        list_schedule([1.0, 1.0], [[1], [0]], workers=2)


def _e(genotype, epochs, loss, seconds=1.0, state="ok"):
    return {"genotype": genotype, "epochs": epochs, "loss": loss, "seconds": seconds, "state": state}


def test_batches_split_at_generations_and_at_rungs():
    single = {"generations": [{"evaluated": 2}, {"evaluated": 2}],
              "evaluations": [_e(g, 10, 1.0) for g in "abcde"]}  # a fifth task after the last report: its own
    assert batches(single) == [0, 0, 1, 1, 2]
    rungs = {"generations": [{"evaluated": 4}, {"evaluated": 4}],
             "evaluations": [_e(g, e, 1.0) for g, e in zip("abcadefd", (3, 3, 3, 10, 3, 3, 3, 10), strict=True)]}
    assert batches(rungs) == [0, 0, 0, 1, 2, 2, 2, 3]


def test_simulate_counts_final_fidelity_results_at_their_simulated_end():
    search = {"generations": [{"evaluated": 3}],
              "evaluations": [_e("a", 3, 300.0, 3.0), _e("b", 3, 290.0, 1.0), _e("b", 10, 280.0, 5.0),
                              _e("c", 10, 270.0, 1.0, state="failed")]}
    one = simulate(search, generational=False, workers=1, final_epochs=10)
    assert one["makespan"] == 10.0 and one["busy"] == 10.0
    assert one["curve"] == [[3.0, None], [4.0, None], [9.0, 280.0], [10.0, 280.0]]  # a failed task is no result
    # asynchronous on 2 workers: b@10 waits for b@3 (ends at 1), c runs beside it on the other worker
    two = simulate(search, generational=False, workers=2, final_epochs=10)
    assert two["curve"] == [[1.0, None], [3.0, None], [4.0, None], [6.0, 280.0]] and two["makespan"] == 6.0


def test_the_summary_gives_each_arm_its_curves_utilization_and_time_to_reach():
    generational = {"generations": [{"evaluated": 2}, {"evaluated": 2}],
                    "evaluations": [_e("a", 10, 300.0), _e("b", 10, 290.0), _e("c", 10, 280.0), _e("d", 10, 270.0)]}
    asynchronous = {"evaluations": [_e(g, 10, 300.0 - 10 * i) for i, g in enumerate("abcd")]}
    s = wallclock_summary({"gen": {0: generational}, "async": {0: asynchronous}}, {"gen": True, "async": False},
                          final_epochs=10, target=285.0, workers=(1, 16))
    assert s["workers"] == [1, 16] and s["generational"] == {"gen": True, "async": False}
    at16 = s["by_workers"]["16"]["arms"]
    assert at16["gen"]["makespan"]["mean"] == 2.0 and at16["async"]["makespan"]["mean"] == 1.0
    assert at16["gen"]["utilization"]["mean"] == pytest.approx(4 / 32)  # two batches of two on 16 workers
    assert at16["gen"]["seconds_to_reach"] == [2.0] and at16["async"]["seconds_to_reach"] == [1.0]
    at1 = s["by_workers"]["1"]
    assert at1["arms"]["gen"]["seconds_to_reach"] == [3.0] and at1["arms"]["gen"]["utilization"]["mean"] == 1.0
    grid = at1["grid"]
    assert grid[0] == 0.0 and grid[-1] == 4.0
    median = at1["curves"]["gen"]["median"]
    assert median[0] is None and median[-1] == 270.0
    never = wallclock_summary({"gen": {0: generational}}, {"gen": True}, final_epochs=10, target=1.0, workers=(2,))
    assert never["by_workers"]["2"]["arms"]["gen"]["median_seconds_to_reach"] == math.inf


def test_the_verdict_says_sooner_only_where_the_shown_minutes_differ():
    """An arm 0.02 s ahead of the default on the simulated clock (noise on measured seconds) is not 'sooner'
    in the verdict: it printed '0.44 against 0.44' (the committed mid comparison's dehb at 16 workers)."""
    import copy
    import json
    from pathlib import Path

    from evo.experiments.compare_report import _verdict

    committed = Path(__file__).resolve().parents[1] / "docs/results/fashion-mnist-compare-mid/results.json"
    summary = json.loads(committed.read_text())["summary"]
    d = summary["default"]

    def sooner_line(s):
        return next((line for line in _verdict(s) if "at 16 simulated workers" in line), "")

    arms = summary["wallclock"]["by_workers"]["16"]["arms"]
    mine = arms[d]["median_seconds_to_reach"]
    assert 0 < mine - arms["dehb"]["median_seconds_to_reach"] < 0.6   # ahead by less than a hundredth of a minute
    line = sooner_line(summary)
    assert "`optuna-hyperband`" in line and "`dehb`" not in line
    clearly = copy.deepcopy(summary)
    clearly["wallclock"]["by_workers"]["16"]["arms"]["dehb"]["median_seconds_to_reach"] = mine - 6.0
    assert "`dehb`" in sooner_line(clearly)
