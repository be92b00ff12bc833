"""Own data in the experiments and at the local workers' start-up (issue 11): the default validation size for
own data, the local workers started with the run's data options (a worker that cannot serve them exits 2 at
start-up with one line, and a run nobody can serve stops with the reason), and `evovae experiment compare`
and `evovae experiment paper --preset tiny` on scikit-learn's digits as an .npz, resumed and refused when the
file changed."""
from __future__ import annotations

import argparse
import json
import subprocess

import numpy as np
import pytest

from distributed_helpers import PYTHON, REPO, free_port_pair, wait_until
from evo.cli.distribution import add_distribution_options, cluster_options
from evo.experiments.compare import COMPARE_PRESETS
from evo.genotype import parse_genotype
from evo.head.cluster import Cluster, ClusterError, ClusterOptions
from evo.spec import TrainSpec, task_id
from gpuworker.data_options import DEFAULT_VAL_SIZE, add_data_options, data_fields, default_val_size, spec_from_args
from own_data_helpers import DIGITS_TRAIN, digits_u8, write_cancer_csv, write_digits_npz


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    return {"npz": write_digits_npz(root), "csv": write_cancer_csv(root, diagnosis=False),
            "csv_bad": write_cancer_csv(root, "cancer-with-diagnosis.csv")}


def _namespace(argv, *, val_size=True):
    parser = argparse.ArgumentParser()
    add_data_options(parser)
    add_distribution_options(parser)
    if val_size:
        parser.add_argument("--val-size", type=int, default=None)
    return parser.parse_args(argv)


def evovae(*argv: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "evo.cli", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                               "HOME": str(cwd)})


# ---------------------------------------------------------------------- --val-size not given, fast

def test_val_size_not_given_is_a_fifth_of_own_data_and_10000_for_built_in_sets(files):
    assert default_val_size(None) == DEFAULT_VAL_SIZE == 10_000 and default_val_size(None, 300) == 300
    assert default_val_size(569) == 113 and default_val_size(10**6) == 10_000 and default_val_size(3) == 1
    table = _namespace(["--dataset", str(files["csv"])])
    spec = spec_from_args(table, epochs=1, val_size=table.val_size)  # 569 rows: 113 validate, 113 test, 343 train
    assert spec.val_size == table.val_size == 113 and spec.likelihood == "gaussian"
    digits = _namespace(["--dataset", str(files["npz"])])
    assert spec_from_args(digits, epochs=1, val_size=None).val_size == DIGITS_TRAIN // 5
    capped = _namespace(["--dataset", str(files["npz"])])
    data_fields(capped, val_size=200)  # an experiment's preset: at most its own size
    assert capped.val_size == 200
    given = _namespace(["--dataset", str(files["csv"]), "--val-size", "50"])
    assert spec_from_args(given, epochs=1, val_size=given.val_size).val_size == 50
    builtin = _namespace(["--dataset", "mnist"])
    spec = spec_from_args(builtin, epochs=2, val_size=builtin.val_size)
    genotype = parse_genotype("100|10|100")  # the built-in sets' task ids are those of before
    assert spec == TrainSpec(dataset="mnist", epochs=2) and task_id(genotype, spec) == task_id(genotype, TrainSpec(
        dataset="mnist", epochs=2, val_size=10_000))


# ---------------------------------------------------------------------- the local workers' data, fast

def test_the_local_workers_are_started_with_the_runs_data_options(files):
    args = _namespace(["--dataset", str(files["csv"]), "--columns", "mean radius,worst area", "--local-workers", "2"])
    data_fields(args)
    options = cluster_options(args)
    assert options.worker_data == ("--dataset", str(files["csv"].resolve()), "--columns", "mean radius,worst area")
    assert options.local_worker_args()[:4] == list(options.worker_data)
    assert cluster_options(_namespace(["--dataset", "mnist"])).worker_data == ("--dataset", "mnist")
    images = _namespace(["--dataset", str(files["npz"]), "--image-size", "4,4"])
    assert cluster_options(images).worker_data[2:] == ("--image-size", "4,4")
    plain = argparse.ArgumentParser()  # a command without data options gives its workers none
    add_distribution_options(plain)
    assert cluster_options(plain.parse_args([])).worker_data == ()


# ---------------------------------------------------------------------- the local workers' start-up, slow

