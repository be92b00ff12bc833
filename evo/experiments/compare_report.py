"""The comparison's figures (matplotlib, written as PNG) and its report (Markdown), from results.json.
``python -m evo.experiments.compare_report RUN_DIR...`` makes a finished comparison's report again."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["draw_anytime", "draw_fidelity", "main", "preset_of", "render_compare_report", "rerender", "write_report"]

COLOURS = {"multifidelity": "tab:red", "evolution": "tab:blue", "random": "tab:gray", "regularized": "tab:green",
           "tpe": "tab:purple", "tpe-multifidelity": "tab:orange", "asha-tpe": "tab:brown", "hyperband-tpe": "tab:pink",
           "asha-evolution": "tab:cyan", "asha-regularized": "tab:olive", "asha-random": "darkgray",
           "hyperband-evolution": "navy", "dehb": "black", "optuna-hyperband": "gold", "smac": "limegreen"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _values(points: list[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in points]


def draw_anytime(summary: dict[str, Any], path: Path, title: str) -> None:
    """Best validation loss so far, median and interquartile band over seeds: against cumulative training
    epochs, and (when the summary has them) against simulated wall clock at each simulated worker count."""
    plt = _pyplot()
    wallclock = summary.get("wallclock") or {}
    panels = [("epochs", None), *((str(n), n) for n in wallclock.get("workers", ()))]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.8), sharey=True, squeeze=False)
    for ax, (key, workers) in zip(axes[0], panels, strict=True):
        for arm, c in summary["curves"].items():
            if workers is None:
                x, band = c["epochs"], c
            else:
                at = wallclock["by_workers"][key]
                x, band = [t / 60 for t in at["grid"]], at["curves"][arm]
            colour = COLOURS.get(arm)
            ax.plot(x, _values(band["median"]), label=arm, color=colour, lw=2 if arm == summary["default"] else 1.3)
            ax.fill_between(x, _values(band["q25"]), _values(band["q75"]), color=colour, alpha=0.15)
        if workers is None:
            ax.set_xlabel("cumulative training epochs")
            ax.set_title(title)
        else:  # to the slowest arm's mean end: a few slow seeds would squeeze every curve to the left
            ends = [st["makespan"]["mean"] for st in wallclock["by_workers"][key]["arms"].values()
                    if st["makespan"]["mean"]]
            if ends:
                ax.set_xlim(0, 1.05 * max(ends) / 60)
            ax.set_xlabel("simulated wall clock (minutes)")
            ax.set_title(f"{workers} simulated worker{'s' if workers > 1 else ''} (measured task seconds)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("best validation loss so far (nats, negative ELBO)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
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
    return ("nats per example: BCE summed over every input value (e.g. the 784 pixels of a 28x28 image) on "
            "continuous intensities in [0, 1], not binarised, so not a normalised likelihood")


def _minutes(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "n/a"
    if math.isinf(seconds):
        return "not reached"
    return f"{seconds / 60:.2f}" if seconds < 600 else f"{seconds / 60:.1f}"


def _epochs(value: float) -> str:
    return "not reached" if math.isinf(value) else f"{value:.0f}"


def _names(items: list[str]) -> str:
    quoted = [f"`{i}`" for i in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


_MEASURES = {"val_loss": "best validation loss", "test_loss": "retrained test ELBO",
             "test_iw_loss": "retrained test IW bound"}


def _against(paired: dict[str, dict[str, Any]], key: str, sign: int) -> tuple[list[str], list[str], list[str]]:
    """(better, worse, undecided) arms on ``key``; ``sign`` +1 when a positive difference favours the arm."""
    better, worse, undecided = [], [], []
    for arm, by_key in paired.items():
        c = by_key[key]
        if not c.get("n"):
            continue
        if not c["excludes_zero"]:
            undecided.append(arm)
        elif sign * c["mean"] > 0:
            better.append(arm)
        else:
            worse.append(arm)
    return better, worse, undecided


def _verdict(summary: dict[str, Any]) -> list[str]:
    """Plain words from the numbers: who beats the default, where the default loses, who beats random search,
    and the targets."""
    d = summary["default"]
    paired, paired_random = summary["paired"], summary.get("paired_random") or {}
    lines = []
    n = max((v["test_loss"].get("n", 0) for v in [*paired.values(), *paired_random.values()]), default=0)
    if n < 5:
        lines.append(f"- Only {n} seeds: a bootstrap over so few pairs is not a finding; read these lines as a "
                     "smoke test.")
    better, worse, undecided = _against(paired, "test_loss", -1)  # other minus default: negative favours other
    if better:
        by = [f"`{a}` by {-c['mean']:.2f} nats [{-c['high']:.2f}, {-c['low']:.2f}]"
              for a, c in ((a, paired[a]["test_loss"]) for a in better)]
        lines.append(f"- **Better than the default `{d}`** on the retrained test ELBO (paired interval excludes "
                     "zero): " + "; ".join(by) + ".")
    else:
        lines.append(f"- No arm beats the default `{d}` on the retrained test ELBO with a paired interval that "
                     "excludes zero.")
    if worse:
        lines.append(f"- `{d}` beats {_names(worse)} on the retrained test ELBO (paired intervals exclude zero).")
    if undecided:
        lines.append(f"- `{d}` vs {_names(undecided)}: not told apart on the retrained test ELBO (the paired "
                     "intervals include zero).")
    losses = []
    for arm in paired:
        measures = [f"{what} by {-paired[arm][key]['mean']:.2f} nats" for key, what in _MEASURES.items()
                    if arm in _against(paired, key, -1)[0]]
        if measures:
            losses.append(f"`{arm}` has the better {', '.join(measures)} (paired intervals exclude zero)")
    reach = (summary.get("reach") or {}).get("by_arm") or {}
    if d in reach:
        mine = reach[d]["median_epochs"]
        fewer = [a for a, r in reach.items() if a not in (d, "random") and r["median_epochs"] < mine]
        if fewer:
            losses.append(f"{_names(fewer)} reach{'es' if len(fewer) == 1 else ''} random search's median final "
                          "validation loss with fewer epochs ("
                          + ", ".join(_epochs(reach[a]["median_epochs"]) for a in fewer)
                          + f" epochs against {_epochs(mine)} for `{d}`; medians over seeds)")
    wallclock = summary.get("wallclock") or {}
    for workers in wallclock.get("workers", ()):
        arms = wallclock["by_workers"][str(workers)]["arms"]
        mine_s = (arms.get(d) or {}).get("median_seconds_to_reach")
        if mine_s is None:
            continue
        # sooner by at least what the report shows (two decimals of a minute): measured seconds are noisy, and
        # "0.44 against 0.44" says nothing
        faster = [a for a, st in arms.items() if a not in (d, "random")
                  and st.get("median_seconds_to_reach") is not None and st["median_seconds_to_reach"] < mine_s
                  and _minutes(st["median_seconds_to_reach"]) != _minutes(mine_s)]
        if faster:
            losses.append(f"at {workers} simulated worker{'s' if workers > 1 else ''}, {_names(faster)} reach"
                          f"{'es' if len(faster) == 1 else ''} it sooner ("
                          + ", ".join(_minutes(arms[a]["median_seconds_to_reach"]) for a in faster)
                          + f" minutes against {_minutes(mine_s)} for `{d}`; from measured task seconds, see the "
                          "wall-clock table)")
    if losses:
        lines += [f"- **Where `{d}` loses**:", *(f"  - {loss}." for loss in losses)]
    else:
        lines.append(f"- Nowhere measured here does another arm beat `{d}` (no interval in another arm's favour, "
                     "none reaches random search's median loss with fewer epochs or sooner).")
    if paired_random:
        r_better, r_worse, r_undecided = _against(paired_random, "test_loss", +1)
        parts = []
        if r_better:
            parts.append(f"better than random search on the retrained test ELBO: {_names(r_better)}")
        if r_worse:
            parts.append(f"**worse than random search**: {_names(r_worse)}")
        if r_undecided:
            parts.append(f"not told apart from random search: {_names(r_undecided)}")
        lines.append("- Against random search (paired intervals): " + "; ".join(parts) + ".")
    target = summary["targets"].get("reach_random_median")
    if target:
        if math.isinf(target["median_epochs"]):
            lines.append(f"- `{d}` did not reach random search's median final validation loss "
                         f"({target['target_val_loss']:.2f}) in at least half of its seeds: target (<= 1/4 of "
                         "random search's epochs) **missed**.")
        else:
            lines.append(f"- `{d}` reached random search's median final validation loss "
                         f"({target['target_val_loss']:.2f}) after a median of {_epochs(target['median_epochs'])} "
                         f"epochs, {_f(target['ratio'])} of random search's {target['random_epochs']:.0f}: target "
                         "(<= 1/4) " + ("met." if target["met"] else "**missed**."))
    for name in ("test_beats_random", "test_beats_tpe", "never_worse_than_evolution"):
        if name in summary["targets"]:
            met = summary["targets"][name]["met"]
            lines.append(f"- target `{name}`: " + ("met." if met else "**missed**."))
    return lines


def _promotion(st: dict[str, Any]) -> str:
    if len(st["fidelities"]) < 2:
        return "none (one fidelity)"
    return "continues from its checkpoint" if st["continues"] else "trained again from scratch"


def _settings(p: dict[str, Any], arms: dict[str, Any]) -> str:
    parts = [f"population {p['population']}, offspring {p['offspring']}, eta {p['eta']}"]
    if any(st["generational"] and len(st["fidelities"]) > 1 for st in arms.values()):
        parts.append(f"rungs of the generational multi-fidelity arms {','.join(map(str, p['fidelities']))}")
    if any(not st["generational"] and len(st["fidelities"]) > 1 for st in arms.values()):
        parts.append(f"rungs of the asynchronous arms (a peer's lowest and highest fidelity) "
                     f"{','.join(map(str, p.get('asha_fidelities') or p['fidelities']))}")
    parts.append(f"tournament size {p['tournament_size']}, TPE start-up trials (and SMAC's initial design) "
                 f"{p['startup_trials']}")
    return "; ".join(parts)


def _concurrency(results: dict[str, Any]) -> list[str]:
    """The line saying how many workers the searches decided as (a comparison run with --simulate-workers)."""
    workers = results.get("simulate_workers") or 0
    if not workers:
        return []
    return [f"- Concurrency: every search decided as {workers} workers would (`--simulate-workers {workers}`): its "
            f"tasks were trained one at a time and told in the order {workers} simulated workers deliver them, on "
            "a clock in epochs trained, so an asynchronous arm proposed with up to "
            f"{workers - 1} results still outstanding; a generational arm decides the same at any number of "
            "workers."]


def _what_was_run(results: dict[str, Any]) -> list[str]:
    p, s, spec = results["preset"], results["summary"], results["spec"]
    arms = list(s["arms"])
    subset = spec["train_subset"]
    seeds = preset_of(results).seed_values
    train = f"at most {subset} training examples (fewer when the data has fewer)" if subset else "all training examples"
    out = [f"- Data: {results['dataset']}, {train}, a fixed validation "
           f"split of {spec['val_size']} (split seed {spec['split_seed']}); the test split only for retraining.",
           f"- {len(arms)} arms x {p['seeds']} seeds (seeds {seeds[0]}..{seeds[-1]}; the same seed gives "
           f"every arm the same training seeds and split), {p['budget_epochs']} training epochs per search. A task "
           "costs the epochs it trains, whatever its outcome: a promotion that continues from its checkpoint pays the "
           "epochs in between, one trained again from scratch pays every fidelity it reaches.",
           f"- Search metric: validation negative ELBO after {p['epochs']} epochs ({_likelihood_text(spec)}, plus "
           "KL(q(z|x) || N(0, I)); one z sample).",
           f"- Final metric: each search's best genotype retrained {p['retrain_epochs']} epochs, then on the test "
           f"split the negative ELBO and the negative importance-weighted bound with k = {p['iw_samples']} "
           "samples (Burda et al.), both in nats per example.",
           f"- Settings (each arm uses those it has): {_settings(p, s['arms'])}.",
           *_concurrency(results), "",
           "What each arm ran (fidelities: the epochs its tasks trained, over every seed; trials: the "
           "configurations it trained; tasks: the results it was told, e.g. every rung of a candidate, every epoch "
           "of an optuna-hyperband trial; epochs spent: what it was charged, at most the budget, less when the "
           "next task asked for did not fit; means over seeds):", "",
           "| arm | what it is | asks | fidelities (epochs) | a promotion | trials | tasks | epochs spent |",
           "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        st = s["arms"][arm]
        asks = "a batch, then waits for all of it" if st["generational"] else "a task per free worker"
        out.append(f"| {arm} | {results['arms'].get(arm, '')} | {asks} | {', '.join(map(str, st['fidelities']))} | "
                   f"{_promotion(st)} | {_f(st['trials']['mean'], 1)} | {_f(st['tasks']['mean'], 1)} | "
                   f"{_f(st['epochs']['mean'], 1)} |")
    return out


def _wallclock_section(s: dict[str, Any]) -> list[str]:
    wallclock = s.get("wallclock")
    if not wallclock:
        return []
    workers = wallclock["workers"]
    many = max(workers)
    out = ["", "The other panels put the same searches on a simulated wall clock: each search's tasks, with the "
           "training seconds each measured, list-scheduled in the order they were told on 1 and on "
           f"{many} simulated workers; a task waits for its genotype's previous task (a promotion is decided from "
           "it), and a generational arm's batch waits for the whole batch before it. A generational arm decides "
           "the same at any number of workers, so its curve is its own search on that clock; an asynchronous arm "
           f"would decide otherwise with {many} workers (fewer results in hand), so its curve is the cost of these "
           "decisions, not what it would do there. Task seconds were measured on a shared machine and vary with "
           "its load between arms run at different times; the speed-up and utilization within an arm do not "
           "depend on the machine's speed. How and why: docs/experiments.md, \"Simulated wall clock\".", "",
           "<!-- table:wallclock -->",
           "| arm | " + " | ".join(f"minutes, {n} worker{'s' if n > 1 else ''}" for n in workers)
           + f" | speed-up at {many} | utilization at {many} | "
           + " | ".join(f"minutes to random's median, {n}" for n in workers) + " |",
           "|---|" + "---|" * (2 * len(workers) + 2)]
    for arm in s["arms"]:
        at = {n: wallclock["by_workers"][str(n)]["arms"][arm] for n in workers}
        one, top = at[min(workers)]["makespan"]["mean"], at[many]["makespan"]["mean"]
        speedup = one / top if one and top else None
        out.append(f"| {arm} | " + " | ".join(_minutes(at[n]["makespan"]["mean"]) for n in workers)
                   + f" | {_f(speedup, 1)} | {_f(at[many]['utilization']['mean'])} | "
                   + " | ".join(_minutes(at[n].get("median_seconds_to_reach")) for n in workers) + " |")
    out += ["", "Minutes: mean over seeds until a search's last task ends; speed-up: the 1-worker minutes over "
            f"the {many}-worker ones; utilization: training seconds / ({many} x the {many}-worker minutes); minutes "
            "to random's median: the median over seeds of the simulated time at which the search's best "
            "validation loss first reaches random search's median final one (\"not reached\" when the median seed "
            "never does)."]
    return out


def _reach_section(s: dict[str, Any]) -> list[str]:
    reach = s.get("reach") or {}
    if not reach.get("by_arm"):
        return []
    out = ["", "## Compute to reach random search's median final validation loss", "",
           f"Random search's median final validation loss is {reach['target_val_loss']:.2f}; per arm, the "
           "cumulative epochs at which each seed's best validation loss first reached it, their median and its "
           "ratio to random search's budget (the target for the default: <= 1/4).", "",
           "<!-- table:reach -->", "| arm | epochs per seed | median | ratio |", "|---|---|---|---|"]
    for arm, r in reach["by_arm"].items():
        ratio = "reference" if arm == "random" else ("not reached" if math.isinf(r["ratio"]) else _f(r["ratio"]))
        out.append(f"| {arm} | {', '.join(_epochs(e) for e in r['epochs_to_reach'])} | "
                   f"{_epochs(r['median_epochs'])} | {ratio} |")
    return out


def render_compare_report(results: dict[str, Any]) -> str:
    p, s = results["preset"], results["summary"]
    d = s["default"]
    out = [f"# Strategies compared at equal compute: {results['dataset']}, preset `{p['name']}`", "",
           f"{len(s['arms'])} arms x {p['seeds']} seeds, {p['budget_epochs']} training epochs a search, compared "
           f"after {p['epochs']} epochs. Generated by `{results['command']}`; every number below is in "
           "results.json.", "",
           "## What was run", "", *_what_was_run(results), "",
           "## Verdict", "", *_verdict(s), "",
           "## Anytime performance", "", "![anytime](anytime.png)", "",
           "Median (line) and interquartile band over seeds of the best validation loss so far. Left: against the "
           "cumulative training epochs spent (the budget every arm has).", *_wallclock_section(s), "",
           "## Per arm (mean ± sd over seeds)", "",
           "<!-- table:arms -->",
           "| arm | best validation loss | retrained test ELBO | retrained test IW bound | trials | tasks |",
           "|---|---|---|---|---|---|"]
    for arm, st in s["arms"].items():
        out.append(f"| {arm} | {_pm(st['val_loss'])} | {_pm(st['test_loss'])} | {_pm(st['test_iw_loss'])} "
                   f"| {_f(st['trials']['mean'], 1)} | {_f(st['tasks']['mean'], 1)} |")
    out += ["", f"## Paired differences: other arm minus `{d}` (positive: `{d}` is better)", "",
            "Mean over seeds with a 95% percentile bootstrap interval (10,000 resamples of the seed pairs).", "",
            "<!-- table:paired -->",
            "| other arm | validation loss | test ELBO | test IW bound |", "|---|---|---|---|"]
    for other, by_key in s["paired"].items():
        out.append(f"| {other} | {_ci(by_key['val_loss'])} | {_ci(by_key['test_loss'])} | "
                   f"{_ci(by_key['test_iw_loss'])} |")
    if s.get("paired_random"):
        out += ["", "## Paired differences: random search minus each arm (positive: the arm is better than random "
                "search)", "", "<!-- table:paired-random -->",
                "| arm | validation loss | test ELBO | test IW bound |", "|---|---|---|---|"]
        for arm, by_key in s["paired_random"].items():
            out.append(f"| {arm} | {_ci(by_key['val_loss'])} | {_ci(by_key['test_loss'])} | "
                       f"{_ci(by_key['test_iw_loss'])} |")
    out += _reach_section(s)
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
            "| arm | " + " | ".join(f"seed {i}" for i in preset_of(results).seed_values) + " |",
            "|---|" + "---|" * p["seeds"]]
    for arm, st in s["arms"].items():
        out.append(f"| {arm} | " + " | ".join(f"`{g}`" if g else "-" for g in st["best_genotypes"]) + " |")
    out += ["", f"Machine: {results['machine']}; wall time {results['seconds'] / 60:.1f} min."]
    return "\n".join(out) + "\n"


def preset_of(results: dict[str, Any]) -> Any:
    """The :class:`~evo.experiments.compare.ComparePreset` results.json records."""
    from .compare import ComparePreset

    p = results["preset"]
    tuples = {key: tuple(p[key]) for key in ("fidelities", "arms", "asha_fidelities") if key in p}
    return ComparePreset(**{**p, **tuples})


def rerender(run: Path) -> None:
    """A finished comparison's report made again by today's code from its results.json: the summary computed
    again from the searches (nothing else in results.json changes), the figures drawn and report.md written."""
    from .compare import default_arm_of, summarize

    path = run / "results.json"
    results = json.loads(path.read_text())
    if results.get("format") != "evovae-compare":
        raise ValueError(f"{path} is not a comparison's results (format {results.get('format')!r})")
    results["summary"] = json.loads(json.dumps(summarize({"searches": results["searches"]}, preset_of(results),
                                                               default_arm_of(results))))
    write_report(run, results)


def write_report(run: Path, results: dict[str, Any]) -> None:
    """``run``'s results.json, its figures (anytime.png, and fidelity.png when there was a fidelity study) and
    report.md, from ``results``."""
    (run / "results.json").write_text(json.dumps(results, indent=1))
    title = f"{Path(results['dataset']).name}, preset {results['preset']['name']}"
    draw_anytime(results["summary"], run / "anytime.png", title)
    if results.get("fidelity"):
        draw_fidelity(results["fidelity"], run / "fidelity.png")
    (run / "report.md").write_text(render_compare_report(results))


def main(argv: list[str] | None = None) -> int:
    """``python -m evo.experiments.compare_report RUN_DIR...``: each comparison's report made again from its
    results.json (the committed ones: docs/results/*-compare-*)."""
    runs = sys.argv[1:] if argv is None else argv
    if not runs:
        print("usage: python -m evo.experiments.compare_report RUN_DIR...", file=sys.stderr)
        return 2
    for run in runs:
        try:
            rerender(Path(run))
        except (OSError, ValueError, KeyError) as exc:
            print(f"evovae: error: {run}: {exc}", file=sys.stderr)
            return 2
        print(f"report {Path(run) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
