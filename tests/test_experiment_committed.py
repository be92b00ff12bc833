"""The committed experiment report (docs/results/*/): its tables agree with its results.json,
and every figure it shows is there. Fast: reads files only."""
import json
import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
def _of_format(fmt: str) -> list[Path]:
    if not RESULTS.is_dir():
        return []
    return sorted(p for p in RESULTS.glob("*") if (p / "results.json").is_file()
                  and json.loads((p / "results.json").read_text()).get("format") == fmt)


RUNS = _of_format("evovae-experiment")    # the paper experiment's reports
COMPARES = _of_format("evovae-compare")   # the strategy comparisons'


def _cells(line):
    return [c.strip().replace("\\|", "|").strip("`") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _table(report, name):
    lines = report.splitlines()
    start = lines.index(f"<!-- table:{name} -->") + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    header, _, *body = rows
    return [dict(zip(header, row, strict=True)) for row in body]


def _f(value):
    return "n/a" if value is None else f"{value:.2f}"


def _pm(stats):
    if not stats["n"]:
        return "-"
    return _f(stats["mean"]) if stats["n"] == 1 else f"{_f(stats['mean'])} ± {_f(stats['std'])}"


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_committed_report_matches_its_results(run):
    results = json.loads((run / "results.json").read_text())
    report = (run / "report.md").read_text()
    table1 = _table(report, "table1")
    assert len(table1) == len(results["table1"]) > 0
    for row, data in zip(table1, results["table1"], strict=True):
        assert row["Architecture"] == data["genotype"]
        assert int(row["Parameters"].replace(",", "")) == data["parameters"]
        assert [row[c] for c in ("Search loss", "Validation loss", "Test loss", "Test recon", "Test KL")] == [
            _f(data[k]) for k in ("search_loss", "val_loss", "test_loss", "test_recon", "test_kl")]
        search = next(s for s in results["searches"] if s["name"] == data["search"])
        evaluation = next(e for e in search["evaluations"] if e["genotype"] == data["genotype"])
        assert evaluation["loss"] == data["search_loss"] == search[data["role"]]["loss"]
        losses = [e["loss"] for e in search["evaluations"] if e["loss"] is not None]
        assert data["search_loss"] == (min(losses) if data["role"] == "best" else max(losses))
    comparison = _table(report, "comparison")
    assert len(comparison) == len(results["comparison"])
    for row, data in zip(comparison, results["comparison"], strict=True):
        assert row["Method"] == data["method"]
        assert [row["Search loss"], row["Validation loss"], row["Test loss"]] == [
            _pm(data["search_loss"]), _pm(data["val_loss"]), _pm(data["test_loss"])]
    for search, row in zip(results["searches"], _table(report, "searches"), strict=True):
        assert row["Search"] == search["name"] and int(row["Evaluations"]) == len(search["evaluations"])
    for fig in results["figures"]:
        assert (run / fig["file"]).is_file() and f"]({fig['file']})" in report


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_committed_report_is_rendered_from_its_results_by_todays_code(run):
    from evo.experiments.report import render_report

    assert render_report(json.loads((run / "results.json").read_text())) == (run / "report.md").read_text()


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_committed_searches_are_the_ones_todays_strategies_make(run):
    """Reproducible with the same preset: told the committed losses, the searches of today's experiment ask for
    exactly the committed genotypes, generation by generation, and end on the committed bests."""
    from evo.evaluation import Evaluation
    from evo.experiments.presets import ExperimentConfig, Preset
    from evo.genotype import parse_genotype
    from evo.strategies import make_strategy
    from evo.strategy import StopReason

    results = json.loads((run / "results.json").read_text())
    preset = {**results["preset"], "search_epochs": tuple(results["preset"]["search_epochs"]),
              "random_epochs": tuple(results["preset"]["random_epochs"])}
    protocol = results["protocol"]
    config = ExperimentConfig(Preset(**preset), dataset=protocol["dataset"], seed=protocol["seed"],
                              split_seed=protocol["split_seed"])
    plans = config.searches()
    assert [p.name for p in plans] == [s["name"] for s in results["searches"]]
    for plan, search in zip(plans, results["searches"], strict=True):
        assert plan.spec.to_dict() == {k: v for k, v in search["spec"].items() if k in plan.spec.to_dict()}
        losses = {e["genotype"]: e["loss"] for e in search["evaluations"]}
        by_generation = {}
        for e in search["evaluations"]:
            by_generation.setdefault(e["generation"], []).append(e["genotype"])
        strategy = make_strategy(plan.options)
        while not strategy.done:
            batch = strategy.ask()
            assert [str(c.genotype) for c in batch] == by_generation.get(strategy.generation, []), plan.name
            strategy.tell([Evaluation.succeeded(c.genotype, losses[str(c.genotype)], epochs=c.epochs) for c in batch])
        assert strategy.stop_reason is StopReason.GENERATIONS, plan.name   # it ran the generations it was given
        assert strategy.best.loss == search["best"]["loss"]
        assert str(strategy.best.genotype) == search["best"]["genotype"]
        assert [g["best_loss"] for g in search["generations"]] == [r.best.loss for r in strategy.history]
        assert len(strategy.evaluations) == len(search["evaluations"]) and all(
            parse_genotype(e["genotype"]) in strategy.seen for e in search["evaluations"])


@pytest.mark.parametrize("run", COMPARES, ids=[p.name for p in COMPARES])
def test_committed_comparison_is_summarized_and_rendered_by_todays_code(run):
    """Re-render with ``python -m evo.experiments.compare_report docs/results/DIR`` after a change to the
    summary or the report (it recomputes the summary from the searches and rewrites report.md and the figures)."""
    from evo.experiments.compare import default_arm_of, summarize
    from evo.experiments.compare_report import preset_of, render_compare_report

    results = json.loads((run / "results.json").read_text())
    again = summarize({"searches": results["searches"]}, preset_of(results), default_arm_of(results))
    assert json.loads(json.dumps(again)) == results["summary"]
    assert render_compare_report(results) == (run / "report.md").read_text()
    for figure in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (run / "report.md").read_text()):
        assert (run / figure).is_file(), figure