@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_local_worker_given_data_it_cannot_serve_exits_2_at_start_up_with_one_line(files, capfd):
    """The table has a non-numeric column: the worker says so in one line and exits 2 before asking for
    work; it is not restarted, and the cluster stops the run with the reason instead of waiting forever."""
    options = ClusterOptions(bind="tcp://127.0.0.1:*", local_workers=1, threads=1, log_level="warning",
                             worker_data=("--dataset", str(files["csv_bad"])))
    with Cluster(options) as cluster:
        failure: list[ClusterError] = []

        def refused() -> bool:
            try:
                cluster.check()
            except ClusterError as exc:
                failure.append(exc)
            return bool(failure)

        wait_until(refused, 90.0, "the local worker's refusal")
        assert cluster.workers.unfit == {0} and cluster.stats()["worker_restarts"] == 0
        assert cluster.workers.pids == [] and cluster.capacity() == 0
    assert "exited with status 2" in str(failure[0]) and "evovae worker: error:" in str(failure[0])
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("evovae worker: error:")]
    assert len(lines) == 1, err
    assert "column 'diagnosis' is not numeric" in lines[0] and str(files["csv_bad"]) in lines[0]
    assert '"worker.started"' not in err  # it refused before asking the head for work


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_search_its_local_workers_cannot_serve_stops_with_the_reason(tmp_path):
    """The head cannot check a built-in set (it has no torch); its local workers do, at start-up."""
    root = tmp_path / "empty-root"
    root.mkdir()
    done = evovae("search", "--dataset", "mnist", "--data-root", str(root), "--local-workers", "2",
                  "--bind", f"tcp://127.0.0.1:{free_port_pair()}", "--population", "2", "--offspring", "2",
                  "--generations", "1", "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--log-level", "warning",
                  "--log-format", "json", cwd=tmp_path, timeout=170)
    assert done.returncode == 2, done.stdout + done.stderr
    refusals = [line for line in done.stderr.splitlines() if line.startswith("evovae worker: error:")]
    assert len(refusals) == 2 and all(f"'mnist' not found under {root}" in line for line in refusals), done.stderr
    head = [line for line in done.stderr.splitlines() if line.startswith("evovae: error:")]
    assert len(head) == 1 and "all 2 local workers exited with status 2" in head[0], done.stderr


# ---------------------------------------------------------------------- the experiments on own data, slow

