"""The statistics the reports use (numpy only): rank correlations, summaries, paired bootstrap intervals."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["bootstrap_mean_ci", "kendall_tau", "mean_sd", "ranks", "spearman"]


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        if tied.sum() > 1:
            r[tied] = r[tied].mean()
    return r


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the ranks."""
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties accounted for), O(n^2): for the few dozen points of a fidelity study."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(len(x), k=1)
    concordance = float((dx * dy)[upper].sum())
    nx, ny = float(np.abs(dx[upper]).sum()), float(np.abs(dy[upper]).sum())
    return concordance / math.sqrt(nx * ny) if nx and ny else float("nan")


def mean_sd(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sd, min, max and count of the finite values (None and non-finite ones left out)."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    if not v:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {"n": len(v), "mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "min": min(v), "max": max(v)}


def bootstrap_mean_ci(differences: Sequence[float], *, level: float = 0.95, resamples: int = 10_000,
                      seed: int = 0) -> dict[str, Any]:
    """Mean of paired differences with a percentile bootstrap interval (resampling the pairs)."""
    d = np.asarray([x for x in differences if x is not None and math.isfinite(x)], dtype=float)
    if len(d) == 0:
        return {"n": 0, "mean": None, "low": None, "high": None, "excludes_zero": False}
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"n": len(d), "mean": float(d.mean()), "low": float(low), "high": float(high), "level": level,
            "excludes_zero": bool(low > 0 or high < 0)}
