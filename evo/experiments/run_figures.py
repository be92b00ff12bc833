"""The figures of a run's report (``evovae report``): matplotlib with the Agg backend, written as PNG. Each
function draws one figure from what evo/experiments/run_reading.py read and writes it to ``path``."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .run_reading import Busy, RunRecord, Timeline, Told

__all__ = ["draw_anytime", "draw_curves", "draw_importance", "draw_params", "draw_timeline", "pareto_front"]

OUTCOME_COLOURS = {"ok": "tab:blue", "failed": "tab:orange", "lost": "tab:red", "late": "tab:gray",
                   "open": "tab:cyan"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def _time_unit(seconds: float) -> tuple[float, str]:
    """A divisor and its name for an axis of ``seconds`` at most."""
    if seconds >= 3 * 3600:
        return 3600.0, "hours"
    if seconds >= 3 * 60:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _loss_limits(values: Sequence[float], lowest: float) -> tuple[float, float]:
    """A y range from the lowest loss to the highest of ``values`` that is not an outlier (above the upper
    quartile by 1.5 interquartile ranges: the first evaluations of a search can be far worse than the rest)."""
    ordered = sorted(values)
    if not ordered:
        return lowest - 1.0, lowest + 1.0
    q1, q3 = ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]
    top = min(ordered[-1], q3 + 1.5 * (q3 - q1)) if len(ordered) >= 8 else ordered[-1]
    span = max(top - lowest, abs(lowest) * 0.01, 1e-6)
    return lowest - 0.08 * span, top + 0.1 * span


def draw_anytime(record: RunRecord, path: Path) -> None:
    """Best validation loss so far at the final fidelity against the epochs charged and against the clock; every
    evaluation at the final fidelity as a dot."""
    plt = _pyplot()
    fig, (by_epochs, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    final = record.final_epochs
    epochs = [float(point[0]) for point in record.summary["anytime"]]
    best = [math.nan if point[1] is None else float(point[1]) for point in record.summary["anytime"]]
    clock = list(record.clock)
    divisor, unit = _time_unit(max(clock, default=0.0))
    dots = [(i, t.evaluation.loss) for i, t in enumerate(record.told)
            if t.evaluation.ok and t.evaluation.epochs == final and t.evaluation.loss is not None]
    for ax, xs, label in ((by_epochs, epochs, "training epochs charged (cumulative)"),
                          (by_time, [c / divisor for c in clock], f"{record.clock_kind} ({unit})")):
        ax.scatter([xs[i] for i, _ in dots], [loss for _, loss in dots], s=12, color="tab:gray", alpha=0.5,
                   label=f"an evaluation at {final} epochs")
        ax.step(xs, best, where="post", color="tab:blue", lw=2, label="best so far")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    for start, _ in record.pauses:  # where a pause was cut out of the clock
        moment = next((c for t, c in zip(record.told, clock, strict=True) if t.at >= start), None)
        if moment is not None:
            by_time.axvline(moment / divisor, color="tab:gray", ls=":", lw=1)
    finite = [b for b in best if not math.isnan(b)]
    if finite:
        by_epochs.set_ylim(*_loss_limits([loss for _, loss in dots] + [finite[0]], min(finite)))
    by_epochs.set_ylabel(f"validation loss at {final} epochs (nats)")
    by_epochs.legend(loc="best")
    fig.suptitle("Best so far")
    _save(fig, path)


def draw_curves(ranked: Sequence[Told], path: Path) -> None:
    """Validation loss per epoch of ``ranked`` (best first)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 5))
    colours = plt.get_cmap("viridis")
    points: list[float] = []
    for rank, t in enumerate(ranked, 1):
        curve = t.evaluation.measurement.curve
        colour = colours(0.85 * (rank - 1) / max(1, len(ranked) - 1))
        ax.plot(range(1, len(curve) + 1), curve, marker="o", ms=3, lw=2.2 if rank == 1 else 1.3, color=colour,
                label=f"#{rank} {t.evaluation.loss:.2f}  {t.evaluation.genotype}")
        points += list(curve[1:] if len(curve) > 4 else curve)  # a long curve's first epoch is far above the rest
    if points:
        span = max(max(points) - min(points), 1e-6)
        ax.set_ylim(min(points) - 0.05 * span, max(points) + 0.05 * span)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (nats)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="rank, loss, genotype",
              title_fontsize=8)
    ax.set_title(f"Learning curves of the {len(ranked)} best")
    _save(fig, path)


