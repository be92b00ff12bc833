"""``evovae experiment paper`` end to end on the tiny preset: real worker processes over ZeroMQ,
every file of the report written, the report's tables equal to results.json and the searches, and a run
killed with SIGKILL (twice: during the searches and while the figures' models train) that resumes without
training again anything that finished and writes the report an uninterrupted run writes."""
import json
import math
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from PIL import Image

from distributed_helpers import Process, wait_until
from evo.cli.experiment import main
from evo.experiments.paper import HAND_DESIGNED, PRESETS, render_report
from gpuworker.export import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment") / "run"
    status = main(["paper", "--dataset", "synthetic", "--preset", "tiny", "--out", str(out), "--seed", "3",
                   "--log-format", "json"])
    assert status == 0
    return out, json.loads((out / "results.json").read_text()), (out / "report.md").read_text()


def _cells(line):
    """The cells of a Markdown table row; an escaped pipe (\\|) stays inside its cell."""
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [c.strip().replace("\\|", "|").strip("`") for c in cells]


def _table(report, name):
    lines = report.splitlines()
    start = lines.index(f"<!-- table:{name} -->") + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    header, rule, *body = rows
    assert set("".join(rule)) <= {"-"}
    return [dict(zip(header, row, strict=True)) for row in body]


def _num(text):
    return float(text.replace(",", ""))


def _f(value):
    return f"{value:.2f}"


def test_every_file_of_the_report_is_written(run):
    out, results, report = run
    figures = results["figures"]
    kinds = [f["kind"] for f in figures]
    assert kinds.count("figure-2-3") == 1 and kinds.count("figure-4") == 2 and kinds.count("figure-5") == 2
    steps = PRESETS["tiny"].manifold_steps
    for fig in figures:
        path = out / fig["file"]
        with Image.open(path) as image:
            assert image.format == "PNG"
            size = image.size
        assert f"![{fig['kind']}]({fig['file']})" in report
        if fig["kind"] == "figure-4":
            assert size == (steps * 16, steps * 16)  # synthetic images are 16x16, no padding
        if fig["kind"] == "figure-5":
            assert size == (8 * 18 + 2, 2 * 18 + 2)  # 16 samples, 8 a row
    for role, r in results["retrained"].items():
        if role.endswith(("/best", "/best-latent2")) and role.startswith("evolution"):  # the figures' models
            assert r["trained_by"] == "head"
            model, info = load_model(out / r["model_dir"])
            assert str(model.genotype) == r["genotype"] == info["genotype"]
            assert info["losses"]["validation_curve"] == r["validation_curve"]
        else:  # numbers only: trained by the workers
            assert r["trained_by"] == "worker" and r["model_dir"] is None
        assert len(r["validation_curve"]) == r["epochs"] and r["test"]["loss"] > 0
    assert results["retrained"]["hand-designed"]["genotype"] == str(HAND_DESIGNED)
    assert sorted(p.name for p in (out / "searches").iterdir()) == sorted(s["name"] for s in results["searches"])


def test_report_is_rendered_from_results_alone(run):
    _, results, report = run
    assert render_report(results) == report


def test_protocol_and_metric_are_stated(run):
    _, results, report = run
    assert "binary cross-entropy summed over all pixels" in report and "nats per image" in report
    assert "one z sample" in report
    p = results["protocol"]
    assert (p["population"], p["offspring"], p["generations"], p["budget"]) == (3, 3, 2, 6)
    assert p["train_images"] == 600 and p["validation_images"] == 300 and p["seed"] == 3
    assert p["random_seeds"] == [3, 4]
    for needle in ("mu = 3, lambda = 3, 2 generations", "6 evaluations per search", "split seed 0",
                   "2 seeds (3, 4)", "retraining | 2 epochs"):
        assert needle in report, needle


