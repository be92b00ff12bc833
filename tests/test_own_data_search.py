"""Own data through the real command line: `evovae train` and `evovae search --local-workers 2` over ZeroMQ
on scikit-learn's digits (.npz, PNG folder) and breast-cancer table (CSV); a worker whose copy of the data
differs from the head's, or that lacks it, with real processes; a worker's start-up check; bad data refused
in one line before anything is created."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from distributed_helpers import PYTHON, REPO, Cluster, free_port_pair
from own_data_helpers import (
    DIGITS_TRAIN,
    cancer_columns,
    digits_u8,
    write_cancer_csv,
    write_digits_npz,
    write_digits_png,
)

COLUMNS = ",".join(cancer_columns())
SMALL = ["--population", "2", "--offspring", "2", "--generations", "2", "--epochs", "1", "--max-layers", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    return {"npz": write_digits_npz(root), "png": write_digits_png(root), "csv": write_cancer_csv(root)}


FORMS = {  # form -> the data options of a small search on it
    "npz": lambda f: ["--dataset", str(f["npz"]), "--val-size", "200", "--train-subset", "400"],
    "png": lambda f: ["--dataset", str(f["png"]), "--val-size", "200", "--train-subset", "400"],
    "csv": lambda f: ["--dataset", str(f["csv"]), "--columns", COLUMNS, "--val-size", "60"],
}


def evovae(*argv: str, cwd, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "evo.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                                                "PYTHONPATH": str(REPO), "HOME": str(cwd)})


@pytest.mark.slow
@pytest.mark.parametrize("form", sorted(FORMS))
def test_train_on_each_form(files, tmp_path, form):
    done = evovae("train", "100|5|100", "--epochs", "2", *FORMS[form](files), "--log-level", "warning", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "validation loss" in done.stdout and "test loss" in done.stdout and "nats per example" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("form", sorted(FORMS))
def test_search_with_two_local_workers_over_zeromq(files, tmp_path, form):
    out = tmp_path / "result.json"
    done = evovae("search", "--local-workers", "2", "--bind", f"tcp://127.0.0.1:{free_port_pair()}", *SMALL,
                  *FORMS[form](files), "--output", str(out), "--run-dir", str(tmp_path / "run"),
                  "--log-format", "json", cwd=tmp_path, timeout=280)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    spec = result["spec"]
    assert spec["data_sha256"] and spec["dataset"] == str(files[form].resolve())
    assert spec.get("likelihood", "bernoulli") == ("gaussian" if form == "csv" else "bernoulli")
    evaluations = result["evaluations"]
    assert len(evaluations) >= 4 and all(e["error"] == "" and e["loss"] > 0 for e in evaluations), evaluations
    workers = {json.loads(line).get("worker_id") for line in done.stderr.splitlines()
               if line.startswith("{") and '"task.finished"' in line}
    assert len(workers) == 2, workers          # both local workers trained on it


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_worker_with_another_copy_of_the_data_refuses_it_and_the_search_completes(cluster, files, tmp_path):
    data = tmp_path / "digits.npz"
    shutil.copy(files["npz"], data)
    head = cluster.head(*SMALL, "--dataset", str(data), "--val-size", "200", "--train-subset", "300",
                        "--max-attempts", "5")
    original = data.read_bytes()
    images = digits_u8()
    images[7, 3, 3] ^= 1                                   # one pixel of one image differs
    np.savez(data, train=images[:DIGITS_TRAIN], test=images[DIGITS_TRAIN:])

    wrong = cluster.worker(head.port, "--threads", "1", worker_id="wrong-copy")
    assert wrong.wait(120) == 2, wrong.describe()
    unfit = wrong.log.events("worker.unfit")
    assert len(unfit) == 1 and "a different copy" in unfit[0]["error"] and str(data) in unfit[0]["error"]
    assert not wrong.log.events("task.finished")          # it trained nothing

    data.unlink()                                        # a node without the data at all
    missing = cluster.worker(head.port, "--threads", "1", worker_id="no-copy")
    assert missing.wait(120) == 2, missing.describe()
    assert "no such file or folder" in missing.log.events("worker.unfit")[0]["error"]
    assert head.alive() and not head.events("result.accepted")

    data.write_bytes(original)                           # the head's copy: now the search runs
    good = cluster.worker(head.port, "--threads", "1", worker_id="right-copy")
    assert head.wait(180) == 0, head.describe()
    result = head.result()
    assert all(e["error"] == "" and e["loss"] > 0 for e in result["evaluations"]), result["evaluations"]
    accepted = head.events("result.accepted")
    assert accepted and {a.get("worker_id") for a in accepted} == {"right-copy"}
    assert good.alive() or good.returncode == 0


@pytest.mark.slow
def test_a_worker_checks_its_dataset_at_start_up(files, tmp_path):
    """Exit 2 with the reason before it asks the head for work (no head is running here)."""
    argv = [PYTHON, "-m", "gpuworker", "--connect", "tcp://127.0.0.1:9", "--log-format", "json"]
    for extra, piece in ((["--dataset", str(files["csv"])], "column 'diagnosis' is not numeric"),
                         (["--dataset", str(tmp_path / "none.npz")], "nor an existing file or folder"),
                         (["--data-root", str(tmp_path / "nowhere")], "--data-root")):
        done = subprocess.run(argv + extra, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        plain = [line for line in done.stderr.splitlines() if line.startswith("evovae worker: error:")]
        assert len(plain) == 1 and piece in plain[0], done.stderr
        assert not any('"worker.started"' in line for line in done.stderr.splitlines())


BAD = {  # name -> (data options, a piece of the one-line error)
    "missing": (["--dataset", "no/such.npz"], "neither a built-in data set"),
    "non-numeric": (["--dataset", "{csv}"], "column 'diagnosis' is not numeric"),
    "too few rows": (["--dataset", "{csv}", "--columns", COLUMNS, "--val-size", "10000"],
                     "too few for a validation split of 10000"),
    "columns on built-in": (["--dataset", "mnist", "--columns", "a"], "--columns only applies"),
    "bad data root": (["--dataset", "mnist", "--data-root", "/nonexistent/evovae"], "--data-root"),
}


@pytest.mark.parametrize("command", ["train", "search"])
@pytest.mark.parametrize("bad", sorted(BAD))
def test_bad_data_is_one_line_exit_2_and_nothing_created(files, tmp_path, command, bad):
    options, piece = BAD[bad]
    options = [o.format(csv=files["csv"]) for o in options]
    run_dir = tmp_path / "run"
    argv = (["train", "100|5|100"] if command == "train" else ["search", "--run-dir", str(run_dir)]) + options
    done = evovae(*argv, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and piece in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not run_dir.exists() and not (tmp_path / "runs").exists()
