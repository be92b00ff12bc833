"""benchmarks/bench_utilization.py: the simulated tables come out for a tiny configuration (no timings asserted)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from evo.genotype import parse_genotype
from gpuworker.evaluators import _unit

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_utilization.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_utilization", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_the_simulated_tables_name_every_schedule_at_each_worker_count(bench, capsys):
    assert bench.main(["--workers", "2,3", "--rounds", "1", "--offspring", "10"]) == 0
    out = capsys.readouterr().out
    assert "### fixed time per epoch" in out and "### heavy-tailed" in out
    assert "busy mean / min, 2" in out and "busy mean / min, 3" in out
    for schedule in bench.SCHEDULES:
        assert out.count(f"| {schedule.label} |") == 2, schedule.key
    assert "busy, asha tpe 1,3,10 / generational rungs, tpe 3,10 (the earlier default) (offspring 10):" in out
    assert "busy, asha tpe 1,3,10, 3 brackets, hedged (the default) / generational rungs, tpe 3,10" in out


def test_one_full_fidelity_task_per_worker_keeps_every_worker_busy(bench):
    row = bench.simulate(bench.BY_KEY["steady-state"], workers=2, budget=40, offspring=10, durations="fixed")
    assert (row.busy_mean, row.busy_min, row.makespan, row.epochs, row.evaluations) == (1.0, 1.0, 20.0, 40, 4)


def test_the_heavy_tail_is_the_fake_workers_rule(bench):
    for text in ("50|10|50", "850|20|1000", "100,200|30|400"):
        g = parse_genotype(text)
        assert bench.unit(g, "duration") == _unit(g, "duration")
        assert bench.pareto_factor(g) == min(50.0, _unit(g, "duration") ** (-1 / 1.5))
