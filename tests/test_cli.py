"""The evovae command line, run as a user runs it: a real process."""
import json
import math
import os
import re
import subprocess
import sys

import pytest

SMALL = ["--epochs", "1", "--train-subset", "600", "--val-size", "600", "--log-format", "json"]


def _untimed(evaluations):
    """Evaluations without their wall-clock seconds: the same seed gives the same search, not the same timing."""
    return [{k: v for k, v in e.items() if k != "seconds"} for e in evaluations]


def evovae(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "evo.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_train_prints_a_finite_validation_and_test_loss():
    out = evovae("train", "850|20|1000", "--dataset", "fashion-mnist", *SMALL)
    assert out.returncode == 0, out.stderr
    losses = [float(x) for x in re.findall(r"(?:validation|test) loss ([0-9.]+)", out.stdout)]
    assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses)
    assert "parameters 1,507,074" in out.stdout


@pytest.mark.parametrize("text", ["850|20", "850||1000", "850|x|1000", "0|20|1000", "850|20|1000,", "", "8.5|2|1"])
def test_malformed_genotype_is_one_line_and_status_2(text):
    out = evovae("train", text, *SMALL)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evovae: error: bad genotype")
    assert "Traceback" not in out.stderr


def test_missing_data_is_a_clear_error(tmp_path):
    out = evovae("train", "850|20|1000", *SMALL, "--data-root", str(tmp_path),
                 env={"EVOVAE_FASHION_MNIST_DIR": str(tmp_path / "none")})
    assert out.returncode == 2
    assert "apt-get install dataset-fashion-mnist" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_search_on_real_fashion_mnist_is_reproducible(tmp_path):
    args = ["search", "--in-process", "--population", "3", "--offspring", "3", "--generations", "3", "--seed", "7",
            *SMALL]
    first = evovae(*args, "--output", str(tmp_path / "a.json"), "--run-dir", str(tmp_path / "run-a"))
    assert first.returncode == 0, first.stderr
    gens = [line for line in first.stdout.splitlines() if line.startswith("gen ")]
    assert len(gens) == 3
    second = evovae(*args, "--output", str(tmp_path / "b.json"), "--run-dir", str(tmp_path / "run-b"))
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert _untimed(a["population"]) == _untimed(b["population"])
    assert _untimed(a["evaluations"]) == _untimed(b["evaluations"])
    assert len(a["population"]) == 3 and len(a["evaluations"]) >= 3
    best = [g["best_loss"] for g in a["generations"]]
    assert best == sorted(best, reverse=True)  # elitism: the best never gets worse
    logged = [json.loads(line) for line in first.stderr.splitlines() if line.startswith("{")]
    assert sum(e["event"] == "generation.done" for e in logged) == 3
    assert second.returncode == 0
    assert _untimed(json.loads((tmp_path / "run-a" / "result.json").read_text())["population"]) == _untimed(
        a["population"])
