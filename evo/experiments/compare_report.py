"""The comparison's figures (matplotlib, written as PNG) and its report (Markdown), from results.json."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["draw_anytime", "draw_fidelity", "render_compare_report"]

COLOURS = {"multifidelity": "tab:red", "evolution": "tab:blue", "random": "tab:gray", "regularized": "tab:green",
           "tpe": "tab:purple",
           "tpe-multifidelity": "tab:orange"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_anytime(summary: dict[str, Any], path: Path, title: str) -> None:
    """Best validation loss so far against cumulative training epochs: median and interquartile band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, c in summary["curves"].items():
        x = c["epochs"]
        med = [math.nan if v is None else v for v in c["median"]]
        lo = [math.nan if v is None else v for v in c["q25"]]
        hi = [math.nan if v is None else v for v in c["q75"]]
        colour = COLOURS.get(arm)
        ax.plot(x, med, label=arm, color=colour, lw=2 if arm == summary["default"] else 1.3)
        ax.fill_between(x, lo, hi, color=colour, alpha=0.15)
    ax.set_xlabel("cumulative training epochs")
    ax.set_ylabel("best validation loss so far (nats, negative ELBO)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_fidelity(study: dict[str, Any], path: Path) -> None:
    """Rank correlation of the loss after k epochs with the loss after the last, and the 1-epoch scatter."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    ks = [row["epochs"] for row in study["table"]]
    left.plot(ks, [row["spearman"] for row in study["table"]], "o-", label="Spearman rho")
    left.plot(ks, [row["kendall"] for row in study["table"]], "s-", label="Kendall tau-b")
    left.set_xscale("log")
    left.set_xticks(ks, [str(k) for k in ks])
    left.set_xlabel("epochs trained")
    left.set_ylabel(f"rank correlation with the {max(ks)}-epoch loss")
    left.set_ylim(-0.1, 1.05)
    left.legend()
    left.grid(alpha=0.3)
    full = str(max(ks))
    for k in ks[:-1]:
        right.scatter([g["losses"][full] for g in study["genotypes"]],
                      [g["losses"][str(k)] for g in study["genotypes"]], s=14, label=f"after {k}")
    right.set_xlabel(f"validation loss after {full} epochs")
    right.set_ylabel("validation loss after k epochs")
    right.legend()
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _pm(s: dict[str, Any]) -> str:
    return "n/a" if s.get("mean") is None else f"{s['mean']:.2f} ± {s['sd']:.2f} (n={s['n']})"


def _ci(c: dict[str, Any]) -> str:
    if not c.get("n"):
        return "n/a"
    mark = " **excludes 0**" if c["excludes_zero"] else ""
    return f"{c['mean']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]{mark}"


def _likelihood_text(spec: dict[str, Any]) -> str:
    if spec.get("likelihood", "bernoulli") == "gaussian":
        return ("nats per example: the Gaussian negative log-likelihood of the standardised features, unit "
                "variance, summed over the features")
    return ("nats per example: BCE summed over every input value (the 784 pixels of a 28x28 image) on "
            "continuous intensities in [0, 1], not binarised, so not a normalised likelihood")


def _verdict(summary: dict[str, Any]) -> list[str]:
    d = summary["default"]
    lines = []
    n = max((v["val_loss"].get("n", 0) for v in summary["paired"].values()), default=0)
    if n < 5:
        lines.append(f"- Only {n} seeds: a bootstrap over so few pairs is not a finding; read these lines as a "
                     "smoke test.")
    for other, by_key in summary["paired"].items():
        t = by_key["test_loss"]
        if not t.get("n"):
            continue
        if t["excludes_zero"]:
            word = "beats" if t["mean"] > 0 else "loses to"
            lines.append(f"- {d} {word} {other} on the retrained test ELBO by {abs(t['mean']):.2f} nats "
                         f"(paired over {t['n']} seeds, 95% bootstrap interval excludes zero).")
        else:
            lines.append(f"- {d} vs {other}: no difference we can tell apart from zero on the retrained test ELBO "
                         f"(mean {t['mean']:+.2f} nats, interval {t['low']:+.2f} to {t['high']:+.2f}, "
                         f"{t['n']} seeds).")
    reach = summary["targets"].get("reach_random_median")
    if reach:
        lines.append(f"- {d} reached random search's median final validation loss ({reach['target_val_loss']:.2f}) "
                     f"after a median of {_f(reach['median_epochs'], 0)} epochs, {_f(reach['ratio'])} of random "
                     f"search's {reach['random_epochs']:.0f}: target (<= 1/3) "
                     + ("met." if reach["met"] else "**missed**."))
    for name in ("test_beats_random", "test_beats_tpe", "never_worse_than_evolution"):
        if name in summary["targets"]:
            met = summary["targets"][name]["met"]
            lines.append(f"- target `{name}`: " + ("met." if met else "**missed**."))
    return lines


def render_compare_report(results: dict[str, Any]) -> str:
    p, s = results["preset"], results["summary"]
    spec = results["spec"]
    out = [f"# Strategies compared at equal compute: {results['dataset']}, preset `{p['name']}`", "",
           f"{p['summary']}. Generated by `{results['command']}`; every number below is in results.json.", "",
           "## What was measured", "",
           f"- Data: {results['dataset']}, {spec['train_subset'] or 'all'} training examples, a fixed validation "
           f"split of {spec['val_size']} (split seed {spec['split_seed']}); the test split only for retraining.",
           f"- Budget: {p['budget_epochs']} training epochs per search (a candidate costs the epochs it is "
           f"asked to train; a promoted multi-fidelity candidate is retrained from scratch and pays every rung), "
           f"{p['seeds']} seeds per arm (seeds 0..{p['seeds'] - 1}; the same seed gives every arm the same "
           "training seeds and split).",
           f"- Search metric: validation negative ELBO after {p['epochs']} epochs ({_likelihood_text(spec)}, plus "
           "KL(q(z|x) || N(0, I)); one z sample).",
           f"- Final metric: each search's best genotype retrained {p['retrain_epochs']} epochs, then on the test "
           f"split the negative ELBO and the negative importance-weighted bound with k = {p['iw_samples']} "
           "samples (Burda et al.), both in nats per image.",
           "- Arms: " + "; ".join(f"`{a}`: {results['arms'][a]}" for a in p["arms"]) + ".",
           f"- Multi-fidelity rungs: {','.join(map(str, p['fidelities']))} epochs, eta = {p['eta']}; population "
           f"{p['population']}, offspring {p['offspring']}; aging evolution P = {p['population']}, "
           f"S = {p['tournament_size']}; TPE start-up trials {p['startup_trials']}.", "",
           "## Verdict", "", *_verdict(s), "",
           "## Anytime performance", "", "![anytime](anytime.png)", "",
           "Median (line) and interquartile band over seeds of the best validation loss so far, against the "
           "cumulative training epochs spent.", "",
           "## Per arm (mean ± sd over seeds)", "",
           "| arm | best validation loss | retrained test ELBO | retrained test IW bound | evaluations |",
           "|---|---|---|---|---|"]
    for arm, st in s["arms"].items():
        out.append(f"| {arm} | {_pm(st['val_loss'])} | {_pm(st['test_loss'])} | {_pm(st['test_iw_loss'])} "
                   f"| {_f(st['evaluations']['mean'], 1)} |")
    out += ["", f"## Paired differences: other arm minus `{s['default']}` (positive: `{s['default']}` is better)",
            "", "Mean over seeds with a 95% percentile bootstrap interval (10,000 resamples of the seed pairs).", "",
            "| other arm | validation loss | test ELBO | test IW bound |", "|---|---|---|---|"]
    for other, by_key in s["paired"].items():
        out.append(f"| {other} | {_ci(by_key['val_loss'])} | {_ci(by_key['test_loss'])} | "
                   f"{_ci(by_key['test_iw_loss'])} |")
    study = results.get("fidelity")
    if study:
        out += ["", "## Fidelity study", "",
                f"{study['trained']} random genotypes (seed {study['seed']}) trained {max(study['epochs'])} epochs "
                "on the same data; the loss after k epochs is read off the same run (training is prefix-stable: "
                "a k-epoch run is the first k epochs of a longer one).", "",
                "| epochs | Spearman rho | Kendall tau-b | top-quarter overlap | median loss |",
                "|---|---|---|---|---|"]
        for row in study["table"]:
            out.append(f"| {row['epochs']} | {_f(row['spearman'])} | {_f(row['kendall'])} | "
                       f"{_f(row['top_quarter_overlap'])} | {_f(row['median_loss'])} |")
        out += ["", "![fidelity](fidelity.png)"]
    out += ["", "## Best genotypes per seed", "",
            "| arm | " + " | ".join(f"seed {i}" for i in range(p["seeds"])) + " |", "|---|" + "---|" * p["seeds"]]
    for arm, st in s["arms"].items():
        out.append(f"| {arm} | " + " | ".join(f"`{g}`" if g else "-" for g in st["best_genotypes"]) + " |")
    out += ["", f"Machine: {results['machine']}; wall time {results['seconds'] / 60:.1f} min."]
    return "\n".join(out) + "\n"