def test_searches_ran_through_the_broker_with_their_budget(run):
    _, results, _ = run
    names = [s["name"] for s in results["searches"]]
    assert names == ["evolution-1ep", "evolution-2ep", "random-1ep-seed3", "random-1ep-seed4"]
    broker = results["transport"]["broker"]
    trained = sum(s["trained"] for s in results["searches"])
    on_workers = {(r["genotype"], r["epochs"]) for r in results["retrained"].values() if r["trained_by"] == "worker"}
    assert broker["completed"] == trained + len(on_workers) and trained > 0 and broker["workers_seen"] >= 2
    for s in results["searches"]:
        evaluations = s["evaluations"]
        assert s["evaluation_count"] == len(evaluations) == sum(g["evaluated"] for g in s["generations"])
        assert len(evaluations) <= 6 and len({e["genotype"] for e in evaluations}) == len(evaluations)
        if s["strategy"] == "RandomSearch":
            assert len(evaluations) == 6
        assert all(e["loss"] is not None and e["loss"] > 0 for e in evaluations)
        assert all(len(e["curve"]) == s["epochs"] and e["curve"][-1] == e["loss"] for e in evaluations)
        best = min(evaluations, key=lambda e: e["loss"])
        worst = max(evaluations, key=lambda e: e["loss"])
        assert s["best"] == best and s["worst"] == worst
        assert s["generations"][-1]["best_loss"] == best["loss"]
    # a reused evaluation is the earlier result for that genotype at those epochs, unchanged
    first = {}
    for s in results["searches"]:
        for e in s["evaluations"]:
            key = (e["genotype"], s["epochs"])
            if e["reused"]:
                assert first[key]["loss"] == e["loss"]
            else:
                assert key not in first
                first.setdefault(key, e)
    assert results["searches"][2]["reused"] >= 3  # random seed 3 starts where evolution seed 3 started


def test_table_one_matches_results_and_the_searches(run):
    _, results, report = run
    rows = _table(report, "table1")
    assert len(rows) == len(results["table1"]) == 4
    by_name = {s["name"]: s for s in results["searches"]}
    for row, data in zip(rows, results["table1"], strict=True):
        assert row["Search"] == f"{data['search_epochs']}-epoch" and row["Which"] == data["role"]
        assert row["Architecture"] == data["genotype"]
        assert _num(row["Parameters"]) == data["parameters"]
        for column, key in (("Search loss", "search_loss"), ("Validation loss", "val_loss"),
                            ("Test loss", "test_loss"), ("Test recon", "test_recon"), ("Test KL", "test_kl")):
            assert row[column] == _f(data[key]), column
        search = by_name[data["search"]]
        chosen = search[data["role"]]
        assert chosen["genotype"] == data["genotype"] and chosen["loss"] == data["search_loss"]
        retrained = results["retrained"][f"{data['search']}/{data['role']}"]
        assert retrained["validation"]["loss"] == data["val_loss"] == retrained["validation_curve"][-1]
        assert retrained["test"]["loss"] == data["test_loss"]
        assert len(retrained["validation_curve"]) == results["protocol"]["retrain_epochs"]
        assert data["test_loss"] == pytest.approx(data["test_recon"] + data["test_kl"])


def test_comparison_table_matches_results(run):
    _, results, report = run
    rows = _table(report, "comparison")
    data = results["comparison"]
    assert [r["Method"] for r in rows] == [c["method"] for c in data]
    assert [c["kind"] for c in data] == ["evolution", "evolution", "random", "hand-designed"]
    for row, c in zip(rows, data, strict=True):
        assert row["Architecture(s)"].replace("`", "") == ", ".join(c["genotypes"])
        for column, key in (("Search loss", "search_loss"), ("Validation loss", "val_loss"),
                            ("Test loss", "test_loss")):
            stats = c[key]
            if stats["n"] == 0:
                assert row[column] == "-"
            elif stats["n"] == 1:
                assert row[column] == _f(stats["mean"])
            else:
                assert row[column] == f"{_f(stats['mean'])} ± {_f(stats['std'])}"
    random_row = data[2]
    seeds = [s for s in results["searches"] if s["strategy"] == "RandomSearch"]
    tests = [results["retrained"][f"{s['name']}/best"]["test"]["loss"] for s in seeds]
    assert random_row["test_loss"]["values"] == tests
    mean = sum(tests) / len(tests)
    assert random_row["test_loss"]["mean"] == pytest.approx(mean)
    std = math.sqrt(sum((t - mean) ** 2 for t in tests) / (len(tests) - 1))
    assert random_row["test_loss"]["std"] == pytest.approx(std)
    assert random_row["search_loss"]["values"] == [s["best"]["loss"] for s in seeds]


