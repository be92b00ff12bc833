"""The comparison's anytime curves against simulated wall clock at 1 and N workers, from what each search
recorded (results.json): no training, no replay of a strategy.

Each search's tasks (its evaluations, in the order their results were told, with the training seconds each
measured) are list-scheduled on ``workers`` simulated workers: whenever a worker is free it takes the first
task in that order that may start, and holds it for the task's measured seconds. A task may start when

- its strategy's barrier allows it: a generational strategy (evolution, random search, the synchronous
  multi-fidelity arms) asks a whole batch and asks the next only when every result of it is in, so a task
  waits for every task of the batch before its own. The batches are read off the search's record: a new
  batch begins where a generation ends (the counts of its reports) and, inside a generation, where the epochs
  change (each rung of synchronous successive halving is a batch);
- and its genotype's previous task has finished: a promotion is decided from the result below it, and a
  continued promotion trains on from that result's checkpoint.

Asynchronous strategies (ASHA, Hyperband, steady-state TPE, aging evolution, the peers) have no barrier.

What this assumes, and where it is wrong:

- The tasks are the ones the measured run (its own number of workers) asked for. A generational strategy
  decides the same whatever order results arrive in (evo.strategy.GenerationalStrategy), so at N workers it
  would ask exactly these batches: its curve is the same search on a simulated clock. An asynchronous
  strategy at N workers would decide with fewer results in hand (16 proposals before the first result), so
  its decisions, not only its clock, would differ: its curve is what these decisions would cost on N workers,
  not what the strategy would do there. ``evo.head.evaluators.SimulatedEvaluator`` runs a strategy for real
  with N simulated workers (every task trained, results delivered in the order N workers would deliver
  them); that is how a 16-worker search's quality is measured.
- A task's time is what it measured here (processes sharing a CPU), the same on every worker; dispatch,
  transfer and data loading between tasks cost nothing; a worker that trains a task continued from a
  checkpoint finds the checkpoint.
- The order told stands in for the order asked: an asynchronous search on few workers is told its results
  in nearly the order it asked for them, but a long task can be overtaken by short ones.
"""
from __future__ import annotations

import heapq
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .stats import mean_sd

__all__ = ["GRID_POINTS", "WORKERS", "batches", "list_schedule", "simulate", "wallclock_summary"]

#: the simulated worker counts the report shows
WORKERS = (1, 16)
#: points of each simulated-time grid (from 0 to the slowest search's end at that worker count)
GRID_POINTS = 201


def batches(search: Mapping[str, Any]) -> list[int]:
    """The batch of each evaluation of a generational search (0, 1, ...): a new batch where a generation's
    report ends (its ``evaluated`` count) and where the epochs change inside a generation (a rung)."""
    ends: set[int] = set()
    told = 0
    for report in search.get("generations", ()):
        told += int(report["evaluated"])
        ends.add(told)
    out: list[int] = []
    batch = 0
    previous: int | None = None
    for k, e in enumerate(search["evaluations"]):
        epochs = e.get("epochs")
        if k and (k in ends or epochs != previous):
            batch += 1
        out.append(batch)
        previous = epochs
    return out


def list_schedule(seconds: Sequence[float], after: Sequence[Sequence[int]], workers: int, *,
                  barriers: bool = False) -> list[float]:
    """The finish time of each task on ``workers`` workers: a free worker takes the first task (in the given
    order) whose tasks ``after[i]`` (each earlier in the order) have all finished. ``barriers``: a task that
    may not start yet holds back every task after it (batches: ``after[i]`` is every task of the batch
    before)."""
    n = len(seconds)
    finish: list[float | None] = [None] * n
    waiting = list(range(n))
    running: list[tuple[float, int]] = []
    free, now = workers, 0.0
    while waiting or running:
        if free and waiting:
            started = []
            for i in waiting:
                if all(finish[j] is not None for j in after[i]):
                    heapq.heappush(running, (now + max(0.0, seconds[i]), i))
                    started.append(i)
                    free -= 1
                    if not free:
                        break
                elif barriers:
                    break  # a later batch waits for this one
            if started:
                taken = set(started)
                waiting = [i for i in waiting if i not in taken]
        if not running:
            raise ValueError("a task waits for a task that never runs (its prerequisites must come before it)")
        now, i = heapq.heappop(running)
        finish[i] = now
        free += 1
        while running and running[0][0] == now:
            _, j = heapq.heappop(running)
            finish[j] = now
            free += 1
    return [f if f is not None else math.nan for f in finish]


