"""``evovae experiment paper`` end to end on the tiny preset: real worker processes over ZeroMQ,
every file of the report written, and the report's tables equal to results.json and the searches."""
import json
import math
import re

import pytest
from PIL import Image

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
    return [dict(zip(header, row)) for row in body]


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
        model, info = load_model(out / r["model_dir"])
        assert str(model.genotype) == r["genotype"] == info["genotype"]
        assert info["losses"]["validation_curve"] == r["validation_curve"]
    assert results["retrained"]["hand-designed"]["genotype"] == str(HAND_DESIGNED)


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
    assert broker["completed"] == trained > 0 and broker["workers_seen"] >= 2
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
    for row, data in zip(rows, results["table1"]):
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
    for row, c in zip(rows, data):
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
    assert random_row["test_loss"]["std"] == pytest.approx(math.sqrt(sum((t - mean) ** 2 for t in tests) / (len(tests) - 1)))
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
    assert "already holds a report" in capsys.readouterr().err
    assert main(["paper", "--dataset", "synthetic", "--preset", "tiny", "--population", "0",
                 "--out", str(tmp_path / "x")]) == 2
    assert "population" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
