"""``evovae experiment paper``: the paper's experiments, end to end, into one report - resumable.

What it runs (Hajewski & Oliveira 2020, on one data set), each phase a function below:

1. the searches (:meth:`ExperimentConfig.searches`): the evolutionary search once per entry of
   ``search_epochs`` (the paper: 2 and 5), and random search at the same evaluation budget over several seeds;
   each a named search with a journal of its own under ``RUN_DIR/searches/NAME/``, run through the head's
   :class:`~evo.head.runner.Runner` on a cluster (:class:`~evo.head.cluster.Cluster`: local worker processes,
   remote ones, or both) and sharing one result cache, ``RUN_DIR/results.sqlite`` (the evolution and the
   random search with the same seed share their generation 0);
2. retraining (:mod:`evo.experiments.retrain`) of the best and worst genotype of each evolutionary search, of
   each random search's best and of the hand-designed ``400|20|400``: those that only need numbers by the
   workers, as tasks (journaled under ``RUN_DIR/tasks/retrain/``); the models the figures draw from (each
   evolutionary search's best, and its latent-2 variant for Fig. 4) here, into ``RUN_DIR/models/``;
3. Table I and the comparison with the baselines; the figures (:mod:`evo.experiments.figures`);
4. ``RUN_DIR/results.json`` (every number, every evaluation of every search) and ``RUN_DIR/report.md``
   (:func:`evo.experiments.report.render_report`, a pure function of results.json).

Killed at any moment (even by SIGKILL), ``--resume RUN_DIR`` continues: a finished search is read back, an
unfinished one replayed from its journal and run on, a retraining task or a saved model is never trained
again. The settings come from ``RUN_DIR/experiment.json``.
"""
from __future__ import annotations

import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import structlog

from ..genotype import Genotype, parse_genotype
from ..head.cluster import Cluster, ClusterOptions, cores_per_worker
from ..head.evaluators import SearchStopped
from ..head.progress import format_report
from ..spec import TRAINER_VERSION, task_id
from ..strategy import Report, Strategy
from .presets import HAND_DESIGNED, PRESETS, ExperimentConfig, Preset, SearchPlan
from .report import render_report
from .retrain import Retraining, retrain_numbers, train_models
from .runs import PaperRun
from .searches import BenchWatch, SearchBench, evaluation_rows

if TYPE_CHECKING:  # imported when used: it loads torch
    from gpuworker.data import Splits

__all__ = ["HAND_DESIGNED", "PRESETS", "ExperimentConfig", "PaperRun", "Preset", "render_report", "run_paper"]

log = structlog.get_logger(__name__)

RESULTS_FORMAT = "evovae-experiment"
RESULTS_VERSION = 1

Echo = Callable[[str], None]


@dataclass(frozen=True)
class LocalSettings:
    """How this machine trains the models the figures need (and how its retraining processes log)."""

    processes: int
    threads_each: int
    device: str | None = None
    data_root: str | None = None
    download: bool = False
    log_format: str = "json"
    log_level: str = "warning"

    @classmethod
    def of(cls, options: ClusterOptions, log_format: str) -> LocalSettings:
        processes = max(1, options.local_workers)
        return cls(processes, cores_per_worker(processes, options.threads), options.device, options.data_root,
                   options.download, log_format, options.log_level)


# ------------------------------------------------------------------------------------ phase 1: searches

def _stats(values: Sequence[float]) -> dict[str, Any]:
    values = [float(v) for v in values]
    if not values:
        return {"mean": None, "std": None, "n": 0, "values": []}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "values": values}


