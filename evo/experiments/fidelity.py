"""The fidelity study: how well does the ranking after k epochs predict the ranking after the full training?

A fixed random sample of genotypes (seeded) is trained ``max(epochs)`` epochs once each; the trainer records
the validation loss after every epoch, and training is deterministic and prefix-stable (a k-epoch run is
exactly the first k epochs of a longer one with the same spec: tests/test_experiment_fidelity.py checks it),
so one run per genotype gives its loss at every fidelity. Reported: Spearman's rho and Kendall's tau-b of the
loss after each k with the loss after the last, and the overlap of the top quarter.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..genotype import Genotype
from ..space import SearchSpace
from ..spec import TrainSpec
from .searches import SearchBench
from .stats import kendall_tau, spearman

__all__ = ["fidelity_study", "sample_genotypes"]


def sample_genotypes(space: SearchSpace, count: int, seed: int) -> list[Genotype]:
    rng = np.random.default_rng(seed)
    found: dict[Genotype, None] = {}
    for _ in range(100 * count):
        if len(found) == count:
            break
        found.setdefault(space.sample(rng), None)
    return list(found)


def fidelity_study(bench: SearchBench, spec: TrainSpec, *, count: int = 30, epochs: Sequence[int] = (1, 2, 5, 20),
                   seed: int = 0, space: SearchSpace = SearchSpace()) -> dict[str, Any]:
    """Train ``count`` random genotypes ``max(epochs)`` epochs; correlate the ranking at each k with the last."""
    full = max(epochs)
    genotypes = sample_genotypes(space, count, seed)
    evaluations = bench.tasks("fidelity", [(g, spec.replace(epochs=full)) for g in genotypes])
    rows: list[dict[str, Any]] = []
    for g, e in zip(genotypes, evaluations, strict=True):
        curve = list(e.measurement.curve)
        if e.ok and len(curve) >= full and all(math.isfinite(v) for v in curve):
            rows.append({"genotype": str(g), "losses": {str(k): float(curve[k - 1]) for k in epochs}})
    final = [r["losses"][str(full)] for r in rows]
    top = max(1, len(rows) // 4)
    best_final = set(np.argsort(final)[:top])
    table = []
    for k in epochs:
        at_k = [r["losses"][str(k)] for r in rows]
        best_k = set(np.argsort(at_k)[:top])
        table.append({"epochs": k, "spearman": spearman(at_k, final), "kendall": kendall_tau(at_k, final),
                      "top_quarter_overlap": len(best_k & best_final) / top,
                      "median_loss": float(np.median(at_k)) if at_k else None})
    return {"count": count, "seed": seed, "epochs": list(epochs), "trained": len(rows),
            "failed": len(genotypes) - len(rows), "spec": spec.replace(epochs=full).to_dict(), "table": table,
            "genotypes": rows}
