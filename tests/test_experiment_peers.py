"""The peer arms of the comparison (evo/experiments/peers.py): each runs the tiny preset end to end through the
comparison's SearchBench and an in-process evaluator (the real trainer, synthetic data, a small space),
charges exactly the epochs it reports, and an interrupted arm resumes to the result of an uninterrupted one.
SMAC's resume is marked slow: three SMAC runs, its random forest refitted at every ask, take about 8 s."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytest.importorskip("dehb")
pytest.importorskip("smac")

from evo.experiments.compare import ARMS, COMPARE_PRESETS, CONTINUING, base_spec, run_arm, run_compare
from evo.experiments.peers import PEERS, configuration_space, genotype_of
from evo.experiments.searches import SearchBench
from evo.head.cache import ResultCache
from evo.head.evaluators import InProcessEvaluator, SearchStopped
from evo.space import SearchSpace

SPACE = SearchSpace(max_layers=2, width_min=10, width_max=60, width_step=10, latent_min=2, latent_max=8,
                    latent_step=2)
PRESET = COMPARE_PRESETS["tiny"]


class Trainer:
    """gpuworker's trainer with a checkpoint store (as a compare's local workers have), counting the epochs it
    trains; ``stop_after``: raise SearchStopped (as a killed head's evaluator does) after that many tasks."""

    def __init__(self, root, stop_after=None):
        from gpuworker.checkpoints import CheckpointStore

        self.store = CheckpointStore(root / "checkpoints")
        self.trained = 0
        self.tasks = 0
        self.stop_after = stop_after

    def __call__(self, genotype, spec):
        from gpuworker.train import evaluate

        if self.stop_after is not None and self.tasks >= self.stop_after:
            raise SearchStopped("stopped")
        self.tasks += 1
        result = evaluate(genotype, spec, checkpoints=self.store)
        self.trained += result.measurement.epochs - result.measurement.resumed_from
        return result


def _bench(root, trainer):
    return SearchBench(root, InProcessEvaluator(trainer), lambda: 2, cache=ResultCache(root / "cache.sqlite"),
                       space=SPACE)


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_peers_are_arms_and_optuna_hyperband_gets_the_checkpoint_store():
    assert set(PEERS) <= set(ARMS)
    assert "optuna-hyperband" in CONTINUING and "dehb" not in CONTINUING and "smac" not in CONTINUING


def test_the_configuration_space_is_the_conditional_space():
    cs = configuration_space(SPACE, seed=0)
    for config in cs.sample_configuration(50):
        genotype = genotype_of(config)
        assert SPACE.validate(genotype) == genotype
        assert ("encoder_1" in dict(config)) == (len(genotype.encoder) == 2)  # a width only for a layer there


@pytest.mark.parametrize("arm", list(PEERS))
def test_a_peer_runs_the_tiny_preset_and_charges_what_it_reports(tmp_path, arm):
    trainer = Trainer(tmp_path)
    spec = base_spec(PRESET, "synthetic", 0)
    s = run_arm(_bench(tmp_path, trainer), arm, PRESET, 0, spec)
    assert s["stop_reason"] == "budget" and s["peer"]["arm"] == arm
    assert s["best"] is not None and s["best"]["epochs"] == PRESET.epochs
    assert s["epochs_total"] == s["anytime"][-1][0] <= PRESET.budget_epochs
    assert s["epochs_total"] > PRESET.budget_epochs - PRESET.epochs  # stopped only when the next did not fit
    if arm == "optuna-hyperband":  # one task per epoch, each continued from the previous epoch's checkpoint
        assert s["epochs_total"] == len(s["evaluations"]) == trainer.trained
        assert {e["epochs"] for e in s["evaluations"]} == set(range(1, PRESET.epochs + 1))
    else:  # each configuration at its fidelity, charged its epochs (a checkpoint may save the worker some)
        assert s["epochs_total"] == sum(e["epochs"] for e in s["evaluations"]) >= trainer.trained
        assert {e["epochs"] for e in s["evaluations"]} <= set(range(PRESET.rungs[0], PRESET.epochs + 1))
    assert json.loads((tmp_path / "searches" / f"{arm}-seed0" / "result.json").read_text()) == s


@pytest.mark.parametrize("arm", [pytest.param(arm, marks=pytest.mark.slow) if arm == "smac" else arm for arm in PEERS])
def test_an_interrupted_peer_resumes_to_the_uninterrupted_result(tmp_path, arm):
    spec = base_spec(PRESET, "synthetic", 0)
    whole = run_arm(_bench(tmp_path / "whole", Trainer(tmp_path / "whole")), arm, PRESET, 0, spec)
    root = tmp_path / "cut"
    with pytest.raises(SearchStopped):
        run_arm(_bench(root, Trainer(root, stop_after=4)), arm, PRESET, 0, spec)
    assert not (root / "searches" / f"{arm}-seed0" / "result.json").exists()
    again = Trainer(root)
    resumed = run_arm(_bench(root, again), arm, PRESET, 0, spec)
    for key in ("epochs_total", "anytime", "stop_reason"):
        assert resumed[key] == whole[key], key
    for key in ("evaluations", "population"):  # the same results, in the same order (training times aside)
        assert _results(resumed[key]) == _results(whole[key]), key
    assert _results([resumed["best"]]) == _results([whole["best"]])
    assert again.tasks <= len(whole["evaluations"]) - 4  # the four finished before the cut were not trained again


def _results(items):
    return [(e["genotype"], e["epochs"], e["state"], e["loss"]) for e in items]


def test_another_config_in_a_peer_directory_is_refused(tmp_path):
    from evo.head.journal import JournalError

    spec = base_spec(PRESET, "synthetic", 0)
    with pytest.raises(SearchStopped):
        run_arm(_bench(tmp_path, Trainer(tmp_path, stop_after=1)), "dehb", PRESET, 0, spec)
    with pytest.raises(JournalError, match="other settings"):
        run_arm(_bench(tmp_path, Trainer(tmp_path)), "dehb", replace(PRESET, budget_epochs=20), 0, spec,
                name="dehb-seed0")


def test_a_compare_of_the_peers_retrains_their_bests(tmp_path):
    preset = replace(PRESET, arms=tuple(PEERS), seeds=1)
    raw = run_compare(_bench(tmp_path, Trainer(tmp_path)), preset, base_spec(preset, "synthetic", 0))
    assert [s["arm"] for s in raw["searches"]] == list(PEERS)
    assert all(s["retrain"]["ok"] and s["retrain"]["test_iw_loss"] for s in raw["searches"])


_SMAC_ASKS = """
import sys, tempfile, pathlib
from evo.evaluation import Evaluation
from evo.experiments.peers import SMACPeer
from evo.space import SearchSpace
space = SearchSpace(max_layers=2, width_min=10, width_max=60, width_step=10, latent_min=2, latent_max=8,
                    latent_step=2)
peer = SMACPeer(space, seed=0, epochs=9, min_epochs=1, eta=3, budget_epochs=150, startup_trials=4,
                output_path=pathlib.Path(tempfile.mkdtemp()))
asked = []
while not peer.done and (batch := peer.ask(2)):
    asked += [str(c) for c in batch]
    peer.tell([Evaluation.succeeded(c.genotype, len(str(c.genotype)) * 1.7 % 5 + 10 / c.epochs, epochs=c.epochs)
               for c in batch])
print(" ".join(asked))
"""


@pytest.mark.slow
def test_smac_asks_the_same_whatever_the_hash_seed():
    """SMAC 2.4.1 orders its local-search start points by a set of Configurations (hashed by their text): a
    SMAC arm started in one process must replay in another, whose PYTHONHASHSEED differs."""
    import os
    import subprocess
    import sys

    runs = []
    for hash_seed in ("1", "2", "3"):
        done = subprocess.run([sys.executable, "-c", _SMAC_ASKS], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONHASHSEED": hash_seed}, check=True)
        runs.append(done.stdout.split())
    assert len(runs[0]) > 20  # past the initial design, into the model's proposals (the start points)
    assert runs[0] == runs[1] == runs[2]
