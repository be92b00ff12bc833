"""``evovae experiment paper``: the paper's experiments, end to end, into one report.

What it runs (Hajewski & Oliveira 2020, on one data set):

1. the evolutionary search twice - candidates trained 2 and 5 epochs, same
   seed and budget otherwise - through the normal distributed path: a
   :class:`~transport.broker.Broker` on loopback, real worker processes
   (:class:`~evo.local_workers.LocalWorkers`), :class:`~evo.head.DistributedEvaluator`
   and :func:`~evo.search.run_search`;
2. baselines: random search (:class:`~evo.random_search.RandomSearch`) at the
   same evaluation budget over several seeds, through the same path, and the
   hand-designed PyTorch-example VAE ``400|20|400``;
3. retraining of the best and worst genotype of each search, of each random
   search's best and of ``400|20|400`` for the retraining epochs, recording
   the validation loss per epoch and the test loss; models saved with
   :func:`gpuworker.export.save_model` under ``RUN_DIR/models/``;
4. the paper's figures: validation curves of best/worst (Fig. 2/3), the 2-D
   latent manifold of the best architectures (Fig. 4), samples from p(x|z)
   (Fig. 5); Table I and a comparison table with the baselines;
5. ``RUN_DIR/report.md`` (with the PNGs beside it) and ``RUN_DIR/results.json``
   holding every number of the report and every evaluation of every search.

A result already computed in this experiment (same genotype, same training
spec, hence the same task id and the same deterministic training run) is
reused rather than trained again: e.g. generation 0 of the evolution and of
the random search with the same seed are the same random genotypes.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import structlog

from evo.evaluation import Evaluation
from evo.genotype import Genotype
from evo.spec import DATASETS, TRAINER_VERSION, TrainSpec, task_id

__all__ = ["HAND_DESIGNED", "PRESETS", "ExperimentConfig", "Preset", "render_report", "run_paper"]

log = structlog.get_logger(__name__)

#: The PyTorch example VAE: 784-400-20-400-784.
HAND_DESIGNED = Genotype((400,), 20, (400,))

METRIC = ("negative ELBO in nats per image: reconstruction = binary cross-entropy summed over all pixels, "
          "on continuous pixel intensities in [0, 1] (not binarised), plus KL(q(z|x) || N(0, I)) in closed "
          "form; one z sample per image; averaged over every image of the split")

RESULTS_FORMAT = "evovae-experiment"
RESULTS_VERSION = 1


@dataclass(frozen=True)
class Preset:
    """The sizes of one experiment (every field may be overridden on the command line)."""

    name: str
    summary: str
    train_subset: int  # training images (0 = all left after the validation split)
    val_size: int
    population: int  # mu
    offspring: int  # lambda
    generations: int  # counting generation 0
    search_epochs: tuple[int, ...]  # one evolutionary search per entry (the paper: 2 and 5)
    random_epochs: tuple[int, ...]  # random-search baselines: one set of seeds per entry
    random_seeds: int
    retrain_epochs: int  # the paper: 20
    manifold_epochs: int  # training of the latent-2 variants for Fig. 4
    samples: int = 64
    manifold_steps: int = 20

    @property
    def budget(self) -> int:
        """Evaluations a search may ask for: mu + (generations - 1) * lambda."""
        return self.population + (self.generations - 1) * self.offspring


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny", "a smoke test of the whole pipeline in about a minute (tests); numbers mean nothing",
        train_subset=600, val_size=300, population=3, offspring=3, generations=2, search_epochs=(1, 2),
        random_epochs=(1,), random_seeds=2, retrain_epochs=2, manifold_epochs=2, samples=16, manifold_steps=6),
    "cpu": Preset(
        "cpu", "the paper's protocol scaled to finish in under 30 minutes on a 2-core CPU with 2 local workers",
        train_subset=6_000, val_size=3_000, population=6, offspring=6, generations=5, search_epochs=(2, 5),
        random_epochs=(2, 5), random_seeds=3, retrain_epochs=20, manifold_epochs=10),
    "full": Preset(
        "full", "the paper's scale, for a GPU cluster: all 50,000 training images, 20-epoch retraining",
        train_subset=0, val_size=10_000, population=10, offspring=10, generations=10, search_epochs=(2, 5),
        random_epochs=(2, 5), random_seeds=5, retrain_epochs=20, manifold_epochs=20),
}


@dataclass(frozen=True)
class ExperimentConfig:
    """A preset with its overrides, plus the data set and seeds."""

    preset: Preset
    dataset: str = "fashion-mnist"
    seed: int = 0
    split_seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3

    def __post_init__(self) -> None:
        p = self.preset
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown data set {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        for name in ("population", "offspring", "generations", "random_seeds", "retrain_epochs", "manifold_epochs",
                     "samples", "manifold_steps", "val_size"):
            if getattr(p, name) < (2 if name == "manifold_steps" else 0 if name == "random_seeds" else 1):
                raise ValueError(f"{name.replace('_', '-')} is too small: {getattr(p, name)}")
        if p.train_subset < 0:
            raise ValueError(f"train-subset must be >= 0, got {p.train_subset}")
        if not p.search_epochs or any(e < 1 for e in p.search_epochs) or len(set(p.search_epochs)) != len(p.search_epochs):
            raise ValueError(f"search epochs must be distinct positive integers, got {p.search_epochs}")
        if any(e < 1 for e in p.random_epochs):
            raise ValueError(f"random-search epochs must be positive integers, got {p.random_epochs}")

    def spec(self, epochs: int) -> TrainSpec:
        p = self.preset
        return TrainSpec(dataset=self.dataset, epochs=epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                         train_subset=p.train_subset, val_size=p.val_size, split_seed=self.split_seed)


# ----------------------------------------------------------------------------------------- helpers

def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _cpu_seconds() -> float | None:
    """User + system CPU time of this process and of its finished children (workers, retraining
    processes): what the run cost, whatever else shared the machine."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _stats(values: Sequence[float]) -> dict[str, Any]:
    values = [float(v) for v in values]
    if not values:
        return {"mean": None, "std": None, "n": 0, "values": []}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "values": values}


