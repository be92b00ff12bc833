"""evovae export --run: the best genotypes of a journaled search, retrained on its data and split."""
import json
import subprocess
import sys

import pytest

from evo.engine import EvolutionEngine
from evo.head.evaluators import InProcessEvaluator
from evo.head.journal import RunJournal
from evo.head.runner import Runner
from evo.spec import TrainSpec
from gpuworker.evaluators import fake_evaluator
from gpuworker.export import load_model

SPEC = TrainSpec(dataset="synthetic", epochs=1, train_subset=800, val_size=400)


@pytest.mark.slow  # an evovae export process retraining two models
def test_export_takes_the_best_of_a_run_on_its_own_data(tmp_path):
    config = {"dataset": "synthetic", "train_subset": 800, "val_size": 400, "split_seed": 0, "seed": 0,
              "batch_size": 128, "lr": 1e-3}
    journal = RunJournal.create(tmp_path / "run", config)
    engine = EvolutionEngine(mu=3, lam=3, seed=4, epochs=1, generations=2)
    fake = fake_evaluator()
    Runner(SPEC, journal=journal).run(engine, InProcessEvaluator(lambda g, spec: fake(g, spec, lambda _: None)))
    journal.close()
    best_two = [str(e.genotype) for e in sorted(engine.evaluations, key=lambda e: e.loss)[:2]]

    out = subprocess.run([sys.executable, "-m", "evo.cli", "export", "--run", str(tmp_path / "run"), "--top", "2",
                          "--epochs", "1", "--out", str(tmp_path / "models"), "--log-level", "warning"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    exported = []
    for rank in (1, 2):
        model, info = load_model(tmp_path / "models" / f"rank-{rank}")
        exported.append(str(model.genotype))
        assert info["spec"]["dataset"] == "synthetic" and info["spec"]["train_subset"] == 800
    assert exported == best_two
    assert json.loads((tmp_path / "models" / "export.json").read_text())


def test_export_needs_exactly_one_source(tmp_path):
    out = subprocess.run([sys.executable, "-m", "evo.cli", "export", "--out", str(tmp_path / "m")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "either --run RUN_DIR or --genotype" in out.stderr
