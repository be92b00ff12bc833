"""The paper experiment's figures, drawn from its results (searches and retraining records) and, for the
pictures of a model (Figs. 4 and 5), from the model directories. Each function writes one kind of figure
and returns what the report says about it: ``{"file", "kind", "caption"}``. The pictures of a model take
the shape of its data (8 x 8 digits, 3 x 32 x 32 colour, ...); data that is not images (a table, flat
vectors) has none: the report says so in one line instead (``"file"`` None)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["draw_paper_figures"]

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")
MARKERS = ("x", "+", "^", "v", "d", ".")

Search = dict[str, Any]
Records = dict[str, dict[str, Any]]


class _Styles:
    """One colour per evolutionary search (by its epochs); random searches take the colour of the evolution
    with the same epochs, dotted, a marker per seed."""

    def __init__(self, evolution: Sequence[Search], first_seed: int) -> None:
        self.colour_of = {s["epochs"]: COLOURS[i % len(COLOURS)] for i, s in enumerate(evolution)}
        self.first_seed = first_seed

    def evolution(self, s: Search, **extra: Any) -> dict[str, Any]:
        return {"color": self.colour_of.get(s["epochs"], "tab:gray"), "marker": "o", "markersize": 3, **extra}

    def random(self, s: Search) -> dict[str, Any]:
        return {"color": self.colour_of.get(s["epochs"], "tab:gray"), "linestyle": ":", "alpha": 0.8,
                "marker": MARKERS[(s["seed"] - self.first_seed) % len(MARKERS)], "markersize": 4}


def _curves_figure(run: Path, dataset: str, retrain_epochs: int, evolution: Sequence[Search], retrained: Records,
                   styles: _Styles) -> dict[str, Any]:
    """Fig. 2/3: validation loss per retraining epoch, best and worst of each evolutionary search."""
    from gpuworker.figures import plot_curves

    series, style = {}, {}
    for s in evolution:
        for which, line in (("best", "-"), ("worst", "--")):
            r = retrained.get(f"{s['name']}/{which}")
            if r and r["validation_curve"]:
                label = f"{s['epochs']}-epoch search, {which}: {r['genotype']}"
                series[label] = r["validation_curve"]
                style[label] = styles.evolution(s, linestyle=line)
    name = f"curves-{dataset}.png"
    plot_curves(series, run / name, styles=style,
                title=f"{dataset}: validation loss while retraining {retrain_epochs} epochs")
    return {"file": name, "kind": "figure-2-3", "caption":
            f"Validation negative ELBO per epoch while retraining the best (solid) and worst (dashed) "
            f"architecture of each evolutionary search for {retrain_epochs} epochs (the paper's Fig. 2/3)."}


def _comparison_figure(run: Path, dataset: str, evolution: Sequence[Search], randoms: Sequence[Search],
                       retrained: Records, styles: _Styles) -> dict[str, Any]:
    """The baselines' retraining curves beside the evolution's best."""
    from gpuworker.figures import plot_curves

    series, style = {}, {}
    for s in evolution:
        r = retrained.get(f"{s['name']}/best")
        if r and r["validation_curve"]:
            label = f"evolution {s['epochs']}-ep best: {r['genotype']}"
            series[label], style[label] = r["validation_curve"], styles.evolution(s)
    for s in randoms:
        r = retrained.get(f"{s['name']}/best")
        if r and r["validation_curve"]:
            label = f"random {s['epochs']}-ep seed {s['seed']} best: {r['genotype']}"
            series[label], style[label] = r["validation_curve"], styles.random(s)
    hand = retrained.get("hand-designed")
    if hand and hand["validation_curve"]:
        label = f"hand-designed: {hand['genotype']}"
        series[label] = hand["validation_curve"]
        style[label] = {"color": "black", "linestyle": "-.", "marker": "s", "markersize": 3}
    name = f"comparison-curves-{dataset}.png"
    plot_curves(series, run / name, styles=style, title=f"{dataset}: retraining the best of each method")
    return {"file": name, "kind": "comparison", "caption":
            "Validation negative ELBO per retraining epoch: the evolutionary searches' best (solid), each "
            "random search's best (dotted, coloured like the evolutionary search with the same epochs) and "
            "the hand-designed 400|20|400 (black)."}


def _progress_figure(run: Path, dataset: str, searches: Sequence[Search], styles: _Styles) -> dict[str, Any]:
    """Best validation loss in the population after each generation, every search."""
    from gpuworker.figures import plot_curves

    series, style = {}, {}
    for s in searches:
        losses = [g["best_loss"] for g in s["generations"]]
        if losses and all(v is not None for v in losses):
            series[s["name"]] = losses
            style[s["name"]] = styles.evolution(s) if s["kind"] == "evolution" else styles.random(s)
    name = f"search-progress-{dataset}.png"
    plot_curves(series, run / name, styles=style, x_start=0, xlabel="generation",
                ylabel="best validation loss so far (nats/image)",
                title=f"{dataset}: best loss per generation (each at its own search epochs)")
    return {"file": name, "kind": "progress", "caption":
            "Best validation loss in the population after each generation (generation 0 = the random "
            "initial population). Losses of searches with different epochs are not comparable."}


def _not_images(protocol: dict[str, Any]) -> str:
    """Why the data has no pictures (Figs. 4 and 5), or "" when it is images."""
    shape = protocol["input_shape"]
    if protocol.get("data_kind") == "table":
        return f"the data is a table of {shape[0]} columns, not images"
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[0] not in (1, 3)):
        return f"examples of shape {'x'.join(map(str, shape))} are not grey or RGB images"
    return ""


def _model_figures(run: Path, protocol: dict[str, Any], evolution: Sequence[Search], retrained: Records, *,
                   steps: int, samples: int, seed: int) -> list[dict[str, Any]]:
    """Fig. 4 (the latent-2 manifold) and Fig. 5 (samples from p(x|z)) of each evolutionary search's best, in
    the data's own image shape (mapped back to its units for a Gaussian model)."""
    from gpuworker.export import load_model, standardisation_of
    from gpuworker.figures import as_images, manifold_images, sample_images, save_grid

    why = _not_images(protocol)
    if why:
        return [{"file": None, "kind": "figures-4-5", "caption":
                 f"Figs. 4 and 5 (the latent manifold and samples as images) are not drawn: {why}. The tables "
                 "above and the curves are the results; `evovae sample MODEL_DIR` writes a model's samples "
                 "as rows of a CSV."}]
    figures = []
    for s in evolution:
        r = retrained.get(f"{s['name']}/best-latent2")
        if r and r["ok"] and r["model_dir"]:
            model, info = load_model(run / r["model_dir"])
            name = f"manifold-{s['name']}.png"
            grid = manifold_images(model, steps, standardisation_of(info))
            save_grid(as_images(grid, info["input_shape"]), run / name, nrow=steps, padding=0)
            figures.append({"file": name, "kind": "figure-4", "caption":
                            f"2-D latent manifold of the {s['epochs']}-epoch search's best architecture retrained "
                            f"with latent size 2 ({r['genotype']}, {r['epochs']} epochs, validation loss "
                            f"{r['validation']['loss']:.2f}): sigmoid(decode(z)) for z = Phi^-1(u) on a "
                            f"{steps} x {steps} grid of cell centres u over the unit square (the paper's Fig. 4)."})
    for s in evolution:
        r = retrained.get(f"{s['name']}/best")
        if r and r["ok"] and r["model_dir"]:
            model, info = load_model(run / r["model_dir"])
            name = f"samples-{s['name']}.png"
            drawn = sample_images(model, samples, seed=seed, standardisation=standardisation_of(info))
            save_grid(as_images(drawn, info["input_shape"]), run / name, nrow=8)
            figures.append({"file": name, "kind": "figure-5", "caption":
                            f"{samples} samples from p(x|z), z ~ N(0, I) (pixel means sigmoid(decode(z))), of the "
                            f"{s['epochs']}-epoch search's best architecture {r['genotype']} after retraining "
                            "(the paper's Fig. 5)."})
    return figures


def draw_paper_figures(run: Path, results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure of the paper report, from ``results`` (searches, retrained) and the model directories."""
    protocol, preset = results["protocol"], results["preset"]
    dataset = protocol.get("data_name", protocol["dataset"])  # own data: its file's name, not its path
    searches, retrained = results["searches"], results["retrained"]
    evolution = [s for s in searches if s["kind"] == "evolution"]
    randoms = [s for s in searches if s["kind"] == "random"]
    styles = _Styles(evolution, protocol["seed"])
    return [
        _curves_figure(run, dataset, protocol["retrain_epochs"], evolution, retrained, styles),
        _comparison_figure(run, dataset, evolution, randoms, retrained, styles),
        _progress_figure(run, dataset, searches, styles),
        *_model_figures(run, protocol, evolution, retrained, steps=preset["manifold_steps"],
                        samples=preset["samples"], seed=protocol["seed"]),
    ]