def _evaluation_row(e: Evaluation, generation: int, reused: bool) -> dict[str, Any]:
    m = e.metrics
    return {
        "generation": generation,
        "genotype": str(e.genotype),
        "loss": e.loss,
        "recon": m.get("recon"),
        "kl": m.get("kl"),
        "fitness": e.fitness,
        "parameters": m.get("params") or None,
        "curve": list(m.get("curve") or []),
        "seconds": m.get("seconds"),
        "reused": reused,
        "error": e.error,
    }


def _extremes(rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(best, worst) successful evaluation of a search: lowest and highest validation loss
    (the first one found on a tie)."""
    ok = [r for r in rows if r["loss"] is not None]
    if not ok:
        return None, None
    best = min(ok, key=lambda r: r["loss"])
    worst = max(ok, key=lambda r: r["loss"])
    return best, worst


class _SearchRunner:
    """The distributed path, shared by every search of the experiment: one broker on
    loopback, ``workers`` local worker processes, a cache of results by task id."""

    def __init__(self, workers: int, worker_args: Sequence[str], stop: threading.Event,
                 echo: Callable[[str], None]) -> None:
        from transport.broker import Broker

        from evo.head.local_workers import LocalWorkers

        self.broker = Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=1.0, liveness=5)
        self.workers = LocalWorkers(workers, self.broker.ventilator_endpoint, self.broker.sink_endpoint,
                                    worker_args, threads_each=max(1, _cores() // max(1, workers)))
        self.stop = stop
        self.echo = echo
        self.cache: dict[str, Evaluation] = {}

    def __enter__(self) -> "_SearchRunner":
        self.workers.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.workers.stop()
        self.broker.close()

    def run(self, name: str, strategy, spec: TrainSpec, generations: int) -> dict[str, Any]:
        from evo.head.evaluators import DistributedEvaluator
        from evo.head.progress import format_report, run_search

        remote = DistributedEvaluator(self.broker, spec, stop=self.stop, tick=self.workers.check)
        rows: list[dict[str, Any]] = []
        started = time.perf_counter()

        def evaluate(batch: Sequence[Genotype]) -> list[Evaluation]:
            generation = strategy.generation
            ids = {g: task_id(g, spec) for g in batch}
            fresh = [g for g in batch if ids[g] not in self.cache]
            for e in remote(fresh) if fresh else []:
                self.cache[ids[e.genotype]] = e
            out = []
            for g in batch:
                e = self.cache[ids[g]]
                rows.append(_evaluation_row(e, generation, reused=g not in fresh))
                out.append(e)
            return out

        def progress(report) -> None:
            self.echo(f"[{name}] " + format_report(report, f"{time.perf_counter() - started:.0f}s"))

        reports = run_search(strategy, evaluate, generations, on_generation=progress)
        seconds = time.perf_counter() - started
        best, worst = _extremes(rows)
        log.info("experiment.search_done", search=name, evaluations=len(rows), seconds=round(seconds, 1),
                 best=best and best["genotype"], best_loss=best and best["loss"])
        return {
            "name": name,
            "strategy": type(strategy).__name__,
            "seed": strategy.seed,
            "epochs": spec.epochs,
            "spec": spec.to_dict(),
            "population": strategy.mu,
            "generations": [
                {"generation": r.generation, "evaluated": r.evaluated, "failed": r.failed,
                 "duplicates": r.duplicates, "best_loss": r.best.loss if r.best else None,
                 "median_loss": r.median_loss, "total_evaluations": r.total_evaluations}
                for r in reports
            ],
            "evaluation_count": len(rows),
            "trained": sum(not r["reused"] for r in rows),
            "reused": sum(r["reused"] for r in rows),
            "failed": sum(r["loss"] is None for r in rows),
            "duplicates_dropped": sum(r.duplicates for r in reports),
            "seconds": seconds,
            "final_population": [str(e.genotype) for e in strategy.population],
            "best": best,
            "worst": worst,
            "evaluations": rows,
        }


# -------------------------------------------------------------------------------------- the run

def run_paper(config: ExperimentConfig, run_dir: str | Path, *, local_workers: int = 2,
              data_root: str | None = None, download: bool = False, device: str | None = None,
              stop: threading.Event | None = None, echo: Callable[[str], None] = lambda line: None,
              log_format: str = "json", log_level: str = "warning") -> dict[str, Any]:
    """Run the whole experiment into ``run_dir``; return the results (also written as results.json).

    ``echo`` receives one progress line per generation and per phase.
    Raises :class:`gpuworker.data.DataError` when the data set is missing.
    """
    from evo.engine import EvolutionEngine
    from evo.random_search import RandomSearch

    from gpuworker.data import splits
    from gpuworker.export import load_model, retrain_many

    started = time.perf_counter()
    stop = stop or threading.Event()
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    p = config.preset
    data = splits(config.spec(1), "cpu", data_root, download)  # fail fast, before any worker starts
    protocol = {
        "dataset": config.dataset,
        "input_shape": list(data.shape),
        "train_images": len(data.train),
        "validation_images": len(data.val),
        "test_images": len(data.test),
        "split_seed": config.split_seed,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "population": p.population,
        "offspring": p.offspring,
        "generations": p.generations,
        "budget": p.budget,
        "search_epochs": list(p.search_epochs),
        "random_epochs": list(p.random_epochs),
        "random_seeds": [config.seed + k for k in range(p.random_seeds)],
        "retrain_epochs": p.retrain_epochs,
        "manifold_epochs": p.manifold_epochs,
        "local_workers": local_workers,
    }
    echo(f"experiment paper: {config.dataset}, preset {p.name}: {protocol['train_images']} training / "
         f"{protocol['validation_images']} validation / {protocol['test_images']} test images; "
         f"budget {p.budget} evaluations per search; output {run}")

    # ---- 1 + 2: the searches, through the distributed path
    worker_args = ["--heartbeat", "1.0", "--log-format", "json", "--log-level", log_level]
    if data_root:
        worker_args += ["--data-root", str(data_root)]
    if download:
        worker_args.append("--download")
    if device:
        worker_args += ["--device", device]
    searches: list[dict[str, Any]] = []
    search_started = time.perf_counter()
    with _SearchRunner(local_workers, worker_args, stop, echo) as runner:
        for epochs in p.search_epochs:
            engine = EvolutionEngine(mu=p.population, lam=p.offspring, seed=config.seed)
            searches.append(runner.run(f"evolution-{epochs}ep", engine, config.spec(epochs), p.generations))
        for epochs in p.random_epochs:
            for k in range(p.random_seeds):
                strategy = RandomSearch(mu=p.population, batch=p.offspring, seed=config.seed + k)
                searches.append(runner.run(f"random-{epochs}ep-seed{config.seed + k}", strategy,
                                           config.spec(epochs), p.generations))
        broker_stats = runner.broker.stats.as_dict()
        worker_restarts = runner.workers.restarts
    search_seconds = time.perf_counter() - search_started

    # ---- 3: retraining (each distinct genotype once), models saved under models/
    retrain_spec = config.spec(p.retrain_epochs)
    manifold_spec = config.spec(p.manifold_epochs)
    roles: dict[str, tuple[str, TrainSpec]] = {}  # role -> (genotype, spec)
    evolution = [s for s in searches if s["strategy"] == "EvolutionEngine"]
    randoms = [s for s in searches if s["strategy"] == "RandomSearch"]
    for s in evolution:
        for which in ("best", "worst"):
            if s[which]:
                roles[f"{s['name']}/{which}"] = (s[which]["genotype"], retrain_spec)
        if s["best"]:
            g = Genotype.parse(s["best"]["genotype"])
            roles[f"{s['name']}/best-latent2"] = (str(Genotype(g.encoder, 2, g.decoder)), manifold_spec)
    for s in randoms:
        if s["best"]:
            roles[f"{s['name']}/best"] = (s["best"]["genotype"], retrain_spec)
    roles["hand-designed"] = (str(HAND_DESIGNED), retrain_spec)
    dirs: dict[tuple[str, str], str] = {}
    jobs = []
    for role, (genotype, spec) in roles.items():
        key = (genotype, spec.canonical)
        if key not in dirs:
            dirs[key] = f"models/{role.replace('/', '-')}"
            jobs.append((genotype, spec, run / dirs[key]))
    echo(f"retraining {len(jobs)} models ({p.retrain_epochs} epochs; latent-2 variants {p.manifold_epochs} epochs) "
         f"in {local_workers} processes")
    retrain_started = time.perf_counter()
    infos = retrain_many(jobs, device=device, data_root=data_root, download=download,
                         processes=max(1, local_workers), threads_each=max(1, _cores() // max(1, local_workers)),
                         log_format=log_format, log_level=log_level)
    retrain_seconds = time.perf_counter() - retrain_started
    by_path = {Path(info["path"]).relative_to(run).as_posix(): info for info in infos}
    retrained: dict[str, dict[str, Any]] = {}
    for role, (genotype, spec) in roles.items():
        rel = dirs[(genotype, spec.canonical)]
        info = by_path[rel]
        losses = info["losses"]
        retrained[role] = {
            "genotype": genotype, "model_dir": rel, "epochs": spec.epochs, "parameters": info["parameters"],
            "ok": info["ok"], "error": info["error"], "seconds": info["seconds"],
            "validation": losses["validation"], "validation_curve": losses["validation_curve"],
            "train_curve": losses["train_curve"], "test": losses["test"],
        }

    # ---- 4: tables
    table1 = []
    for s in evolution:
        for which in ("best", "worst"):
            row = s[which]
            if not row:
                continue
            r = retrained[f"{s['name']}/{which}"]
            table1.append({
                "search": s["name"], "search_epochs": s["epochs"], "role": which, "genotype": row["genotype"],
                "parameters": r["parameters"], "search_loss": row["loss"], "retrain_epochs": r["epochs"],
                "val_loss": r["validation"]["loss"], "test_loss": r["test"].get("loss"),
                "test_recon": r["test"].get("recon"), "test_kl": r["test"].get("kl"),
            })
    comparison = []
    for s in evolution:
        if not s["best"]:
            continue
        r = retrained[f"{s['name']}/best"]
        comparison.append({
            "method": f"evolution, {s['epochs']}-epoch search", "kind": "evolution", "search_epochs": s["epochs"],
            "seeds": [s["seed"]], "genotypes": [s["best"]["genotype"]], "evaluations": s["evaluation_count"],
            "search_loss": _stats([s["best"]["loss"]]), "val_loss": _stats([r["validation"]["loss"]]),
            "test_loss": _stats([r["test"]["loss"]] if r["test"] else []),
        })
    for epochs in p.random_epochs:
        group = [s for s in randoms if s["epochs"] == epochs and s["best"]]
        if not group:
            continue
        rs = [retrained[f"{s['name']}/best"] for s in group]
        comparison.append({
            "method": f"random search, {epochs}-epoch search, {len(group)} seeds", "kind": "random",
            "search_epochs": epochs, "seeds": [s["seed"] for s in group],
            "genotypes": [s["best"]["genotype"] for s in group],
            "evaluations": statistics.fmean(s["evaluation_count"] for s in group),
            "search_loss": _stats([s["best"]["loss"] for s in group]),
            "val_loss": _stats([r["validation"]["loss"] for r in rs]),
            "test_loss": _stats([r["test"]["loss"] for r in rs if r["test"]]),
        })
    hand = retrained["hand-designed"]
    comparison.append({
        "method": "hand-designed (PyTorch example VAE)", "kind": "hand-designed", "search_epochs": None,
        "seeds": [config.seed], "genotypes": [str(HAND_DESIGNED)], "evaluations": 0,
        "search_loss": _stats([]), "val_loss": _stats([hand["validation"]["loss"]]),
        "test_loss": _stats([hand["test"]["loss"]] if hand["test"] else []),
    })

    # ---- 5: figures
    figures_started = time.perf_counter()
    figures = _draw_figures(run, config, evolution, searches, retrained, load_model)
    figures_seconds = time.perf_counter() - figures_started

    import torch

    results = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "experiment": "paper",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "preset": asdict(p),
        "metric": METRIC,
        "protocol": protocol,
        "environment": {
            "python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "cores": _cores(), "device": device or ("cuda" if torch.cuda.is_available() else "cpu"),
            "trainer_version": TRAINER_VERSION,
        },
        "searches": searches,
        "retrained": retrained,
        "table1": table1,
        "comparison": comparison,
        "figures": figures,
        "transport": {"broker": broker_stats, "worker_restarts": worker_restarts},
        "timings": {"searches_s": search_seconds, "retrain_s": retrain_seconds, "figures_s": figures_seconds,
                    "total_s": time.perf_counter() - started, "cpu_s": _cpu_seconds()},
    }
    (run / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (run / "report.md").write_text(render_report(results))
    echo(f"done in {results['timings']['total_s']:.0f}s: {run / 'report.md'}")
    return results


def _draw_figures(run: Path, config: ExperimentConfig, evolution: list[dict], searches: list[dict],
                  retrained: dict[str, dict], load_model) -> list[dict[str, Any]]:
    from gpuworker.figures import as_images, manifold_images, plot_curves, sample_images, save_grid

    p = config.preset
    figures: list[dict[str, Any]] = []
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    colour_of = {s["epochs"]: colours[i % len(colours)] for i, s in enumerate(evolution)}
    markers = ["x", "+", "^", "v", "d", "."]

    def random_style(s: dict[str, Any]) -> dict[str, Any]:
        return {"color": colour_of.get(s["epochs"], "tab:gray"), "linestyle": ":", "alpha": 0.8,
                "marker": markers[(s["seed"] - config.seed) % len(markers)], "markersize": 4}

    # Fig. 2/3: validation loss per retraining epoch, best and worst of each evolutionary search
    series, styles = {}, {}
    for i, s in enumerate(evolution):
        for which, line in (("best", "-"), ("worst", "--")):
            r = retrained.get(f"{s['name']}/{which}")
            if r and r["validation_curve"]:
                label = f"{s['epochs']}-epoch search, {which}: {r['genotype']}"
                series[label] = r["validation_curve"]
                styles[label] = {"color": colours[i % len(colours)], "linestyle": line, "marker": "o", "markersize": 3}
    name = f"curves-{config.dataset}.png"
    plot_curves(series, run / name, styles=styles,
                title=f"{config.dataset}: validation loss while retraining {p.retrain_epochs} epochs")
    figures.append({"file": name, "kind": "figure-2-3", "caption":
                    f"Validation negative ELBO per epoch while retraining the best (solid) and worst (dashed) "
                    f"architecture of each evolutionary search for {p.retrain_epochs} epochs (the paper's Fig. 2/3)."})

    # the baselines' curves beside the evolution's best
    series, styles = {}, {}
    for i, s in enumerate(evolution):
        r = retrained.get(f"{s['name']}/best")
        if r and r["validation_curve"]:
            label = f"evolution {s['epochs']}-ep best: {r['genotype']}"
            series[label] = r["validation_curve"]
            styles[label] = {"color": colours[i % len(colours)], "marker": "o", "markersize": 3}
    for s in searches:
        r = retrained.get(f"{s['name']}/best") if s["strategy"] == "RandomSearch" else None
        if r and r["validation_curve"]:
            label = f"random {s['epochs']}-ep seed {s['seed']} best: {r['genotype']}"
            series[label] = r["validation_curve"]
            styles[label] = random_style(s)
    hand = retrained["hand-designed"]
    if hand["validation_curve"]:
        label = f"hand-designed: {hand['genotype']}"
        series[label] = hand["validation_curve"]
        styles[label] = {"color": "black", "linestyle": "-.", "marker": "s", "markersize": 3}
    name = f"comparison-curves-{config.dataset}.png"
    plot_curves(series, run / name, styles=styles,
                title=f"{config.dataset}: retraining the best of each method")
    figures.append({"file": name, "kind": "comparison", "caption":
                    "Validation negative ELBO per retraining epoch: the evolutionary searches' best (solid), each "
                    "random search's best (dotted, coloured like the evolutionary search with the same epochs) and "
                    "the hand-designed 400|20|400 (black)."})

    # search progress: best validation loss in the population after each generation
    series, styles = {}, {}
    for s in searches:
        losses = [g["best_loss"] for g in s["generations"]]
        if all(v is not None for v in losses):
            series[s["name"]] = losses
            styles[s["name"]] = ({"color": colour_of.get(s["epochs"], "tab:gray"), "marker": "o", "markersize": 3}
                                 if s["strategy"] == "EvolutionEngine" else random_style(s))
    name = f"search-progress-{config.dataset}.png"
    plot_curves(series, run / name, styles=styles, x_start=0, xlabel="generation",
                ylabel="best validation loss so far (nats/image)",
                title=f"{config.dataset}: best loss per generation (each at its own search epochs)")
    figures.append({"file": name, "kind": "progress", "caption":
                    "Best validation loss in the population after each generation (generation 0 = the random "
                    "initial population). Losses of searches with different epochs are not comparable."})

    # Fig. 4 and Fig. 5
    for s in evolution:
        r = retrained.get(f"{s['name']}/best-latent2")
        if r and r["ok"]:
            model, info = load_model(run / r["model_dir"])
            name = f"manifold-{s['name']}.png"
            save_grid(as_images(manifold_images(model, p.manifold_steps), info["input_shape"]), run / name,
                      nrow=p.manifold_steps, padding=0)
            figures.append({"file": name, "kind": "figure-4", "caption":
                            f"2-D latent manifold of the {s['epochs']}-epoch search's best architecture retrained "
                            f"with latent size 2 ({r['genotype']}, {r['epochs']} epochs, validation loss "
                            f"{r['validation']['loss']:.2f}): sigmoid(decode(z)) for z = Phi^-1(u) on a "
                            f"{p.manifold_steps} x {p.manifold_steps} grid of cell centres u over the unit square "
                            "(the paper's Fig. 4)."})
    for s in evolution:
        r = retrained.get(f"{s['name']}/best")
        if r and r["ok"]:
            model, info = load_model(run / r["model_dir"])
            name = f"samples-{s['name']}.png"
            save_grid(as_images(sample_images(model, p.samples, seed=config.seed), info["input_shape"]), run / name,
                      nrow=8)
            figures.append({"file": name, "kind": "figure-5", "caption":
                            f"{p.samples} samples from p(x|z), z ~ N(0, I) (pixel means sigmoid(decode(z))), of the "
                            f"{s['epochs']}-epoch search's best architecture {r['genotype']} after retraining "
                            "(the paper's Fig. 5)."})
    return figures


# ------------------------------------------------------------------------------------------ report

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


def render_report(results: dict[str, Any]) -> str:
    """report.md from results.json's content (every number in it comes from ``results``)."""
    pr = results["protocol"]
    preset = results["preset"]
    env = results["environment"]
    t = results["timings"]
    lines: list[str] = []
    add = lines.append
    add(f"# Evolutionary VAE search on {pr['dataset']}: the paper's experiments (preset `{preset['name']}`)")
    add("")
    add(f"Generated by `evovae experiment paper --dataset {pr['dataset']} --preset {preset['name']}` on "
        f"{results['created']}; every number below is in `results.json` beside this file. "
        f"Preset: {preset['summary']}.")
    add("")
    add("## Metric")
    add("")
    add(f"Loss = {results['metric']}. Lower is better; the search's fitness is 1 / loss on the validation split. "
        "Continuous-pixel BCE includes the entropy of the grey levels, so these figures are not comparable with "
        "log-likelihoods on binarised MNIST.")
    add("")
    add("## Protocol")
    add("")
    add("| | |")
    add("|---|---|")
    rows = [
        ("data set", f"{pr['dataset']}, images {'x'.join(map(str, pr['input_shape']))}"),
        ("training images", f"{pr['train_images']:,}" + (f" (the first {preset['train_subset']:,} of the training "
                                                          "set left after the validation split)"
                                                          if preset["train_subset"] else " (all left after the validation split)")),
        ("validation images", f"{pr['validation_images']:,}, carved from the training set by a permutation seeded "
                              f"with split seed {pr['split_seed']} (the same split for every task)"),
        ("test images", f"{pr['test_images']:,} (the data set's test set; used only after retraining)"),
        ("training", f"Adam lr {pr['lr']}, mini-batch {pr['batch_size']}, training seed {pr['seed']} for every run"),
        ("search", f"(mu + lambda) evolution, mu = {pr['population']}, lambda = {pr['offspring']}, "
                   f"{pr['generations']} generations counting the initial one, seed {pr['seed']}"),
        ("evaluation budget", f"{pr['budget']} evaluations per search (mu + (generations - 1) x lambda); an "
                              "offspring already seen is dropped, not evaluated, so evolution may use fewer"),
        ("search epochs", ", ".join(f"{e}" for e in pr["search_epochs"]) + " (one evolutionary search each)"),
        ("random search", f"the same budget, {len(pr['random_seeds'])} seeds ({', '.join(map(str, pr['random_seeds']))})"
                          f", candidates trained {' and '.join(map(str, pr['random_epochs']))} epoch(s)"),
        ("hand-designed baseline", "`400\\|20\\|400` (the PyTorch example VAE 784-400-20-400-784)"),
        ("retraining", f"{pr['retrain_epochs']} epochs, same data and seed (the paper: 20)"),
        ("Fig. 4 models", f"best architectures with latent size 2, {pr['manifold_epochs']} epochs"),
        ("workers", f"{pr['local_workers']} local worker processes over ZeroMQ (loopback), {env['device']}, "
                    f"{env['cores']} cores, torch {env['torch']}"),
        ("wall time", f"{t['total_s'] / 60:.1f} min (searches {t['searches_s'] / 60:.1f}, retraining "
                      f"{t['retrain_s'] / 60:.1f}, figures {t['figures_s']:.0f} s)"
                      + (f"; CPU time {t['cpu_s'] / 60:.1f} min (head, workers and retraining processes)"
                         if t.get("cpu_s") else "")),
    ]
    for key, value in rows:
        add(f"| {key} | {value} |")
    add("")
    add("Searches run (evaluations = genotypes evaluated; reused = results already computed earlier in this "
        "experiment for the same genotype and training spec, e.g. the shared random generation 0):")
    add("")
    add("<!-- table:searches -->")
    add("| Search | Strategy | Seed | Epochs | Evaluations | Trained | Reused | Failed | Duplicates dropped | "
        "Best loss | Best architecture | Minutes |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in results["searches"]:
        best = s["best"]
        add(f"| {s['name']} | {s['strategy']} | {s['seed']} | {s['epochs']} | {s['evaluation_count']} | "
            f"{s['trained']} | {s['reused']} | {s['failed']} | {s['duplicates_dropped']} | "
            f"{_f(best['loss'] if best else None)} | {_arch(best['genotype']) if best else 'n/a'} | "
            f"{s['seconds'] / 60:.1f} |")
    add("")
    add("## Table I: best and worst architecture of each search")
    add("")
    add("Best and worst = the lowest and the highest validation loss among all the search's successful "
        f"evaluations. Search loss: validation loss after the search's epochs; then each architecture is "
        f"retrained {pr['retrain_epochs']} epochs and measured on the validation and the test set "
        "(test loss split into its reconstruction and KL parts).")
    add("")
    add("<!-- table:table1 -->")
    add("| Search | Which | Architecture | Parameters | Search loss | Validation loss | Test loss | Test recon | Test KL |")
    add("|---|---|---|---|---|---|---|---|---|")
    for r in results["table1"]:
        add(f"| {r['search_epochs']}-epoch | {r['role']} | {_arch(r['genotype'])} | {r['parameters']:,} | "
            f"{_f(r['search_loss'])} | {_f(r['val_loss'])} | {_f(r['test_loss'])} | {_f(r['test_recon'])} | "
            f"{_f(r['test_kl'])} |")
    add("")
    add("## Comparison with the baselines")
    add("")
    add(f"All after retraining {pr['retrain_epochs']} epochs. Random search: mean ± sample standard deviation "
        "over its seeds (each seed's best architecture retrained). Search loss: the best validation loss the "
        "search found at its own epochs.")
    if len(pr["random_epochs"]) > 1:
        add("")
        add("Random search proposes genotypes without looking at fitness, so the random searches with the same "
            "seed at different epochs evaluate the same genotypes; only which of them counts as best can differ "
            "(and when it does not, their rows below are the same retrained models).")
    add("")
    add("<!-- table:comparison -->")
    add("| Method | Architecture(s) | Evaluations | Search loss | Validation loss | Test loss |")
    add("|---|---|---|---|---|---|")
    for c in results["comparison"]:
        evals = c["evaluations"]
        evals_text = "-" if not evals else (f"{evals:g}" + (" each" if c["kind"] == "random" else ""))
        add(f"| {c['method']} | {', '.join(_arch(g) for g in c['genotypes'])} | {evals_text} | "
            f"{_pm(c['search_loss'])} | {_pm(c['val_loss'])} | {_pm(c['test_loss'])} |")
    add("")
    add(_verdict(results))
    add("")
    add("## Figures")
    add("")
    for fig in results["figures"]:
        add(f"![{fig['kind']}]({fig['file']})")
        add("")
        add(f"*{fig['file']}*: {fig['caption']}")
        add("")
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
            if e_test < mean - std:
                word = "better than"
            elif e_test > mean + std:
                word = "worse than"
            else:
                word = "within"
            against.append(f"{word} random search at {r['search_epochs']} epochs ({_pm(r['test_loss'])})")
        for h in hand:
            word = "better than" if e_test < h["test_loss"]["mean"] else "worse than"
            against.append(f"{word} the hand-designed 400|20|400 ({_f(h['test_loss']['mean'])})")
        parts.append(f"The {e['search_epochs']}-epoch search's best has test loss {_f(e_test)}: "
                     + "; ".join(against))
    return ("**Verdict** (test loss after retraining, lower is better; \"within\" = within one standard deviation "
            "of the random-search mean). " + ". ".join(parts) + ".")


# ------------------------------------------------------------------------------------------- command
