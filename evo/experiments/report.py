"""``report.md`` of the paper experiment: a pure function of its ``results.json`` (every number in the report
comes from there; the tests check that the tables agree with the data)."""
from __future__ import annotations

from typing import Any

__all__ = ["render_report"]


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pm(stats: dict[str, Any]) -> str:
    if not stats["n"]:
        return "-"
    if stats["n"] == 1:
        return _f(stats["mean"])
    return f"{_f(stats['mean'])} ± {_f(stats['std'])}"


def _arch(text: str) -> str:
    """A genotype in a Markdown table cell: code, with its pipes escaped."""
    return "`" + text.replace("|", "\\|") + "`"


def _workers(pr: dict[str, Any], env: dict[str, Any]) -> str:
    where = f"{pr['local_workers']} local worker processes over ZeroMQ (loopback)"
    bind = pr.get("bind")
    if bind and not pr.get("loopback", True):
        where = f"{pr['local_workers']} local worker processes and any remote ones over ZeroMQ ({bind})"
    return f"{where}, {env['device']}, {env['cores']} cores, torch {env['torch']}"


def _wall_time(t: dict[str, Any]) -> str:
    text = (f"{t['total_s'] / 60:.1f} min (searches {t['searches_s'] / 60:.1f}, retraining "
            f"{t['retrain_s'] / 60:.1f}, figures {t['figures_s']:.0f} s)")
    if t.get("cpu_s"):
        text += f"; CPU time {t['cpu_s'] / 60:.1f} min (head, workers and retraining processes)"
    if t.get("runs", 1) > 1:
        text += f"; over {t['runs']} runs of the command (resumed after a stop)"
    return text


def _data(pr: dict[str, Any]) -> str:
    """The protocol's data row: a built-in set and its image shape, or own data with its fingerprint."""
    shape = "x".join(map(str, pr["input_shape"]))
    if "data_name" not in pr:  # a built-in set (and every report written before own data)
        return f"{pr['dataset']}, images {shape}"
    options = "".join(f", {flag} {pr[key]}" for flag, key in (("--columns", "columns"), ("--image-size", "image_size"),
                                                              ("--missing", "missing"))
                      if pr.get(key) and pr[key] != "error")
    what = f"{pr['input_shape'][0]} columns" if pr["data_kind"] == "table" else f"{shape} per example"
    return (f"`{pr['dataset']}`: {pr['data_kind']}, {what}{options}; SHA-256 `{pr['data_sha256'][:16]}...`; "
            f"likelihood {pr['likelihood']}")


def _hand_designed(pr: dict[str, Any]) -> str:
    if "data_name" not in pr:
        return "`400\\|20\\|400` (the PyTorch example VAE 784-400-20-400-784)"
    features = 1
    for size in pr["input_shape"]:
        features *= int(size)
    return f"`400\\|20\\|400` (the PyTorch example VAE's layers: {features}-400-20-400-{features} on this data)"


def _protocol(results: dict[str, Any]) -> list[str]:
    pr, preset, env = results["protocol"], results["preset"], results["environment"]
    own = "data_name" in pr  # data of one's own (a report of a built-in set reads as it always did)
    noun = "examples" if own else "images"
    test = ("the data's test part, or, when it has none, the next examples of the split's permutation" if own else
            "the data set's test set")
    subset = (f" (the first {preset['train_subset']:,} of the training set left after the validation split)"
              if preset["train_subset"] else " (all left after the validation split)")
    rows = [
        ("data set", _data(pr)),
        (f"training {noun}", f"{pr['train_images']:,}" + subset),
        (f"validation {noun}", f"{pr['validation_images']:,}, carved from the training set by a permutation seeded "
                              f"with split seed {pr['split_seed']} (the same split for every task)"),
        (f"test {noun}", f"{pr['test_images']:,} ({test}; used only after retraining)"),
        ("training", f"Adam lr {pr['lr']}, mini-batch {pr['batch_size']}, training seed {pr['seed']} for every run"),
        ("search", f"(mu + lambda) evolution, mu = {pr['population']}, lambda = {pr['offspring']}, "
                   f"{pr['generations']} generations counting the initial one, seed {pr['seed']}"),
        ("evaluation budget", f"{pr['budget']} evaluations per search (mu + (generations - 1) x lambda); an "
                              "offspring already seen is dropped, not evaluated, so evolution may use fewer"),
        ("search epochs", ", ".join(f"{e}" for e in pr["search_epochs"]) + " (one evolutionary search each)"),
        ("random search", f"the same budget, {len(pr['random_seeds'])} seeds "
                          f"({', '.join(map(str, pr['random_seeds']))}), "
                          f"candidates trained {' and '.join(map(str, pr['random_epochs']))} epoch(s)"),
        ("hand-designed baseline", _hand_designed(pr)),
        ("retraining", f"{pr['retrain_epochs']} epochs, same data and seed (the paper: 20)"),
        ("Fig. 4 models", f"best architectures with latent size 2, {pr['manifold_epochs']} epochs"),
        ("workers", _workers(pr, env)),
        ("wall time", _wall_time(results["timings"])),
    ]
    return ["## Protocol", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]