def _changed_copy(path) -> None:
    """The same digits with one pixel of one image changed: another fingerprint."""
    images = digits_u8()
    images[11, 4, 4] ^= 1
    np.savez(path, train=images[:DIGITS_TRAIN], test=images[DIGITS_TRAIN:])


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compare_on_digits_npz_trains_every_search_on_it_and_a_resume_refuses_a_changed_file(tmp_path):
    data = write_digits_npz(tmp_path)
    run = tmp_path / "cmp"
    done = evovae("experiment", "compare", "--preset", "tiny", "--dataset", str(data), "--fidelity-count", "3",
                  "--run-dir", str(run), "--bind", f"tcp://127.0.0.1:{free_port_pair()}", "--log-format", "json",
                  "--log-level", "info", cwd=tmp_path, timeout=580)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    config = json.loads((run / "compare.json").read_text())
    assert (config["dataset"], config["data_sha256"], config["likelihood"]) == (str(data), _sha256(data), "bernoulli")
    assert config["preset"]["val_size"] == 200  # the tiny preset's (a fifth of the 1,500 digits would be 300)
    results = json.loads((run / "results.json").read_text())
    spec = results["spec"]
    assert (spec["dataset"], spec["data_sha256"], spec["val_size"]) == (str(data), _sha256(data), 200)
    preset = COMPARE_PRESETS["tiny"]
    assert len(results["searches"]) == preset.seeds * len(preset.arms) and results["fidelity"]["count"] == 3
    evaluations = [e for s in results["searches"] for e in s["evaluations"]]
    assert evaluations and all(e["loss"] > 0 for e in evaluations if e["loss"] is not None)
    assert all(s["retrain"]["ok"] and s["retrain"]["test_loss"] > 0 for s in results["searches"] if s["best"])
    data_lines = [json.loads(line) for line in done.stderr.splitlines() if '"worker.data"' in line]
    assert len(data_lines) == 2 and all(str(data) in d["data"] for d in data_lines)  # both local workers checked it
    assert (run / "report.md").is_file() and (run / "anytime.png").is_file()

    report = (run / "results.json").stat().st_mtime_ns
    _changed_copy(data)
    resumed = evovae("experiment", "compare", "--resume", str(run), cwd=tmp_path, timeout=120)
    assert resumed.returncode == 2
    assert resumed.stderr.count("\n") == 1 and "has changed since this run was started" in resumed.stderr
    assert str(data) in resumed.stderr and (run / "results.json").stat().st_mtime_ns == report


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_paper_on_digits_npz_draws_8x8_figures_and_a_resume_refuses_a_changed_file(tmp_path):
    from PIL import Image

    from evo.experiments.presets import PRESETS

    data = write_digits_npz(tmp_path)
    out = tmp_path / "paper"
    done = evovae("experiment", "paper", "--dataset", str(data), "--preset", "tiny", "--out", str(out),
                  "--log-format", "json", cwd=tmp_path, timeout=580)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    stored = json.loads((out / "experiment.json").read_text())["config"]
    assert (stored["dataset"], stored["data_sha256"], stored["likelihood"]) == (str(data), _sha256(data), "bernoulli")
    results = json.loads((out / "results.json").read_text())
    protocol = results["protocol"]
    assert (protocol["data_name"], protocol["input_shape"], protocol["data_kind"]) == ("digits", [8, 8], "array")
    assert (protocol["validation_images"], protocol["test_images"]) == (300, len(digits_u8()) - DIGITS_TRAIN)
    assert all(s["evaluation_count"] and s["best"] for s in results["searches"])
    assert all(r["ok"] and r["test"]["loss"] > 0 for r in results["retrained"].values())
    steps, samples = PRESETS["tiny"].manifold_steps, PRESETS["tiny"].samples
    sizes = {"figure-4": (steps * 8, steps * 8), "figure-5": (8 * 10 + 2, samples // 8 * 10 + 2)}  # 8x8 images
    drawn = [f for f in results["figures"] if f["kind"] in sizes]
    assert len(drawn) == 4
    for fig in drawn:
        with Image.open(out / fig["file"]) as image:
            assert image.size == sizes[fig["kind"]], fig
    report = (out / "report.md").read_text()
    assert f"`{data}`: array, 8x8 per example; SHA-256 `{_sha256(data)[:16]}" in report
    assert "64-400-20-400-64" in report and all(f"]({f['file']})" in report for f in results["figures"])

    progress = (out / "progress.json").read_text()
    _changed_copy(data)
    resumed = evovae("experiment", "paper", "--resume", str(out), cwd=tmp_path, timeout=120)
    assert resumed.returncode == 2
    assert resumed.stderr.count("\n") == 1 and "has changed since this run was started" in resumed.stderr
    assert (out / "progress.json").read_text() == progress  # the run was not even opened


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_paper_on_a_table_validates_on_a_fifth_and_says_why_it_draws_no_images(tmp_path, files):
    out = tmp_path / "paper"
    done = evovae("experiment", "paper", "--dataset", str(files["csv"]), "--preset", "tiny", "--out", str(out),
                  "--log-format", "json", cwd=tmp_path, timeout=580)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    protocol = results["protocol"]
    assert (protocol["data_kind"], protocol["likelihood"], protocol["input_shape"]) == ("table", "gaussian", [30])
    assert (protocol["validation_images"], protocol["test_images"], protocol["train_images"]) == (113, 113, 343)
    assert "standardised" in results["metric"]
    kinds = [f["kind"] for f in results["figures"]]
    assert "figure-4" not in kinds and "figure-5" not in kinds and "figure-2-3" in kinds
    skipped = [f for f in results["figures"] if f["file"] is None]
    assert len(skipped) == 1 and "the data is a table of 30 columns, not images" in skipped[0]["caption"]
    report = (out / "report.md").read_text()
    assert f"*figures-4-5*: {skipped[0]['caption']}" in report and "30-400-20-400-30" in report
    assert not list(out.glob("manifold-*.png")) and not list(out.glob("samples-*.png"))


# ---------------------------------------------------------------------- bad own data in the experiments, fast

@pytest.mark.parametrize("experiment", ["paper", "compare"])
@pytest.mark.parametrize(("options", "piece"), [
    (["--dataset", "{csv_bad}"], "column 'diagnosis' is not numeric"),
    (["--dataset", "{csv}", "--val-size", "400"], "569 examples are too few for a validation split of 400"),
    (["--dataset", "{npz}", "--columns", "a"], "--columns"),
])
def test_bad_own_data_is_one_line_exit_2_and_no_run_directory(files, tmp_path, capsys, experiment, options, piece):
    from evo.cli.experiment import main

    out = tmp_path / "run"
    argv = [o.format(**files) for o in options] + (["--out", str(out)] if experiment == "paper" else
                                                   ["--run-dir", str(out)])
    assert main([experiment, "--preset", "tiny", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and piece in err, err
    assert not out.exists()