@pytest.mark.parametrize("run", COMPARES, ids=[p.name for p in COMPARES])
def test_committed_comparison_tables_agree_with_its_searches(run):
    """The paired tables (against the default and against random search) and the compute to reach random
    search's median final loss, read back from report.md, recomputed here from the searches themselves."""
    import numpy as np

    results = json.loads((run / "results.json").read_text())
    report = (run / "report.md").read_text()
    by = {(s["arm"], s["seed"]): s for s in results["searches"]}
    arms, seeds, default = results["preset"]["arms"], range(results["preset"]["seeds"]), results["summary"]["default"]
    for name, reference, sign in (("paired", default, 1), ("paired-random", "random", -1)):
        if reference not in arms:
            continue
        rows = _table(report, name)
        assert [r.get("other arm", r.get("arm")) for r in rows] == [a for a in arms if a != reference]
        for row in rows:
            arm = row.get("other arm", row.get("arm"))
            differences = [sign * (by[arm, k]["retrain"]["test_loss"] - by[reference, k]["retrain"]["test_loss"])
                           for k in seeds]
            assert row["test ELBO"].startswith(f"{np.mean(differences):+.2f} ["), (name, arm)
    if "random" in arms:
        target = float(np.median([by["random", k]["best"]["loss"] for k in seeds]))
        for row in _table(report, "reach"):
            reach = [next((float(e) for e, b in by[row["arm"], k]["anytime"] if b is not None and b <= target),
                          float("inf")) for k in seeds]
            assert row["epochs per seed"] == ", ".join("not reached" if r == float("inf") else f"{r:.0f}"
                                                       for r in reach)


@pytest.mark.parametrize("run", COMPARES, ids=[p.name for p in COMPARES])
def test_committed_comparison_has_every_arm_and_seed_at_the_same_budget(run):
    from evo.experiments.compare import CONTINUING

    results = json.loads((run / "results.json").read_text())
    p = results["preset"]
    cells = {(s["arm"], s["seed"]) for s in results["searches"]}
    assert cells == {(arm, seed) for arm in p["arms"] for seed in range(p["seeds"])}
    for s in results["searches"]:
        assert s["epochs_total"] <= p["budget_epochs"]
        if s["arm"] in CONTINUING:  # a promotion continues from its rung below: a genotype costs its highest rung
            highest: dict[str, int] = {}
            for e in s["evaluations"]:
                highest[e["genotype"]] = max(highest.get(e["genotype"], 0), e["epochs"])
            assert sum(highest.values()) == s["epochs_total"]
        else:
            assert sum(e["epochs"] for e in s["evaluations"]) == s["epochs_total"]
        assert s["anytime"][-1][0] == s["epochs_total"]
        # both are estimates (the ELBO with one z sample, the IW bound with k); on a model whose posterior
        # collapsed (KL ~ 0: the 8x8 digits' plateau) they agree up to that noise, so allow 0.1%
        r = s["retrain"]
        assert r["ok"] and r["test_iw_loss"] <= r["test_loss"] + 1e-3 * abs(r["test_loss"])
