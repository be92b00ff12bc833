"""``evovae experiment`` on the command line, fast: its options, and the refusals that happen before anything
trains (bad options, bad run directories, bad cluster options leave nothing behind)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from distributed_helpers import REPO
from evo.cli.experiment import main
from evo.experiments.presets import PRESETS, ExperimentConfig
from evo.experiments.runs import PaperRun, RunDirError


def test_help_offers_resume_and_the_distribution_options():
    out = subprocess.run([sys.executable, "-m", "evo.cli", "experiment", "paper", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--resume", "--bind", "--sink-bind", "--local-workers", "--server-key-secret", "--allow",
                 "--insecure", "--worker-arg", "--heartbeat", "--max-attempts", "--threads"):
        assert flag in out.stdout, flag
    assert "default 2; 0: only remote workers serve it" in " ".join(out.stdout.split())


def test_resume_takes_its_settings_from_the_run_directory(tmp_path, capsys):
    assert main(["paper", "--resume", str(tmp_path), "--seed", "4", "--population", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "leave out --seed, --population" in err
    assert main(["paper", "--resume", str(tmp_path / "nothing")]) == 2
    assert "is not the run directory of a paper experiment (no experiment.json in it)" in capsys.readouterr().err


def test_bad_cluster_options_are_refused_before_a_run_directory_exists(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["paper", "--out", str(out), "--bind", "tcp://*:6123"]) == 2
    assert "refusing to bind tcp://*:6123 without encryption" in capsys.readouterr().err
    assert main(["paper", "--out", str(out), "--local-workers", "-1"]) == 2
    assert "argument --local-workers: expected a whole number from 0 to 1024, got '-1'" in capsys.readouterr().err
    assert not out.exists()


def test_the_run_directory_keeps_the_configuration_and_refuses_a_second_experiment(tmp_path):
    config = ExperimentConfig(PRESETS["tiny"], dataset="synthetic", seed=3)
    with PaperRun.create(tmp_path / "run", config) as run, run.timed("searches_s"):
        pass
    with PaperRun.open(tmp_path / "run") as again:
        assert again.config == config and again.timings()["runs"] == 2
    stored = json.loads((tmp_path / "run" / "experiment.json").read_text())
    assert stored["format"] == "evovae-paper-run" and stored["config"]["preset"]["search_epochs"] == [1, 2]
    with pytest.raises(RunDirError, match="holds an experiment already: continue it with --resume"):
        PaperRun.create(tmp_path / "run", config)
    (tmp_path / "run" / "curves-synthetic.png").write_bytes(b"x")
    PaperRun.create(tmp_path / "run", config, force=True).close()  # starts over
    assert json.loads((tmp_path / "run" / "progress.json").read_text())["runs"] == 1
    assert not (tmp_path / "run" / "curves-synthetic.png").exists()


def test_a_report_of_an_earlier_version_is_not_overwritten(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(RunDirError, match="already holds a report"):
        PaperRun.create(tmp_path, ExperimentConfig(PRESETS["tiny"]))


def test_the_searches_of_a_preset_are_named_and_seeded_as_in_the_committed_report():
    plans = ExperimentConfig(PRESETS["cpu"]).searches()
    assert [p.name for p in plans] == ["evolution-2ep", "evolution-5ep"] + [
        f"random-{e}ep-seed{s}" for e in (2, 5) for s in (0, 1, 2)]
    first = plans[0]
    assert (first.options.strategy, first.options.population, first.options.offspring, first.options.generations,
            first.options.epochs, first.spec.train_subset, first.spec.val_size) == ("evolution", 6, 6, 5, 2, 6000, 3000)
    assert plans[-1].options.strategy == "random" and plans[-1].options.seed == 2 and plans[-1].spec.epochs == 5