def test_searches_table_matches_results(run):
    _, results, report = run
    rows = _table(report, "searches")
    for row, s in zip(rows, results["searches"], strict=True):
        assert row["Search"] == s["name"] and int(row["Evaluations"]) == s["evaluation_count"]
        assert int(row["Reused"]) == s["reused"] and row["Best loss"] == _f(s["best"]["loss"])
        assert row["Best architecture"] == s["best"]["genotype"]


def test_bad_options_and_an_existing_report_are_refused(run, tmp_path, capsys):
    out, _, _ = run
    assert main(["paper", "--dataset", "synthetic", "--preset", "tiny", "--out", str(out)]) == 2
    assert f"holds an experiment already: continue it with --resume {out}" in capsys.readouterr().err
    assert main(["paper", "--dataset", "synthetic", "--preset", "tiny", "--population", "0",
                 "--out", str(tmp_path / "x")]) == 2
    assert "population" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ killed with SIGKILL, resumed

def _group(pgid):
    """Live processes of process group ``pgid`` (the experiment, its workers, its retraining processes)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _cached_ids(run_dir):
    """Task ids of every result the experiment has persisted (its shared cache)."""
    con = sqlite3.connect(f"file:{run_dir / 'results.sqlite'}?mode=ro", uri=True)
    try:
        return {row[0] for row in con.execute("SELECT task_id FROM results")}
    finally:
        con.close()


def _journaled(journal):
    if not journal.is_file():
        return 0
    con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # created, schema not there yet
        return 0
    finally:
        con.close()


def _kill_when(process, ready, what):
    """SIGKILL ``process`` once ``ready()`` holds, then wait until every process it started has gone."""
    try:
        wait_until(lambda: ready() or not process.alive(), 180, what, interval=0.05, fail=process.describe)
        assert process.alive(), f"it finished before {what}:\n{process.describe()}"
        process.signal(signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL
        wait_until(lambda: not _group(process.pid), 60, "the killed experiment's workers and retraining processes "
                                                        "to exit", interval=0.1)
    finally:
        process.kill_group()


def _completed(process, event, key):
    return {r[key] for r in process.log.records() if r.get("event") == event}


def test_killed_twice_with_sigkill_it_resumes_without_training_again_what_finished(run, tmp_path):
    _, reference, _ = run
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "evo.cli", "experiment", "paper", "--log-format", "json", "--log-level", "info"]
    first = Process("first", [*argv, "--dataset", "synthetic", "--preset", "tiny", "--seed", "3", "--out", str(out)],
                    tmp_path)
    _kill_when(first, lambda: _journaled(out / "searches" / "evolution-2ep" / "journal.sqlite") >= 1,
               "the second search's first result")
    after_first = _cached_ids(out)
    assert not (out / "searches" / "random-1ep-seed4" / "result.json").exists()

    second = Process("second", [*argv, "--resume", str(out)], tmp_path)
    _kill_when(second, lambda: list(out.glob("models/*/model.json")), "the first model of the figures")
    after_second = _cached_ids(out)
    models = {p.parent: p.stat().st_mtime_ns for p in out.glob("models/*/model.json")}

    third = Process("third", [*argv, "--resume", str(out)], tmp_path)
    try:
        assert third.wait(300) == 0, third.describe()
    finally:
        third.kill_group()
    # what finished before a kill was never trained again: no task, no model
    assert after_first and after_first < after_second
    assert not _completed(second, "task.completed", "task_id") & after_first
    assert not _completed(third, "task.completed", "task_id") & after_second
    assert {p.parent.name for p in out.glob("models/*/model.json")} >= {p.name for p in models}
    assert all(p.joinpath("model.json").stat().st_mtime_ns == t for p, t in models.items())
    assert not {Path(p) for p in _completed(third, "model.saved", "path")} & set(models)
    # and the report is the one an uninterrupted run writes
    results = json.loads((out / "results.json").read_text())
    assert results["timings"]["runs"] == 3 and (out / "report.md").read_text() == render_report(results)
    assert results["table1"] == reference["table1"] and results["comparison"] == reference["comparison"]
    for resumed, whole in zip(results["searches"], reference["searches"], strict=True):
        assert [(e["genotype"], e["loss"], e["reused"]) for e in resumed["evaluations"]] == [
            (e["genotype"], e["loss"], e["reused"]) for e in whole["evaluations"]]


# ------------------------------------------------------------------ served by a remote worker, under CURVE

def test_with_no_local_workers_a_remote_worker_serves_it_under_curve(tmp_path):
    from distributed_helpers import free_port_pair
    from transport.keyfiles import generate

    generate(tmp_path / "head-keys", "head")
    generate(tmp_path / "gpu0-keys", "gpu0")
    allow = tmp_path / "allow"
    allow.mkdir()
    (allow / "gpu0.key").write_bytes((tmp_path / "gpu0-keys" / "gpu0.key").read_bytes())
    port = free_port_pair()
    out = tmp_path / "run"
    head = Process("head", [sys.executable, "-m", "evo.cli", "experiment", "paper", "--dataset", "synthetic",
                            "--preset", "tiny", "--seed", "3", "--search-epochs", "1", "--random-seeds", "0",
                            "--generations", "1", "--retrain-epochs", "1", "--manifold-epochs", "1",
                            "--local-workers", "0", "--bind", f"tcp://127.0.0.1:{port}",
                            "--server-key-secret", str(tmp_path / "head-keys" / "head.key_secret"),
                            "--allow", str(allow), "--out", str(out), "--log-format", "json", "--log-level", "info"],
                   tmp_path)
    worker = Process("worker", [sys.executable, "-m", "evo.cli", "worker", "--connect", f"tcp://127.0.0.1:{port}",
                                "--server-key", str(tmp_path / "head-keys" / "head.key"),
                                "--key", str(tmp_path / "gpu0-keys" / "gpu0.key_secret"), "--threads", "1",
                                "--worker-id", "gpu0", "--log-format", "json"], tmp_path)
    try:
        assert head.wait(300) == 0, head.describe() + "\n" + worker.describe()
    finally:
        head.kill_group()
        worker.kill_group()
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"]["local_workers"] == 0 and results["protocol"]["loopback"] is True
    assert "CURVE" in head.stdout() and "local workers 0" in head.stdout()
    done_by = {r["worker_id"] for r in head.log.records() if r.get("event") == "task.completed"}
    assert done_by == {"gpu0"}
    assert results["transport"]["broker"]["completed"] == 3 + 2  # 3 evaluations, worst + hand-designed retrained
    assert results["retrained"]["evolution-1ep/best"]["trained_by"] == "head"


def test_sigterm_stops_it_and_its_workers_and_says_how_to_continue(tmp_path):
    out = tmp_path / "run"
    head = Process("head", [sys.executable, "-m", "evo.cli", "experiment", "paper", "--dataset", "synthetic",
                            "--preset", "tiny", "--out", str(out), "--log-format", "json"], tmp_path)
    try:
        wait_until(lambda: _journaled(out / "searches" / "evolution-1ep" / "journal.sqlite") >= 1 or not head.alive(),
                   120, "the first result", fail=head.describe)
        head.signal(signal.SIGTERM)
        assert head.wait(30) == 128 + signal.SIGTERM, head.describe()
        wait_until(lambda: not _group(head.pid), 30, "its workers to exit", interval=0.1)
    finally:
        head.kill_group()
    err = head.stderr_path.read_text()
    assert "stopped by SIGTERM" in err and f"continue with: evovae experiment paper --resume {out}" in err
    assert not (out / "results.json").exists() and _cached_ids(out)


def test_a_stop_terminates_the_retraining_processes(tmp_path):
    import threading

    from evo.experiments.retrain import Retraining, train_models
    from evo.head.evaluators import SearchStopped
    from evo.spec import TrainSpec

    spec = TrainSpec(dataset="synthetic", epochs=50, train_subset=600, val_size=300)
    jobs = [Retraining(f"search/{k}", g, spec, weights=True) for k, g in enumerate(("400|20|400", "300|10|300"))]
    stop = threading.Event()
    stop.set()
    with pytest.raises(SearchStopped, match="stopped with 2 models untrained"):
        train_models(tmp_path, jobs, processes=2, threads_each=1, stop=stop)
    assert not list(tmp_path.glob("models/*/model.json"))
    wait_until(lambda: not [p for p in _group(os.getpgid(0)) if p != os.getpid() and _is_child(p)], 30,
               "the retraining processes to be gone")


def _is_child(pid):
    """A child of this process, other than multiprocessing's resource tracker (which lives as long as we do)."""
    try:
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return parent == os.getpid() and b"resource_tracker" not in command
