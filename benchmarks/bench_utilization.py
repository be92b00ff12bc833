"""Utilization benchmark: how busy each schedule keeps its workers, at 16 and 64 workers, side by side.

    .venv/bin/python benchmarks/bench_utilization.py [--workers 16,64] [--rounds 5] [--offspring 10,workers]
                                                     [--durations fixed,pareto] [--only asha-tpe,default,...]
    .venv/bin/python benchmarks/bench_utilization.py --real [--workers 16] [--real-rounds 10] [--fake-sleep 0.05]

Simulated (the default; deterministic): every schedule runs through evo.head.evaluators.SimulatedEvaluator with
N simulated workers and a stand-in trainer (gpuworker's ``fake_loss``, promotions under ``--mode asha``
continuing from the epochs a genotype already trained, as the checkpoint store makes them). A task takes its
trained epochs in time units (``fixed``: one unit per epoch), or that times the fake worker's heavy-tailed
draw (``pareto``: ``min(50, u ** (-1 / 1.5))`` with ``u`` fixed by the genotype, the rule of
``--fake-durations pareto``). Every schedule at a worker count gets the same epoch budget,
``rounds x workers x 10`` (10 = the final fidelity), so each worker trains about ``rounds`` full-fidelity
tasks' worth: the start and the end of a search (the first generation, the last tasks draining) weigh about
``1 / rounds`` (far more with heavy tails: one 50x task outlasts everything else). Printed per schedule and
worker count: the busy fraction of the workers over the whole run (mean / min over workers); the busy
fraction up to the last task's start (while the budget lasted, before the drain at the end); the simulated
makespan (time units: epochs of one worker); the epochs trained; the mean busy fraction over the earlier default
(generational TPE with rungs 3,10, offspring 10); and the milliseconds this process spent per result
(deciding: the simulated clock leaves it out; Optuna's TPE dominates, its cost per proposal growing with the
trials it has seen).

``--real``: a few schedules (the earlier default, the default (hyperband tpe), asha tpe, steady-state evolution)
as real ``evovae search`` runs with ``--local-workers N`` fake worker processes (``--fake-sleep S`` per epoch
asked), read back through ``evovae logs summarize``'s Python API (evo.logs.summary): each worker's busy fraction
from its own ``task.received`` / ``task.finished`` lines. Budget ``real-rounds x workers x 10`` epochs. This
also measures the head: with short tasks its per-task cost (and TPE's proposals) can be what keeps the workers
waiting.
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evo.strategies import DEFAULT_NOISE_LEVEL, DEFAULT_RUNG_AGREEMENT

FINAL = 10                                 # the final fidelity (epochs) of every schedule
ASHA_RUNGS = (1, 3, FINAL)                 # what --mode asha picks at --epochs 10 --eta 3: E/eta^2, E/eta, E
DEFAULT_RUNGS = (round(0.3 * FINAL), FINAL)  # the earlier default: generational TPE with rungs (0.3 E, E)
ETA = 3
PARETO_ALPHA = 1.5
PARETO_CAP = 50.0


@dataclass(frozen=True)
class Schedule:
    """One schedule: ``options`` are StrategyOptions fields (budget and offspring are set per run);
    ``generational``: its offspring (lambda) bounds the tasks out at once; ``flags``: the same as evovae
    search options (for --real)."""

    key: str
    label: str
    options: dict = field(hash=False)
    generational: bool = False
    flags: tuple[str, ...] = ()

    @property
    def continues(self) -> bool:
        """Promotions continue from a checkpoint (asha's default): a promotion trains only the epochs after it."""
        return self.options.get("mode") == "asha"


def _csv(values: Sequence[int]) -> str:
    return ",".join(map(str, values))


SCHEDULES = (
    Schedule("paper", f"generational evolution, E={FINAL} (the paper's)",
             dict(strategy="evolution", epochs=FINAL), True,
             ("--strategy", "evolution", "--epochs", str(FINAL))),
    Schedule("rungs-evolution", f"generational rungs, evolution {_csv(ASHA_RUNGS)}",
             dict(strategy="evolution", epochs=FINAL, fidelities=ASHA_RUNGS, eta=ETA), True,
             ("--strategy", "evolution", "--epochs", str(FINAL), "--fidelities", _csv(ASHA_RUNGS))),
    Schedule("rungs-tpe", f"generational rungs, tpe {_csv(DEFAULT_RUNGS)} (the earlier default)",
             dict(strategy="tpe", epochs=FINAL, fidelities=DEFAULT_RUNGS, eta=ETA), True,
             ("--strategy", "tpe", "--epochs", str(FINAL), "--fidelities", _csv(DEFAULT_RUNGS))),
    Schedule("steady-state", f"steady-state evolution, E={FINAL}",
             dict(strategy="evolution", epochs=FINAL, mode="steady-state"), False,
             ("--strategy", "evolution", "--epochs", str(FINAL), "--mode", "steady-state")),
    *(Schedule(f"asha-{name}", f"asha {name} {_csv(ASHA_RUNGS)}",
               dict(strategy=name, epochs=FINAL, fidelities=ASHA_RUNGS, eta=ETA, mode="asha"), False,
               ("--strategy", name, "--epochs", str(FINAL), "--mode", "asha", "--fidelities", _csv(ASHA_RUNGS)))
      for name in ("random", "evolution", "regularized", "tpe")),
    Schedule("hyperband-tpe", f"asha tpe {_csv(ASHA_RUNGS)}, {len(ASHA_RUNGS)} brackets, hedged (the default)",
             dict(strategy="tpe", epochs=FINAL, fidelities=ASHA_RUNGS, eta=ETA, mode="asha",
                  brackets=len(ASHA_RUNGS), rung_agreement=DEFAULT_RUNG_AGREEMENT, noise_level=DEFAULT_NOISE_LEVEL),
             False,
             ("--epochs", str(FINAL))),
)
BY_KEY = {s.key: s for s in SCHEDULES}
REFERENCE = "rungs-tpe"                      # the ratios are taken against this one, at offspring 10
REFERENCE_OFFSPRING = 10
REAL_SCHEDULES = ("rungs-tpe", "hyperband-tpe", "asha-tpe", "steady-state")


# -- task durations ------------------------------------------------------------------------------------------
def unit(genotype: object, salt: str) -> float:
    """A number in (0, 1] fixed by the genotype: the fake worker's draw (gpuworker.evaluators._unit)."""
    digest = hashlib.sha256(f"{salt}:{genotype}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 1) / 2**64


def pareto_factor(genotype: object) -> float:
    """How many times longer than its epochs' share a task of this genotype takes under ``pareto``."""
    return min(PARETO_CAP, unit(genotype, "duration") ** (-1 / PARETO_ALPHA))


def task_time(durations: str) -> Callable:
    """The simulated duration of an evaluation: its trained epochs (times the genotype's draw for pareto)."""
    if durations == "fixed":
        return lambda e: float(e.epochs_trained)
    return lambda e: e.epochs_trained * pareto_factor(e.genotype)


# -- simulated -----------------------------------------------------------------------------------------------
@dataclass
class Row:
    busy_mean: float
    busy_min: float
    busy_to_last_start: float | None
    makespan: float
    epochs: int
    evaluations: int
    seconds: float
    note: str = ""


def fake_trainer(continues: bool) -> Callable:
    """A stand-in trainer: gpuworker's fake loss; with ``continues``, a genotype trained before to fewer epochs
    resumes from the most of them (``resumed_from``), as with a checkpoint store."""
    from evo.measurement import Measurement
    from gpuworker.evaluators import fake_loss
    from gpuworker.result import TrainResult

    trained: dict[str, set[int]] = {}

    def train(genotype, spec):
        key = str(genotype)
        done = trained.setdefault(key, set())
        resumed = max((e for e in done if e < spec.epochs), default=0) if continues else 0
        done.add(spec.epochs)
        return TrainResult(key, True, Measurement(loss=fake_loss(genotype, spec.epochs), epochs=spec.epochs,
                                                  resumed_from=resumed, fake=True))
    return train


def simulate(schedule: Schedule, workers: int, budget: int, offspring: int, durations: str,
             seed: int = 0) -> Row:
    """One schedule through ``workers`` simulated workers until its epoch budget is spent."""
    from evo.head.evaluators import SimulatedEvaluator
    from evo.head.runner import Runner
    from evo.space import SearchSpace
    from evo.spec import TrainSpec
    from evo.strategies import StrategyOptions, make_strategy

    options = StrategyOptions(**schedule.options, offspring=offspring, generations=None, budget_epochs=budget,
                              seed=seed)
    started = time.perf_counter()
    strategy = make_strategy(options, SearchSpace())
    took = task_time(durations)
    spans: list[tuple[float, float]] = []    # (start, duration) of every task, on the simulated clock
    clock = {"sim": None}

    def duration(evaluation) -> float:       # called as the task starts: the clock is its start
        d = took(evaluation)
        spans.append((clock["sim"].clock, d))
        return d

    sim = clock["sim"] = SimulatedEvaluator(fake_trainer(schedule.continues), workers=workers, duration=duration)
    runner = Runner(TrainSpec(dataset="synthetic", epochs=options.final_epochs), poll_s=0)
    runner.run(strategy, sim, sim.capacity)
    busy = sim.utilization()
    last_start = max((s for s, _ in spans), default=0.0)
    before = (sum(max(0.0, min(s + d, last_start) - s) for s, d in spans) / (workers * last_start)
              if last_start > 0 else None)
    return Row(statistics.fmean(busy), min(busy), before, sim.clock, runner.epochs_trained, runner.evaluated,
               time.perf_counter() - started)


# -- real ----------------------------------------------------------------------------------------------------
def real_run(schedule: Schedule, workers: int, budget: int, offspring: int, durations: str, sleep_s: float,
             timeout_s: float, tmp: Path) -> Row:
    """One ``evovae search`` with ``workers`` local fake workers; the busy fractions from its JSON logs."""
    import json

    from evo.logs.reading import read_logs
    from evo.logs.summary import summarize

    where = tmp / f"{schedule.key}-{workers}-{offspring}-{durations}"
    where.mkdir()
    command = [sys.executable, "-m", "evo.cli", "search", "--dataset", "synthetic", *schedule.flags,
               "--budget-epochs", str(budget), "--local-workers", str(workers),
               "--worker-arg=--fake", f"--worker-arg=--fake-sleep={sleep_s}", "--worker-arg=--fake-per-epoch",
               f"--worker-arg=--fake-durations={durations}", "--log-format", "json", "--run-dir",
               str(where / "run")]
    if schedule.generational:
        command += ["--offspring", str(offspring)]
    started = time.perf_counter()
    note = ""
    with open(where / "head.log", "wb") as log, open(where / "out.txt", "wb") as out:
        try:
            code = subprocess.run(command, stdout=out, stderr=log, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            code, note = None, f"killed after {timeout_s:g} s"
    seconds = time.perf_counter() - started
    if code not in (0, None):
        tail = (where / "head.log").read_text(errors="replace").strip().splitlines()[-1:]
        note = f"exit {code}: {tail[0][:160] if tail else ''}"
    summary = summarize(read_logs([str(where / "head.log")]))
    busy = [w["utilisation"] for w in summary["workers"] if w["source"] == "worker" and w["utilisation"] is not None]
    result = where / "run" / "result.json"
    done = json.loads(result.read_text()) if result.is_file() else {}
    if len(busy) < workers:
        note = (note + "; " if note else "") + f"{len(busy)} of {workers} workers logged"
    return Row(statistics.fmean(busy) if busy else float("nan"), min(busy) if busy else float("nan"), None,
               summary["duration_s"], int(done.get("epochs_trained_now", 0)),
               int(done.get("evaluated_now", summary["evaluations"])), seconds, note)


# -- printing ------------------------------------------------------------------------------------------------
def _f(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def table(title: str, rows: dict[tuple[str, str], dict[int, Row]], workers: Sequence[int], real: bool) -> list[str]:
    """A markdown table: one line per (schedule, offspring), the worker counts side by side."""
    ws = list(workers)
    head = ["schedule", "offspring"]
    head += [f"busy mean / min, {w}" for w in ws]
    if not real:
        head += [f"busy to last start, {w}" for w in ws]
    head += [f"{'makespan' if not real else 'wall s (log span)'}, {w}" for w in ws]
    head += [f"epochs, {w}" for w in ws]
    head += [f"÷ default, {w}" for w in ws]
    head += [f"{'decide ms per result' if not real else 'run s'}, {w}" for w in ws]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    reference = rows.get((REFERENCE, str(REFERENCE_OFFSPRING)), {})
    notes = []
    for (key, lam), by_w in rows.items():
        cells = [BY_KEY[key].label, lam]
        cells += [f"{_f(by_w[w].busy_mean)} / {_f(by_w[w].busy_min)}" if w in by_w else "" for w in ws]
        if not real:
            cells += [_f(by_w[w].busy_to_last_start) if w in by_w else "" for w in ws]
        cells += [_f(by_w[w].makespan, ".1f") if w in by_w else "" for w in ws]
        cells += [str(by_w[w].epochs) if w in by_w else "" for w in ws]
        cells += [_f(by_w[w].busy_mean / reference[w].busy_mean, ".2f") + "x"
                  if w in by_w and w in reference and reference[w].busy_mean else "" for w in ws]
        cells += [(_f(by_w[w].seconds, ".1f") if real else _f(1000 * by_w[w].seconds / max(1, by_w[w].evaluations),
                                                               ".2f")) if w in by_w else "" for w in ws]
        lines.append("| " + " | ".join(cells) + " |")
        notes += [f"{BY_KEY[key].label}, {w} workers: {by_w[w].note}" for w in ws if w in by_w and by_w[w].note]
    lines += [""] + [f"note: {n}" for n in notes] + ([""] if notes else [])
    return lines


# -- the command ---------------------------------------------------------------------------------------------
def _workers(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be integers >= 1, got {text!r}")
    return values


def _offspring(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or any(v != "workers" and not (v.isdigit() and int(v) >= 1) for v in values):
        raise argparse.ArgumentTypeError(f"offspring: integers >= 1 or 'workers', got {text!r}")
    return values


def _names(choices: Sequence[str], what: str) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in choices]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"{what}: choose from {', '.join(choices)}, got {text!r}")
        return values
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=_workers, default=None, help="worker counts (default 16,64; --real: 16)")
    p.add_argument("--rounds", type=int, default=5,
                   help="simulated budget: ROUNDS x workers x 10 epochs per schedule (default 5; the TPE rows' "
                        "time grows with the square of it)")
    p.add_argument("--offspring", type=_offspring, default=["10", "workers"],
                   help="the generational schedules' offspring (lambda) per generation: integers or 'workers' "
                        "(default 10,workers: the CLI's default and one task per worker)")
    p.add_argument("--durations", type=_names(("fixed", "pareto"), "durations"), default=None,
                   help="fixed (time proportional to epochs) and/or pareto (times a heavy-tailed draw per "
                        "genotype); default fixed,pareto (--real: fixed)")
    p.add_argument("--only", type=_names(tuple(BY_KEY), "schedules"), default=None,
                   help=f"schedules to run (default all; --real: {','.join(REAL_SCHEDULES)}): "
                        + ", ".join(BY_KEY))
    p.add_argument("--seed", type=int, default=0)
    real = p.add_argument_group("real fake-worker processes")
    real.add_argument("--real", action="store_true", help="run evovae search with local fake worker processes")
    real.add_argument("--real-rounds", type=int, default=10,
                      help="budget: REAL_ROUNDS x workers x 10 epochs per run (default 10)")
    real.add_argument("--fake-sleep", type=float, default=0.05, help="seconds per epoch asked (default 0.05)")
    real.add_argument("--timeout", type=float, default=300.0, help="seconds before a run is killed (default 300)")
    return p


def _lambdas(schedule: Schedule, offspring: Sequence[str], workers: int) -> list[tuple[str, int]]:
    if not schedule.generational:
        return [("-", REFERENCE_OFFSPRING)]
    return [(lam, workers if lam == "workers" else int(lam)) for lam in offspring]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rounds < 1 or args.real_rounds < 1:
        print("--rounds and --real-rounds must be >= 1", file=sys.stderr)
        return 2
    from evo.cmdline.log_setup import configure

    configure(level="warning")   # the Runner's progress lines would drown the tables
    import evo.adapters

    evo.adapters.register_all()
    workers = args.workers or ([16] if args.real else [16, 64])
    durations = args.durations or (["fixed"] if args.real else ["fixed", "pareto"])
    keys = args.only or (list(REAL_SCHEDULES) if args.real else list(BY_KEY))
    schedules = [BY_KEY[k] for k in keys]
    started = time.perf_counter()
    if args.real:
        print(f"# Worker utilization, real fake-worker processes: --fake-sleep {args.fake_sleep:g} s per epoch, "
              f"budget {args.real_rounds} x workers x {FINAL} epochs per run, workers {_csv(workers)}")
    else:
        print(f"# Worker utilization, simulated: budget {args.rounds} x workers x {FINAL} epochs per schedule, "
              f"seed {args.seed}, workers {_csv(workers)}; time unit = one epoch of one worker")
    print()
    with tempfile.TemporaryDirectory(prefix="bench-util-") as tmp:
        for kind in durations:
            rows: dict[tuple[str, str], dict[int, Row]] = {}
            for schedule in schedules:
                for w in workers:
                    for lam, offspring in _lambdas(schedule, args.offspring, w):
                        if args.real:
                            row = real_run(schedule, w, args.real_rounds * w * FINAL, offspring, kind,
                                           args.fake_sleep, args.timeout, Path(tmp))
                        else:
                            row = simulate(schedule, w, args.rounds * w * FINAL, offspring, kind, args.seed)
                        rows.setdefault((schedule.key, lam), {})[w] = row
                        print(f"  {kind:6} {schedule.key:16} offspring {lam:>7}  {w:3d} workers: busy "
                              f"{_f(row.busy_mean)} / {_f(row.busy_min)}  ({row.seconds:.1f} s)",
                              file=sys.stderr, flush=True)
            title = ("fixed time per epoch" if kind == "fixed"
                     else f"heavy-tailed: epochs x min({PARETO_CAP:g}, u^(-1/{PARETO_ALPHA:g})) per genotype")
            print("\n".join(table(title, rows, workers, args.real)), flush=True)
            _ratios(rows, workers)
    print(f"({time.perf_counter() - started:.0f} s in all)")
    return 0


def _ratios(rows: dict[tuple[str, str], dict[int, Row]], workers: Sequence[int]) -> None:
    """ASHA's mean busy fraction over the generational rungs' with the same proposer, at each offspring."""
    pairs = (("asha-tpe", "rungs-tpe"), ("hyperband-tpe", "rungs-tpe"), ("asha-evolution", "rungs-evolution"))
    for asha, rungs in pairs:
        for (key, lam), ref in rows.items():
            if key != rungs or (asha, "-") not in rows:
                continue
            mine = rows[(asha, "-")]
            parts = [f"{mine[w].busy_mean / ref[w].busy_mean:.2f}x at {w}"
                     for w in workers if w in mine and w in ref and ref[w].busy_mean]
            if parts:
                print(f"busy, {BY_KEY[asha].label} / {BY_KEY[rungs].label} (offspring {lam}): {', '.join(parts)}")
    print()


if __name__ == "__main__":
    sys.exit(main())