def _prerequisites(search: Mapping[str, Any], generational: bool) -> list[list[int]]:
    evaluations = search["evaluations"]
    if generational:
        of = batches(search)
        members: dict[int, list[int]] = {}
        for k, b in enumerate(of):
            members.setdefault(b, []).append(k)
        return [members.get(b - 1, []) for b in of]
    last: dict[str, int] = {}
    after: list[list[int]] = []
    for k, e in enumerate(evaluations):
        genotype = e.get("genotype")
        after.append([last[genotype]] if genotype in last else [])
        if genotype is not None:
            last[genotype] = k
    return after


def simulate(search: Mapping[str, Any], generational: bool, workers: int, final_epochs: int) -> dict[str, Any]:
    """One search on ``workers`` simulated workers: ``curve`` (``[time, best final-fidelity loss so far]``
    after each task's end, in time order), ``makespan`` (seconds until the last task ends) and ``busy`` (the
    tasks' seconds summed)."""
    evaluations = search["evaluations"]
    seconds = [float(e.get("seconds") or 0.0) for e in evaluations]
    finish = list_schedule(seconds, _prerequisites(search, generational), workers, barriers=generational)
    curve: list[list[float | None]] = []
    best: float | None = None
    for k in sorted(range(len(finish)), key=lambda k: (finish[k], k)):
        e = evaluations[k]
        if e.get("state", "ok") == "ok" and e.get("loss") is not None and e.get("epochs") == final_epochs \
                and (best is None or e["loss"] < best):
            best = e["loss"]
        curve.append([finish[k], best])
    return {"curve": curve, "makespan": max(finish, default=0.0), "busy": sum(seconds)}


def _best_at(curve: Sequence[Sequence[float | None]], grid: np.ndarray) -> np.ndarray:
    out = np.full(len(grid), np.nan)
    for time, best in curve:
        if best is not None:
            reached = grid >= time
            out[reached] = np.fmin(out[reached], best)
    return out


def _time_to_reach(curve: Sequence[Sequence[float | None]], target: float) -> float:
    for time, best in curve:
        if best is not None and best <= target:
            return float(time)  # type: ignore[arg-type]
    return math.inf


def _nan_list(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def wallclock_summary(by_arm: Mapping[str, Mapping[int, Mapping[str, Any]]], generational: Mapping[str, bool],
                      final_epochs: int, target: float | None, workers: Sequence[int] = WORKERS) -> dict[str, Any]:
    """Per worker count: a time grid, each arm's median and interquartile band over seeds of the best
    validation loss so far on it (a point counts once every seed has a result there), and per arm the
    makespan, the utilization (busy seconds / (workers x makespan)) and, given ``target`` (random search's
    median final validation loss), the seconds each seed took to reach it and their median."""
    out: dict[str, Any] = {"workers": list(workers), "generational": {arm: bool(generational[arm]) for arm in by_arm},
                           "by_workers": {}}
    for n in workers:
        runs = {arm: [simulate(s, generational[arm], n, final_epochs) for s in seeds.values()]
                for arm, seeds in by_arm.items()}
        end = max((r["makespan"] for rs in runs.values() for r in rs), default=0.0)
        grid = np.linspace(0.0, end, GRID_POINTS)
        curves, arms = {}, {}
        for arm, rs in runs.items():
            values = np.array([_best_at(r["curve"], grid) for r in rs])
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a grid point before any seed has a result
                q = (np.nanquantile(values, [0.25, 0.5, 0.75], axis=0) if len(values)
                     else np.full((3, len(grid)), np.nan))
            if len(values):
                q[:, np.isnan(values).any(axis=0)] = np.nan
            curves[arm] = {"q25": _nan_list(q[0]), "median": _nan_list(q[1]), "q75": _nan_list(q[2])}
            stats: dict[str, Any] = {
                "makespan": mean_sd([r["makespan"] for r in rs]),
                "utilization": mean_sd([r["busy"] / (n * r["makespan"]) for r in rs if r["makespan"] > 0]),
            }
            if target is not None:
                reach = [_time_to_reach(r["curve"], target) for r in rs]
                stats["seconds_to_reach"] = reach
                stats["median_seconds_to_reach"] = float(np.median(reach)) if reach else None
            arms[arm] = stats
        out["by_workers"][str(n)] = {"grid": grid.tolist(), "curves": curves, "arms": arms}
    return out
