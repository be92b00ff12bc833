"""When cheap rungs carry no signal: ASHA, asynchronous Hyperband (brackets) and random search, side by side.

A synthetic objective where the ranking at the final fidelity is known exactly, and the lower rungs are either
informative (the final loss plus a little noise) or carry no signal at all (a loss that does not depend on the
genotype: noise around one plateau, as models on a small data set sit on the mean image for their first
epochs). Every arm gets the same epoch budget and runs on the simulated evaluator with 8 workers (decisions in
the order 8 workers would deliver results); the figure is the true final loss of the best genotype each search
found at the final fidelity, over seeds, with paired bootstrap intervals against random search at the final
fidelity. Pure engine and head: no training; minutes to run (TPE's decisions dominate; --arms runs a subset).

    python benchmarks/bench_no_signal.py [--seeds 20] [--budget 600] [--workers 8] [--arms "hyperband tpe,..."]
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
from collections.abc import Callable

import numpy as np

import evo.adapters
from evo.genotype import Genotype
from evo.head.evaluators import SimulatedEvaluator
from evo.head.runner import Runner
from evo.measurement import Measurement
from evo.space import SearchSpace
from evo.spec import TrainSpec
from evo.strategies import DEFAULT_NOISE_LEVEL, DEFAULT_RUNG_AGREEMENT, StrategyOptions, make_strategy
from gpuworker.result import TrainResult

FIDELITIES = (1, 3, 9)


def true_loss(g: Genotype) -> float:
    """The final-fidelity loss: shallow, wide networks with a small latent are best (as in the comparisons)."""
    layers = len(g.encoder) + len(g.decoder)
    widths = [*g.encoder, *g.decoder]
    return 100.0 + 6.0 * layers + sum(abs(w - 800) for w in widths) / len(widths) / 25 + abs(g.latent - 10) / 5


def _noise(g: Genotype, epochs: int, salt: int) -> float:
    digest = hashlib.sha256(f"{salt}:{g}:{epochs}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 - 0.5


def trainer(signal: bool, salt: int) -> Callable[[Genotype, TrainSpec], TrainResult]:
    def train(g: Genotype, spec: TrainSpec) -> TrainResult:
        if spec.epochs == FIDELITIES[-1]:
            loss = true_loss(g)
        elif signal:  # informative: the final loss, higher and a little noisy
            loss = true_loss(g) + 40.0 / spec.epochs + 2.0 * _noise(g, spec.epochs, salt)
        else:          # no signal: every model on one plateau
            loss = 300.0 + 20.0 * _noise(g, spec.epochs, salt)
        return TrainResult(str(g), True, Measurement(loss=loss, epochs=spec.epochs, seconds=float(spec.epochs)))
    return train


ARMS: dict[str, dict] = {
    "random (final fidelity)": dict(strategy="random", epochs=9),
    "asha random": dict(strategy="random", mode="asha", fidelities=FIDELITIES),
    "hyperband random": dict(strategy="random", mode="asha", fidelities=FIDELITIES, brackets=3),
    "asha tpe": dict(strategy="tpe", mode="asha", fidelities=FIDELITIES),
    "hyperband tpe": dict(strategy="tpe", mode="asha", fidelities=FIDELITIES, brackets=3),
    "hyperband tpe hedged (default)": dict(strategy="tpe", mode="asha", fidelities=FIDELITIES, brackets=3,
                                            rung_agreement=DEFAULT_RUNG_AGREEMENT, noise_level=DEFAULT_NOISE_LEVEL),
    "asha evolution (local)": dict(strategy="evolution", mode="asha", fidelities=FIDELITIES, operators="local"),
    "hyperband evolution (local)": dict(strategy="evolution", mode="asha", fidelities=FIDELITIES,
                                        operators="local", brackets=3),
}


def run_arm(arm: str, seed: int, signal: bool, budget: int, workers: int) -> float:
    options = StrategyOptions(**{"population": 8, "offspring": 8, "generations": None, "budget_epochs": budget,
                                 "seed": seed, "startup_trials": 8, **ARMS[arm]})
    strategy = make_strategy(options, SearchSpace())
    sim = SimulatedEvaluator(trainer(signal, salt=seed), workers, duration=lambda e: e.epochs_trained)
    Runner(TrainSpec(dataset="synthetic", epochs=9), poll_s=0).run(strategy, sim, sim.capacity)
    best = strategy.best
    return true_loss(best.genotype) if best else float("nan")


def paired_interval(a: list[float], b: list[float], rng: np.random.Generator) -> tuple[float, float, float]:
    diff = np.array(a) - np.array(b)
    means = [rng.choice(diff, len(diff)).mean() for _ in range(5000)]
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=600)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--arms", default=None,
                        help=f"comma-separated arms to run besides random (default all): {', '.join(ARMS)}")
    args = parser.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",")] if args.arms else list(ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    arms = ["random (final fidelity)", *(a for a in arms if a != "random (final fidelity)")]
    evo.adapters.register_all()
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    rng = np.random.default_rng(0)
    print(f"true final loss of each search's best (lower is better; optimum 112.0), {args.seeds} seeds, "
          f"budget {args.budget} epochs, {args.workers} simulated workers, rungs {FIDELITIES}")
    for signal in (True, False):
        print(f"\nlower rungs {'informative' if signal else 'carry NO signal (one plateau)'}")
        print(f"{'arm':32s} {'median':>8s} {'IQR':>15s}   paired mean vs random [95% CI]")
        results = {arm: [run_arm(arm, seed, signal, args.budget, args.workers) for seed in range(args.seeds)]
                   for arm in arms}
        base = results["random (final fidelity)"]
        for arm, losses in results.items():
            q1, q3 = np.percentile(losses, [25, 75])
            line = f"{arm:32s} {statistics.median(losses):8.2f} [{q1:6.2f}, {q3:6.2f}]"
            if arm != "random (final fidelity)":
                mean, lo, hi = paired_interval(losses, base, rng)
                line += f"   {mean:+6.2f} [{lo:+6.2f}, {hi:+6.2f}]"
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