def _searches(results: dict[str, Any]) -> list[str]:
    lines = ["Searches run (evaluations = genotypes evaluated; reused = results already computed earlier in this "
             "experiment for the same genotype and training spec, e.g. the shared random generation 0):", "",
             "<!-- table:searches -->",
             "| Search | Strategy | Seed | Epochs | Evaluations | Trained | Reused | Failed | Duplicates dropped | "
             "Best loss | Best architecture | Minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in results["searches"]:
        best = s["best"]
        lines.append(f"| {s['name']} | {s['strategy']} | {s['seed']} | {s['epochs']} | {s['evaluation_count']} | "
                     f"{s['trained']} | {s['reused']} | {s['failed']} | {s['duplicates_dropped']} | "
                     f"{_f(best['loss'] if best else None)} | {_arch(best['genotype']) if best else 'n/a'} | "
                     f"{s['seconds'] / 60:.1f} |")
    return [*lines, ""]


def _table1(results: dict[str, Any]) -> list[str]:
    lines = ["## Table I: best and worst architecture of each search", "",
             "Best and worst = the lowest and the highest validation loss among all the search's successful "
             f"evaluations. Search loss: validation loss after the search's epochs; then each architecture is "
             f"retrained {results['protocol']['retrain_epochs']} epochs and measured on the validation and the test "
             "set (test loss split into its reconstruction and KL parts).", "",
             "<!-- table:table1 -->",
             "| Search | Which | Architecture | Parameters | Search loss | Validation loss | Test loss | Test recon | "
             "Test KL |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results["table1"]:
        lines.append(f"| {r['search_epochs']}-epoch | {r['role']} | {_arch(r['genotype'])} | {r['parameters']:,} | "
                     f"{_f(r['search_loss'])} | {_f(r['val_loss'])} | {_f(r['test_loss'])} | {_f(r['test_recon'])} | "
                     f"{_f(r['test_kl'])} |")
    return [*lines, ""]


def _comparison(results: dict[str, Any]) -> list[str]:
    pr = results["protocol"]
    lines = ["## Comparison with the baselines", "",
             f"All after retraining {pr['retrain_epochs']} epochs. Random search: mean ± sample standard deviation "
             "over its seeds (each seed's best architecture retrained). Search loss: the best validation loss the "
             "search found at its own epochs."]
    if len(pr["random_epochs"]) > 1:
        lines += ["", "Random search proposes genotypes without looking at fitness, so the random searches with the "
                      "same seed at different epochs evaluate the same genotypes; only which of them counts as best "
                      "can differ (and when it does not, their rows below are the same retrained models)."]
    lines += ["", "<!-- table:comparison -->", "| Method | Architecture(s) | Evaluations | Search loss | "
              "Validation loss | Test loss |", "|---|---|---|---|---|---|"]
    for c in results["comparison"]:
        evals = c["evaluations"]
        evals_text = "-" if not evals else (f"{evals:g}" + (" each" if c["kind"] == "random" else ""))
        lines.append(f"| {c['method']} | {', '.join(_arch(g) for g in c['genotypes'])} | {evals_text} | "
                     f"{_pm(c['search_loss'])} | {_pm(c['val_loss'])} | {_pm(c['test_loss'])} |")
    return [*lines, "", _verdict(results), ""]


def _figures(results: dict[str, Any]) -> list[str]:
    lines = ["## Figures", ""]
    for fig in results["figures"]:
        if fig["file"] is None:  # a figure the data has none of: why, in one line
            lines += [f"*{fig['kind']}*: {fig['caption']}", ""]
            continue
        lines += [f"![{fig['kind']}]({fig['file']})", "", f"*{fig['file']}*: {fig['caption']}", ""]
    return lines


def render_report(results: dict[str, Any]) -> str:
    """report.md from results.json's content."""
    pr, preset = results["protocol"], results["preset"]
    head = [f"# Evolutionary VAE search on {pr['dataset']}: the paper's experiments (preset `{preset['name']}`)", "",
            f"Generated by `evovae experiment paper --dataset {pr['dataset']} --preset {preset['name']}` on "
            f"{results['created']}; every number below is in `results.json` beside this file. "
            f"Preset: {preset['summary']}.", "",
            "## Metric", "",
            f"Loss = {results['metric']}. Lower is better; the search's fitness is 1 / loss on the validation split. "
            + ("Continuous-pixel BCE includes the entropy of the grey levels, so these figures are not comparable "
               "with log-likelihoods on binarised MNIST." if pr.get("likelihood", "bernoulli") == "bernoulli" else
               "The nats are those of the standardised features: add the sum of the log standard deviations (in "
               "each model's model.json) for the density in the data's own units."), ""]
    lines = head + _protocol(results) + _searches(results) + _table1(results) + _comparison(results) + _figures(results)
    return "\n".join(lines)


def _verdict(results: dict[str, Any]) -> str:
    """One paragraph saying, from the numbers, where evolution did and did not beat the baselines."""
    comp = results["comparison"]
    evo = [c for c in comp if c["kind"] == "evolution" and c["test_loss"]["n"]]
    rand = [c for c in comp if c["kind"] == "random" and c["test_loss"]["n"]]
    hand = [c for c in comp if c["kind"] == "hand-designed" and c["test_loss"]["n"]]
    if not evo:
        return "No evolutionary search produced a result to compare."
    parts = []
    for e in evo:
        e_test = e["test_loss"]["mean"]
        against = []
        for r in rand:
            mean, std = r["test_loss"]["mean"], r["test_loss"]["std"]
            word = "better than" if e_test < mean - std else "worse than" if e_test > mean + std else "within"
            against.append(f"{word} random search at {r['search_epochs']} epochs ({_pm(r['test_loss'])})")
        for h in hand:
            word = "better than" if e_test < h["test_loss"]["mean"] else "worse than"
            against.append(f"{word} the hand-designed 400|20|400 ({_f(h['test_loss']['mean'])})")
        parts.append(f"The {e['search_epochs']}-epoch search's best has test loss {_f(e_test)}: " + "; ".join(against))
    return ("**Verdict** (test loss after retraining, lower is better; \"within\" = within one standard deviation "
            "of the random-search mean). " + ". ".join(parts) + ".")
