"""``evovae experiment compare``: strategies against each other at equal compute, over seeds.

Each arm (a strategy with its settings) runs once per seed with the same budget of training epochs, on the same
data and validation split; every search is a named search with a journal of its own (evo.experiments.searches),
so a killed comparison resumes where it stopped. Then each search's best genotype is retrained
``retrain_epochs`` epochs and measured on the test split, as the negative ELBO and as the negative
importance-weighted bound with ``iw_samples`` samples. The numbers (results.json) feed the report
(evo.experiments.compare_report).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..genotype import parse_genotype
from ..spec import TrainSpec
from ..strategies import DEFAULT_NOISE_LEVEL, DEFAULT_RUNG_AGREEMENT, StrategyOptions
from .peers import PEER_CONTINUING, PEERS, make_peer, peer_config
from .searches import SearchBench
from .stats import bootstrap_mean_ci, mean_sd
from .wallclock import wallclock_summary

__all__ = ["ARMS", "COMPARE_PRESETS", "CONTINUING", "ComparePreset", "arm_options", "generational", "run_arm",
           "run_compare", "summarize"]


@dataclass(frozen=True)
class ComparePreset:
    """The sizes of one comparison (fields may be overridden on the command line)."""

    name: str
    summary: str
    train_subset: int
    val_size: int
    epochs: int               # the final fidelity: every arm's losses are compared after this many epochs
    budget_epochs: int        # per search
    population: int
    offspring: int
    fidelities: tuple[int, ...]  # the multi-fidelity arm's rungs (the last equals ``epochs``)
    eta: int
    seeds: int
    retrain_epochs: int
    iw_samples: int
    arms: tuple[str, ...] = ("tpe-multifidelity", "multifidelity", "evolution", "random", "regularized", "tpe")
    tournament_size: int = 3
    startup_trials: int = 10
    asha_fidelities: tuple[int, ...] = ()  # the asha and hyperband arms' rungs (default: ``fidelities``)
    first_seed: int = 0       # the seeds are first_seed .. first_seed + seeds - 1

    @property
    def seed_values(self) -> range:
        """The seeds every arm runs with."""
        return range(self.first_seed, self.first_seed + self.seeds)

    @property
    def rungs(self) -> tuple[int, ...]:
        """The rungs of the asynchronous arms."""
        return self.asha_fidelities or self.fidelities


COMPARE_PRESETS = {
    "tiny": ComparePreset("tiny", "a smoke test of the whole pipeline (tests); numbers mean nothing",
                          train_subset=300, val_size=200, epochs=2, budget_epochs=16, population=3, offspring=3,
                          fidelities=(1, 2), eta=2, seeds=2, retrain_epochs=2, iw_samples=4,
                          startup_trials=3),
    "cpu": ComparePreset("cpu", "six arms x five seeds on a 3,000-image Fashion-MNIST subset, 240 epochs a "
                                "search, compared after 10 epochs (the fidelity study: on this subset the ranking "
                                "after 1-4 epochs hardly predicts the one after 20); about an hour on a 2-core CPU "
                                "with 2 local workers",
                         train_subset=3000, val_size=2000, epochs=10, budget_epochs=240, population=6, offspring=6,
                         fidelities=(3, 10), eta=3, seeds=5, retrain_epochs=20, iw_samples=100,
                         asha_fidelities=(1, 3, 10)),
    "mid": ComparePreset("mid", "evovae's default against the outside peers (DEHB, Optuna's TPE with its "
                                "HyperbandPruner, SMAC3's multi-fidelity facade) and random search, ten seeds "
                                "each on a 12,000-image Fashion-MNIST subset, 240 epochs a "
                                "search, compared after 10 epochs (rungs 1, 3, 10: its fidelity study, run first, "
                                "shows what they predict); a night on a 2-core CPU with 2 local workers, resumable",
                         train_subset=12_000, val_size=5000, epochs=10, budget_epochs=240, population=6,
                         offspring=6, fidelities=(3, 10), eta=3, seeds=10, retrain_epochs=20, iw_samples=100,
                         asha_fidelities=(1, 3, 10),
                         arms=("hedged-adaptive-tpe", "random", "dehb", "optuna-hyperband", "smac")),
    "full": ComparePreset("full", "the paper's scale for a GPU cluster: all 50,000 training images, 10 seeds, "
                                  "500 epochs a search, IW bound with k = 5000",
                          train_subset=0, val_size=10_000, epochs=5, budget_epochs=500, population=10,
                          offspring=10, fidelities=(1, 5), eta=3, seeds=10, retrain_epochs=20, iw_samples=5000),
}

#: arm -> what it is
ARMS = {
    "multifidelity": "(mu + lambda) evolution with successive halving over the preset's fidelities",
    "evolution": "the paper's (mu + lambda) evolution, every candidate at the final fidelity",
    "random": "random search at the final fidelity",
    "regularized": "aging evolution (P = population, S = tournament size), asynchronous",
    "tpe": "Optuna's TPE sampler (ask-and-tell), one proposal per free worker, duplicates answered from the "
           "seen-set",
    "tpe-multifidelity": "TPE proposals with successive halving over the preset's fidelities (after BOHB)",
    "asha-tpe": "TPE proposals under asynchronous successive halving over the preset's asha rungs; promotions "
                "continue from checkpoints",
    "asha-evolution": "(mu + 1) evolution with the local mutation operators under asynchronous successive halving",
    "asha-regularized": "aging evolution with the local mutation operators under asynchronous successive halving",
    "asha-random": "random proposals under asynchronous successive halving (Li et al.'s ASHA)",
    "hyperband-tpe": "TPE proposals under asynchronous Hyperband: one bracket per rung, the last without early "
                     "stopping",
    "hyperband-evolution": "(mu + 1) evolution, local operators, under asynchronous Hyperband",
    "bohb": "TPE proposals, a third of them drawn at random (BOHB's recipe, Falkner et al. 2018), under "
            "asynchronous Hyperband: one bracket per rung, the last without early stopping",
    "adaptive-tpe": "TPE proposals under asynchronous Hyperband whose brackets are dealt new genotypes only while "
                    "their first rung ranks like the final one (rung agreement: Spearman >= 0.5 over the final "
                    "results' learning curves)",
    "hedged-tpe": "TPE proposals under asynchronous Hyperband, drawn at random while the results carry no signal "
                  "(until the best final-fidelity loss beats their median by more than half a percent)",
    "hedged-adaptive-tpe": "TPE proposals under asynchronous Hyperband, drawn at random while the results carry "
                           "no signal (as hedged-tpe), new genotypes dealt only to brackets whose first rung ranks "
                           "like the final one (as adaptive-tpe): evovae search's default",
    **PEERS,  # outside libraries' optimizers, each through its own loop (evo/experiments/peers.py)
}

#: the share of random proposals of the bohb arm (BOHB's default)
BOHB_RANDOM_FRACTION = 1 / 3
#: the noise level of the hedged arms (the default search's): loss differences under half a percent are noise
HEDGED_NOISE_LEVEL = DEFAULT_NOISE_LEVEL
#: the rung agreement of the adaptive arms (the default search's: docs/experiments.md)
ADAPTIVE_AGREEMENT = DEFAULT_RUNG_AGREEMENT

#: the arms whose promotions continue from checkpoints (their workers need a checkpoint store)
CONTINUING = (*(arm for arm in ARMS if arm.startswith(("asha-", "hyperband-", "adaptive-"))), "bohb", "hedged-tpe",
              "hedged-adaptive-tpe",
              *PEER_CONTINUING)


def arm_options(arm: str, p: ComparePreset, seed: int) -> StrategyOptions:
    """The strategy options of ``arm`` in preset ``p`` for ``seed`` (all at the same epoch budget)."""
    base = StrategyOptions(strategy="evolution", population=p.population, offspring=p.offspring, generations=None,
                           budget_epochs=p.budget_epochs, epochs=p.epochs, seed=seed, eta=p.eta,
                           tournament_size=p.tournament_size, startup_trials=p.startup_trials)
    if arm == "multifidelity":
        return replace(base, fidelities=p.fidelities)
    if arm == "evolution":
        return base
    if arm in ("random", "regularized"):
        return replace(base, strategy=arm)
    if arm == "tpe":  # one proposal per free worker, as Optuna users run it
        return replace(base, strategy="tpe", mode="steady-state")
    if arm == "tpe-multifidelity":
        return replace(base, strategy="tpe", fidelities=p.fidelities)
    if arm == "bohb":
        return replace(base, strategy="tpe", mode="asha", fidelities=p.rungs, brackets=len(p.rungs),
                       random_fraction=BOHB_RANDOM_FRACTION)
    if arm in ("hedged-tpe", "hedged-adaptive-tpe"):
        return replace(base, strategy="tpe", mode="asha", fidelities=p.rungs, brackets=len(p.rungs),
                       noise_level=HEDGED_NOISE_LEVEL,
                       rung_agreement=ADAPTIVE_AGREEMENT if arm == "hedged-adaptive-tpe" else None)
    if arm in PEERS:
        raise ValueError(f"{arm} is a peer arm: its own library's optimizer, no evovae strategy (run_arm)")
    if arm in CONTINUING:
        schedule, proposer = arm.split("-", 1)
        asha = replace(base, strategy=proposer, mode="asha", fidelities=p.rungs,
                       operators="local" if proposer in ("evolution", "regularized") else "paper",
                       brackets=len(p.rungs) if schedule in ("hyperband", "adaptive") else 1,
                       rung_agreement=ADAPTIVE_AGREEMENT if schedule == "adaptive" else None)
        return asha
    raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")


def generational(arm: str, p: ComparePreset) -> bool:
    """Whether ``arm`` asks a batch and waits for all of it before it asks the next (a barrier): the generational
    strategies. The asynchronous ones and the peers ask one task per free worker."""
    if arm in PEERS:
        return False
    from ..strategies import make_strategy
    from ..strategy import GenerationalStrategy

    return isinstance(make_strategy(arm_options(arm, p, 0)), GenerationalStrategy)


def run_arm(bench: SearchBench, arm: str, p: ComparePreset, seed: int, spec: TrainSpec,
            name: str | None = None) -> dict[str, Any]:
    """The summary of ``arm``'s search for ``seed`` (named ``ARM-seedN``), run first if needed: an evovae
    strategy through ``bench.search``, a peer through ``bench.peer`` (its library's optimizer, charged the same
    epochs: the preset's budget, final fidelity ``epochs``, lowest fidelity the first of the asha rungs)."""
    name = name or f"{arm}-seed{seed}"
    if arm in PEERS:
        config = peer_config(arm, seed=seed, epochs=p.epochs, min_epochs=p.rungs[0], eta=p.eta,
                             budget_epochs=p.budget_epochs, population=p.population,
                             startup_trials=p.startup_trials, report_every=p.offspring)
        return bench.peer(name, config, lambda directory: make_peer(config, directory, bench.space), spec)
    return bench.search(name, arm_options(arm, p, seed), spec)


def base_spec(p: ComparePreset, dataset: str, split_seed: int, spec_fields: dict[str, Any] | None = None) -> TrainSpec:
    """The spec every search of the comparison trains with: ``dataset`` with ``spec_fields`` (the other data
    fields of own data: ``data_sha256``, ``columns``, ``image_size``, ``likelihood``), the preset's sizes."""
    return TrainSpec(dataset=dataset, epochs=p.epochs, train_subset=p.train_subset, val_size=p.val_size,
                     split_seed=split_seed, **(spec_fields or {}))


def run_compare(bench: SearchBench, p: ComparePreset, spec: TrainSpec,
                echo: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every arm x seed, then the retrainings; returns the raw results (resumable through ``bench``)."""
    if p.fidelities and p.fidelities[-1] != p.epochs:
        raise ValueError(f"the last fidelity ({p.fidelities[-1]}) must equal the final epochs ({p.epochs})")
    searches = []
    for seed in p.seed_values:
        for arm in p.arms:
            name = f"{arm}-seed{seed}"
            summary = run_arm(bench, arm, p, seed, spec, name)
            best = summary["best"]
            echo(f"{name:24s} best {best['loss'] if best else float('nan'):8.2f} {best['genotype'] if best else '-'}"
                 f"  epochs {summary['epochs_total']}  trials {len({e['genotype'] for e in summary['evaluations']})}"
                 f"  tasks {len(summary['evaluations'])}")
            searches.append({"arm": arm, "seed": seed, "name": name, **summary})
    retrain_spec = spec.replace(epochs=p.retrain_epochs, report_test=True, iw_samples=p.iw_samples)
    bests = [s for s in searches if s["best"]]
    echo(f"retraining {len(bests)} best genotypes {p.retrain_epochs} epochs (test ELBO and IW bound, "
         f"k = {p.iw_samples})")
    retrained = bench.tasks("retrain", [(parse_genotype(s["best"]["genotype"]), retrain_spec) for s in bests])
    for s, e in zip(bests, retrained, strict=True):
        m = e.measurement
        s["retrain"] = {"ok": e.ok, "error": e.error, "val_loss": e.loss, "test_loss": m.test_loss,
                        "test_recon": m.test_recon, "test_kl": m.test_kl, "test_iw_loss": m.test_iw_loss,
                        "curve": list(m.curve), "seconds": e.seconds}
    return {"searches": searches, "retrain_spec": retrain_spec.to_dict()}


def _best_so_far(search: dict[str, Any], grid: np.ndarray) -> np.ndarray:
    """The search's best final-fidelity validation loss after each grid point of cumulative epochs."""
    points = [(e, b) for e, b in search["anytime"] if b is not None]
    out = np.full(len(grid), np.nan)
    for epochs, best in points:
        out[grid >= epochs] = np.fmin(out[grid >= epochs], best)
    return out


def _epochs_to_reach(search: dict[str, Any], target: float) -> float:
    for epochs, best in search["anytime"]:
        if best is not None and best <= target:
            return float(epochs)
    return math.inf


def _arm_stats(arm: str, p: ComparePreset, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The arm's numbers over seeds, and what it ran: the fidelities its tasks trained, whether a promotion
    continues from a checkpoint, whether it waits for a whole batch. Trials are the configurations (genotypes)
    it trained, at whatever fidelities; tasks the results it was told (an optuna-hyperband trial's every epoch,
    an asha candidate's every rung)."""
    retrained = [r.get("retrain") or {} for r in runs]
    return {
        "val_loss": mean_sd([r["best"]["loss"] for r in runs if r["best"]]),
        "test_loss": mean_sd([t.get("test_loss") for t in retrained]),
        "test_iw_loss": mean_sd([t.get("test_iw_loss") for t in retrained]),
        "epochs": mean_sd([r["epochs_total"] for r in runs]),
        "trials": mean_sd([len({e.get("genotype") for e in r["evaluations"]}) for r in runs]),
        "tasks": mean_sd([len(r["evaluations"]) for r in runs]),
        "best_genotypes": [r["best"]["genotype"] if r["best"] else None for r in runs],
        "fidelities": sorted({e["epochs"] for r in runs for e in r["evaluations"] if "epochs" in e}),
        "continues": arm in CONTINUING,
        "generational": generational(arm, p),
    }


def _paired(runs: dict[str, dict[int, dict]], default: str, other: str, key: str) -> dict[str, Any]:
    """other minus default, seed by seed (positive: the default is better, lower loss)."""
    diffs = []
    for seed, run in runs[default].items():
        mine, theirs = (run.get("retrain") or {}).get(key), (runs[other].get(seed, {}).get("retrain") or {}).get(key)
        if key == "val_loss":
            mine = run["best"]["loss"] if run["best"] else None
            theirs = runs[other][seed]["best"]["loss"] if runs[other].get(seed, {}).get("best") else None
        if mine is not None and theirs is not None:
            diffs.append(theirs - mine)
    return {**bootstrap_mean_ci(diffs, seed=len(diffs)), "differences": diffs}


#: the arm the others are compared with, pair by pair: evovae search's default (TPE under asynchronous
#: Hyperband, with its noise level and rung agreement); a comparison keeps the default of the day it was made
#: (``default_arm`` in compare.json)
DEFAULT_ARM = "hedged-adaptive-tpe"
#: the default of comparisons made before compare.json said (generational TPE with rungs 0.3 E, E)
EARLIER_DEFAULT_ARM = "tpe-multifidelity"


def default_arm_of(config: dict[str, Any]) -> str:
    """The arm a comparison (its compare.json or results.json) pairs every other with."""
    return str(config.get("default_arm", EARLIER_DEFAULT_ARM))


def summarize(raw: dict[str, Any], p: ComparePreset, default: str | None = None) -> dict[str, Any]:
    """Per-arm statistics, anytime curves, paired comparisons and the targets, from ``run_compare``'s output;
    every other arm is compared with ``default`` (DEFAULT_ARM where the preset has it, else its first arm)."""
    default = default or (DEFAULT_ARM if DEFAULT_ARM in p.arms else p.arms[0])
    by_arm: dict[str, dict[int, dict]] = {arm: {} for arm in p.arms}
    for s in raw["searches"]:
        by_arm[s["arm"]][s["seed"]] = s
    grid = np.arange(0, p.budget_epochs + 1)
    curves = {}
    for arm, runs in by_arm.items():
        values = np.array([_best_so_far(r, grid) for r in runs.values()])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a grid point before any seed has a result
            q = np.nanquantile(values, [0.25, 0.5, 0.75], axis=0) if len(values) else np.full((3, len(grid)), np.nan)
        q[:, np.isnan(values).any(axis=0)] = np.nan  # a point counts once every seed has a result there
        curves[arm] = {"epochs": grid.tolist(), "q25": _nan_list(q[0]), "median": _nan_list(q[1]),
                       "q75": _nan_list(q[2])}
    stats = {arm: _arm_stats(arm, p, list(runs.values())) for arm, runs in by_arm.items()}
    keys = ("val_loss", "test_loss", "test_iw_loss")
    paired = {other: {key: _paired(by_arm, default, other, key) for key in keys}
              for other in p.arms if other != default and default in by_arm}
    # random search minus the arm, seed by seed (positive: the arm is better than random search)
    paired_random = {arm: {key: _paired(by_arm, arm, "random", key) for key in keys}
                     for arm in p.arms if arm != "random" and "random" in by_arm}
    targets: dict[str, Any] = {}
    reach_by_arm: dict[str, Any] = {}
    target = None
    if "random" in by_arm:  # the compute each arm needs to reach random search's median final validation loss
        target = float(np.median([r["best"]["loss"] for r in by_arm["random"].values() if r["best"]]))
        random_compute = float(np.median([r["epochs_total"] for r in by_arm["random"].values()]))
        for arm, runs in by_arm.items():
            reach = [_epochs_to_reach(r, target) for r in runs.values()]
            median_reach = float(np.median(reach))
            reach_by_arm[arm] = {"epochs_to_reach": reach, "median_epochs": median_reach,
                                 "ratio": median_reach / random_compute}
    if "random" in by_arm and default in by_arm:
        r = reach_by_arm[default]
        targets["reach_random_median"] = {
            "target_val_loss": target, "epochs_to_reach": r["epochs_to_reach"], "median_epochs": r["median_epochs"],
            "random_epochs": random_compute, "ratio": r["ratio"],
            "met": r["median_epochs"] <= random_compute / 4}  # issues 16 and 17: a quarter of random's epochs
        for other in ("random", "tpe"):
            if other in paired:
                targets[f"test_beats_{other}"] = {"met": bool(paired[other]["test_loss"]["excludes_zero"]
                                                             and paired[other]["test_loss"]["mean"] > 0)}
        if "evolution" in paired:
            e = paired["evolution"]
            targets["never_worse_than_evolution"] = {
                "met": all(not (v["excludes_zero"] and v["mean"] < 0) for v in e.values() if v["n"])}
    wallclock = wallclock_summary(by_arm, {arm: stats[arm]["generational"] for arm in by_arm}, p.epochs, target)
    return {"arms": stats, "curves": curves, "paired": paired, "paired_random": paired_random,
            "reach": {"target_val_loss": target, "by_arm": reach_by_arm}, "wallclock": wallclock,
            "targets": targets, "default": default}


def _nan_list(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]