def pareto_front(points: Sequence[tuple[int, float, Told]]) -> list[tuple[int, float, Told]]:
    """The points (params, loss, told) no other point beats in both (fewer parameters and lower loss), by
    parameters."""
    front: list[tuple[int, float, Told]] = []
    for point in sorted(points, key=lambda p: (p[0], p[1])):
        if not front or point[1] < front[-1][1]:
            front.append(point)
    return front


def draw_params(points: Sequence[tuple[int, float, Told]], front: Sequence[tuple[int, float, Told]],
                final: int, path: Path) -> None:
    """Validation loss against parameter count (log scale), the Pareto front as a step line, its points named."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, color="tab:gray", alpha=0.6,
               label=f"an evaluation at {final} epochs")
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red", lw=1.5,
            label="Pareto front (fewer parameters, lower loss)")
    ax.scatter([p[0] for p in front], [p[1] for p in front], s=30, color="tab:red", zorder=3)
    for params, loss, t in front[-8:]:
        ax.annotate(str(t.evaluation.genotype), (params, loss), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(_count))
    ax.xaxis.set_minor_formatter(FuncFormatter(_count))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_ylim(*_loss_limits([p[1] for p in points], min(p[1] for p in points)))
    ax.set_xlabel("parameters (encoder and decoder)")
    ax.set_ylabel(f"validation loss at {final} epochs (nats)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best")
    ax.set_title("Loss against size")
    _save(fig, path)


def _count(value: float, _: object = None) -> str:
    """A parameter count on an axis: 800k, 1.2M."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e3:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


def draw_importance(importances: dict[str, float], evaluator: str, trials: int, path: Path) -> None:
    """Each parameter's importance, largest on top."""
    plt = _pyplot()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.4))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for y, name in enumerate(names):
        ax.text(importances[name], y, f" {importances[name]:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(1e-9, *importances.values()) * 1.15)
    ax.set_xlabel(f"importance ({evaluator}, {trials} trials)")
    ax.set_title("Parameter importance for the final loss")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)


def draw_timeline(timeline: Timeline, path: Path) -> None:
    """One row per worker: when it was alive (thin grey), busy with an attempt (coloured by how it ended);
    dotted lines where a head (re)started."""
    plt = _pyplot()
    workers = timeline.workers
    divisor, unit = _time_unit(timeline.end - timeline.start)
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(workers) + 1.8))
    by_worker: dict[str, list[Busy]] = {w: [] for w in workers}
    for b in timeline.busy:
        by_worker[b.worker].append(b)
    seen: set[str] = set()
    for row, worker in enumerate(workers):
        if worker in timeline.alive:
            first, last = timeline.alive[worker]
            ax.broken_barh([((first - timeline.start) / divisor, (last - first) / divisor)], (row - 0.06, 0.12),
                           color="lightgray")
        for outcome, colour in OUTCOME_COLOURS.items():
            spans = [((b.start - timeline.start) / divisor, max((b.end - b.start) / divisor, 1e-9))
                     for b in by_worker[worker] if b.outcome == outcome]
            if spans:
                ax.broken_barh(spans, (row - 0.35, 0.7), color=colour, edgecolor="white", linewidth=0.3,
                               label=None if outcome in seen else outcome)
                seen.add(outcome)
    for started in timeline.head_starts[1:]:
        ax.axvline((started - timeline.start) / divisor, color="black", ls=":", lw=1)
    ax.set_yticks(range(len(workers)), [_short(w) for w in workers], fontsize=8)
    ax.set_ylim(-0.7, len(workers) - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel(f"{unit} since the first log line")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="attempt", title_fontsize=8)
    ax.set_title("Workers: busy (an attempt) and alive (grey)")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)


def _short(worker: str) -> str:
    return worker if len(worker) <= 28 else worker[:12] + "..." + worker[-12:]