def _extremes(rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(best, worst) successful evaluation of a search: lowest and highest validation loss (the first on a tie)."""
    ok = [r for r in rows if r["loss"] is not None]
    if not ok:
        return None, None
    return min(ok, key=lambda r: r["loss"]), max(ok, key=lambda r: r["loss"])


def search_record(strategy: Strategy) -> dict[str, Any]:
    """What the experiment keeps of a finished search (its ``result.json``)."""
    rows = evaluation_rows(strategy)
    best, worst = _extremes(rows)
    return {
        "strategy": type(strategy).__name__, "seed": strategy.seed, "epochs": strategy.final_epochs,
        "population": strategy.mu, "epochs_total": strategy.asked_epochs,
        "generations": [{"generation": r.generation, "evaluated": r.evaluated, "failed": r.failed,
                         "duplicates": r.duplicates, "best_loss": r.best.loss if r.best else None,
                         "median_loss": r.median_loss, "total_evaluations": r.total_evaluations}
                        for r in strategy.history],
        "evaluation_count": len(rows), "failed": sum(r["loss"] is None for r in rows),
        "duplicates_dropped": sum(r.duplicates for r in strategy.history),
        "final_population": [str(e.genotype) for e in strategy.population],
        "best": best, "worst": worst, "evaluations": rows,
    }


def _mark_reused(searches: list[dict[str, Any]], plans: Sequence[SearchPlan]) -> None:
    """Each evaluation whose result an earlier search of the experiment had already paid for is ``reused``
    (the shared cache answered it): the same genotype and training spec, hence the same task id."""
    paid: set[str] = set()
    for s, plan in zip(searches, plans, strict=True):
        for row in s["evaluations"]:
            tid = task_id(parse_genotype(row["genotype"]), plan.spec)
            row["reused"] = tid in paid
            if row.get("state") != "lost":
                paid.add(tid)
        s["reused"] = sum(r["reused"] for r in s["evaluations"])
        s["trained"] = s["evaluation_count"] - s["reused"]
        for which in ("best", "worst"):
            if s[which] is not None:
                s[which] = next(r for r in s["evaluations"] if r["genotype"] == s[which]["genotype"])


def run_searches(bench: SearchBench, config: ExperimentConfig, run: PaperRun) -> list[dict[str, Any]]:
    """Every search of the experiment (phase 1), each resumed or read back when it ran before."""
    plans = config.searches()
    searches = []
    for plan in plans:
        with run.timed("searches_s"):
            summary = bench.search(plan.name, plan.options, plan.spec, summary=search_record)
        searches.append({**summary, "kind": plan.kind})
    _mark_reused(searches, plans)
    return searches


# ----------------------------------------------------------------------------------- phase 2: retraining

def retraining_plan(config: ExperimentConfig, searches: list[dict[str, Any]]) -> list[Retraining]:
    """What is retrained: best and worst of each evolutionary search (the best with weights, for Fig. 5), its
    best with latent size 2 (weights, for Fig. 4), each random search's best and the hand-designed VAE."""
    p = config.preset
    retrain, manifold = config.spec(p.retrain_epochs), config.spec(p.manifold_epochs)
    jobs = []
    for s in searches:
        if s["kind"] == "evolution" and s["best"]:
            g = Genotype.parse(s["best"]["genotype"])
            jobs.append(Retraining(f"{s['name']}/best", s["best"]["genotype"], retrain, weights=True))
            jobs.append(Retraining(f"{s['name']}/worst", s["worst"]["genotype"], retrain))
            jobs.append(Retraining(f"{s['name']}/best-latent2", str(Genotype(g.encoder, 2, g.decoder)), manifold,
                                   weights=True))
        elif s["kind"] == "random" and s["best"]:
            jobs.append(Retraining(f"{s['name']}/best", s["best"]["genotype"], retrain))
    jobs.append(Retraining("hand-designed", str(HAND_DESIGNED), retrain))
    return jobs


# ------------------------------------------------------------------------------------- phase 3: tables

def table_one(searches: list[dict[str, Any]], retrained: dict[str, dict]) -> list[dict[str, Any]]:
    rows = []
    for s in (s for s in searches if s["kind"] == "evolution"):
        for which in ("best", "worst"):
            row = s[which]
            if not row:
                continue
            r = retrained[f"{s['name']}/{which}"]
            rows.append({
                "search": s["name"], "search_epochs": s["epochs"], "role": which, "genotype": row["genotype"],
                "parameters": r["parameters"], "search_loss": row["loss"], "retrain_epochs": r["epochs"],
                "val_loss": r["validation"]["loss"], "test_loss": r["test"].get("loss"),
                "test_recon": r["test"].get("recon"), "test_kl": r["test"].get("kl"),
            })
    return rows


def _test(records: Sequence[dict]) -> dict[str, Any]:
    return _stats([r["test"]["loss"] for r in records if r["test"].get("loss") is not None])


def comparison(config: ExperimentConfig, searches: list[dict[str, Any]], retrained: dict[str, dict]) -> list[dict]:
    rows = []
    for s in (s for s in searches if s["kind"] == "evolution" and s["best"]):
        r = retrained[f"{s['name']}/best"]
        rows.append({"method": f"evolution, {s['epochs']}-epoch search", "kind": "evolution",
                     "search_epochs": s["epochs"], "seeds": [s["seed"]], "genotypes": [s["best"]["genotype"]],
                     "evaluations": s["evaluation_count"], "search_loss": _stats([s["best"]["loss"]]),
                     "val_loss": _stats([r["validation"]["loss"]]), "test_loss": _test([r])})
    for epochs in config.preset.random_epochs:
        group = [s for s in searches if s["kind"] == "random" and s["epochs"] == epochs and s["best"]]
        if not group:
            continue
        rs = [retrained[f"{s['name']}/best"] for s in group]
        rows.append({"method": f"random search, {epochs}-epoch search, {len(group)} seeds", "kind": "random",
                     "search_epochs": epochs, "seeds": [s["seed"] for s in group],
                     "genotypes": [s["best"]["genotype"] for s in group],
                     "evaluations": statistics.fmean(s["evaluation_count"] for s in group),
                     "search_loss": _stats([s["best"]["loss"] for s in group]),
                     "val_loss": _stats([r["validation"]["loss"] for r in rs]), "test_loss": _test(rs)})
    hand = retrained["hand-designed"]
    rows.append({"method": "hand-designed (PyTorch example VAE)", "kind": "hand-designed", "search_epochs": None,
                 "seeds": [config.seed], "genotypes": [str(HAND_DESIGNED)], "evaluations": 0,
                 "search_loss": _stats([]), "val_loss": _stats([hand["validation"]["loss"]]),
                 "test_loss": _test([hand])})
    return rows


# ---------------------------------------------------------------------------------------- the run

def _protocol(config: ExperimentConfig, options: ClusterOptions, data: Splits) -> dict[str, Any]:
    from transport.endpoints import is_loopback_endpoint

    p = config.preset
    own = {} if config.spec(1).builtin else {  # left out for the built-in sets: their report reads as before
        "data_name": config.data_name, "data_kind": data.kind, "data_sha256": config.data_sha256,
        "likelihood": config.likelihood, "columns": config.columns, "image_size": config.image_size,
        "missing": config.missing}
    return {
        "dataset": config.dataset, **own, "input_shape": list(data.shape), "train_images": len(data.train),
        "validation_images": len(data.val), "test_images": len(data.test), "split_seed": config.split_seed,
        "seed": config.seed, "batch_size": config.batch_size, "lr": config.lr, "population": p.population,
        "offspring": p.offspring, "generations": p.generations, "budget": p.budget,
        "search_epochs": list(p.search_epochs), "random_epochs": list(p.random_epochs),
        "random_seeds": config.random_seeds, "retrain_epochs": p.retrain_epochs,
        "manifold_epochs": p.manifold_epochs, "local_workers": options.local_workers, "bind": options.bind,
        "loopback": is_loopback_endpoint(options.bind) and is_loopback_endpoint(options.sink),
    }


def _environment(device: str | None) -> dict[str, Any]:
    from gpuworker.train import torch_environment

    from ..head.cluster import available_cores

    torch_env = torch_environment()
    return {"python": platform.python_version(), "torch": torch_env["torch"], "machine": platform.machine(),
            "cores": available_cores(), "device": device or torch_env["device"], "trainer_version": TRAINER_VERSION}


def _on_cluster(run: PaperRun, config: ExperimentConfig, cluster: Cluster, stop: threading.Event,
                echo: Echo, watch: BenchWatch | None = None) -> tuple[list[dict], list[Retraining], dict[str, dict]]:
    """Phases 1 and 2a: the searches and the retrainings that only need numbers, on the cluster."""
    started = time.perf_counter()

    def progress(name: str, report: Report) -> None:
        echo(f"[{name}] " + format_report(report, f"{cluster.stats_line()}  {time.perf_counter() - started:.0f}s"))

    bench = SearchBench(run.path, cluster.evaluator(stop), cluster.capacity, cache=run.cache, on_report=progress,
                        watch=watch)
    try:
        searches = run_searches(bench, config, run)
        jobs = retraining_plan(config, searches)
        echo(f"retraining {sum(not j.weights for j in jobs)} genotypes on the workers "
             f"({config.preset.retrain_epochs} epochs, test split measured)")
        with run.timed("retrain_s"):
            numbers = retrain_numbers(bench, "retrain", jobs)
    finally:
        run.add_transport(cluster.stats())
    return searches, jobs, numbers


def run_paper(config: ExperimentConfig, run: PaperRun, cluster: Cluster, *,
              stop: threading.Event | None = None, echo: Echo = lambda line: None,
              log_format: str = "json", log_level: str | None = None,
              watch: BenchWatch | None = None) -> dict[str, Any]:
    """Run (or continue) the whole experiment in ``run``; return the results (also written as results.json).

    ``cluster`` (not started yet) serves the searches and the retraining tasks. ``echo`` receives one progress
    line per generation and per phase; ``watch`` follows the searches and task batches (a live display).
    ``log_format``/``log_level``: of the processes that train the figures' models here (default level: the
    cluster's). Raises :class:`gpuworker.data.DataError` when the data set is missing,
    ClusterError when the cluster cannot bind, SearchStopped when ``stop`` was set.
    """
    from gpuworker.data import splits

    stop, options = stop or threading.Event(), cluster.options
    p = config.preset
    data = splits(config.spec(1), "cpu", options.data_root, options.download)  # fail fast, before any worker
    protocol = _protocol(config, options, data)
    echo(f"experiment paper: {config.data_name}, preset {p.name}: {protocol['train_images']} training / "
         f"{protocol['validation_images']} validation / {protocol['test_images']} test examples; "
         f"budget {p.budget} evaluations per search; output {run.path}")
    with cluster:
        echo(cluster.describe())
        searches, jobs, retrained = _on_cluster(run, config, cluster, stop, echo, watch)
    if stop.is_set():
        raise SearchStopped("stopped before the models were trained")
    local = LocalSettings.of(replace(options, log_level=log_level or options.log_level), log_format)
    models_here = sum(j.weights for j in jobs)
    echo(f"training {models_here} models for the figures here, in {local.processes} processes")
    if watch is not None:  # the phase a live display names now: the figures' models, on this machine
        watch.tasks("figures", models_here, 0)
    with run.timed("retrain_s"):
        models, trained = train_models(run.path, jobs, processes=local.processes, threads_each=local.threads_each,
                                       device=local.device, data_root=local.data_root, download=local.download,
                                       log_format=local.log_format, log_level=local.log_level, stop=stop)
    retrained.update(models)
    log.info("experiment.models", trained_now=trained, reused=len({j.key for j in jobs if j.weights}) - trained)
    return _finish(run, config, protocol, searches, {j.role: retrained[j.role] for j in jobs}, echo, options.device)


def _finish(run: PaperRun, config: ExperimentConfig, protocol: dict, searches: list[dict], retrained: dict,
            echo: Echo, device: str | None) -> dict[str, Any]:
    """Phases 3 and 4: tables, figures, results.json and report.md."""
    from dataclasses import asdict

    from .figures import draw_paper_figures

    results: dict[str, Any] = {
        "format": RESULTS_FORMAT, "version": RESULTS_VERSION, "experiment": "paper",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "preset": asdict(config.preset),
        "metric": config.metric, "protocol": protocol, "environment": _environment(device), "searches": searches,
        "retrained": retrained, "table1": table_one(searches, retrained),
        "comparison": comparison(config, searches, retrained),
    }
    with run.timed("figures_s"):
        results["figures"] = draw_paper_figures(run.path, results)
    results["transport"] = run.transport()
    results["timings"] = run.timings()
    run.write_results(results, render_report(results))
    echo(f"done in {results['timings']['total_s']:.0f}s: {run.path / 'report.md'}")
    return results

