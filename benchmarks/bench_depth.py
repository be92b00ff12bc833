"""Depth benchmark: how the depth of proposals moves under the paper's mutation operators and the local ones.

    .venv/bin/python benchmarks/bench_depth.py [--seeds 10] [--generations 15] [--mu 10] [--lam 10]
                                               [--strategies evolution,steady-state,regularized,random]

Pure engine (numpy only, no training): each strategy searches the paper's space (1-5 layers of 50..1000,
latent 10..100) on a synthetic loss whose optimum is one layer of width 800 on each side and latent 10, every
extra layer costing more than a wrong width. The same search runs with ``MutationRates()`` (the paper's
operators: append a layer or redraw one width; depth never falls along a lineage) and with
``MutationRates(operators="local")`` (remove / insert a layer, move a width or the latent by a grid step or
two; the paper's move at a small probability), for every seed. Prints, side by side, the mean hidden-layer
count (encoder + decoder) of the proposals in the first and in the second half of each search (the issue's
measurement: the evolution arms of the Fashion-MNIST comparison kept 6.1-6.8 from one half to the other),
the mean best loss found (optimum 100), the best genotype's depth, and how many seeds found the optimum.
Random search is the reference: its proposals stay at the prior's 6 layers.
"""
from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from evo.engine import EvolutionEngine
from evo.evaluation import Evaluation
from evo.genotype import Genotype
from evo.random_search import RandomSearch
from evo.regularized import RegularizedEvolution
from evo.space import SearchSpace
from evo.steady_state import SteadyStateEngine
from evo.strategy import Strategy
from evo.variation import OPERATOR_SETS, MutationRates

SPACE = SearchSpace()
OPTIMUM_WIDTH = 800
OPTIMUM_LATENT = 10


def shallow_wide_loss(genotype: Genotype) -> float:
    """100 at ``800|10|800``; each network adds 5 per layer beyond the first and the mean distance of its widths
    from 800 in grid steps (50); the latent adds its distance from 10 in grid steps (10)."""
    loss = 100.0 + abs(genotype.latent - OPTIMUM_LATENT) / SPACE.latent_step
    for net in (genotype.encoder, genotype.decoder):
        loss += 5.0 * (len(net) - 1) + statistics.fmean(abs(w - OPTIMUM_WIDTH) for w in net) / SPACE.width_step
    return loss


def make(name: str, operators: str, seed: int, mu: int, lam: int, generations: int) -> Strategy:
    """One strategy, all of them with the same number of proposals: mu + lam x (generations - 1)."""
    mutation = MutationRates(operators=operators)
    total = mu + lam * (generations - 1)
    if name == "evolution":
        return EvolutionEngine(SPACE, mu=mu, lam=lam, seed=seed, generations=generations, mutation=mutation)
    if name == "steady-state":
        return SteadyStateEngine(SPACE, mu=mu, seed=seed, max_evaluations=total, mutation=mutation)
    if name == "regularized":
        return RegularizedEvolution(SPACE, mu=mu, tournament_size=3, seed=seed, max_evaluations=total,
                                    mutation=mutation)
    if name == "random":
        return RandomSearch(SPACE, mu=mu, batch=lam, seed=seed, generations=generations)
    raise ValueError(f"unknown strategy {name!r}")


def run(strategy: Strategy, loss: Callable[[Genotype], float]) -> list[Genotype]:
    """Drive ``strategy`` to its end (the asynchronous ones one candidate at a time); the proposals in ask order."""
    proposals: list[Genotype] = []
    while not strategy.done:
        batch = strategy.ask()
        if not batch:
            raise RuntimeError(f"{type(strategy).__name__} asked for nothing before it was done")
        proposals += [c.genotype for c in batch]
        strategy.tell([Evaluation.succeeded(c.genotype, loss(c.genotype), epochs=c.epochs) for c in batch])
    return proposals


def layers(genotype: Genotype) -> int:
    return len(genotype.encoder) + len(genotype.decoder)


@dataclass(frozen=True)
class Measured:
    first: list[float]        # per seed: mean hidden layers of the proposals in the first half
    second: list[float]       # ... and in the second half
    best_loss: float          # means over seeds
    best_depth: float
    proposals: float
    found: int                # seeds whose best is the optimum


def measure(name: str, operators: str, seeds: range, mu: int, lam: int, generations: int) -> Measured:
    optimum = shallow_wide_loss(Genotype((OPTIMUM_WIDTH,), OPTIMUM_LATENT, (OPTIMUM_WIDTH,)))
    first, second, best_loss, best_depth, proposals, found = [], [], [], [], [], 0
    for seed in seeds:
        strategy = make(name, operators, seed, mu, lam, generations)
        asked = run(strategy, shallow_wide_loss)
        half = len(asked) // 2
        first.append(statistics.fmean(layers(g) for g in asked[:half]))
        second.append(statistics.fmean(layers(g) for g in asked[half:]))
        best = strategy.best
        assert best is not None and best.loss is not None
        best_loss.append(best.loss)
        best_depth.append(layers(best.genotype))
        proposals.append(len(asked))
        found += best.loss == optimum
    return Measured(first, second, statistics.fmean(best_loss), statistics.fmean(best_depth),
                    statistics.fmean(proposals), found)


def _spread(values: list[float]) -> str:
    return f"{statistics.fmean(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--generations", type=int, default=15)
    parser.add_argument("--mu", type=int, default=10)
    parser.add_argument("--lam", type=int, default=10)
    parser.add_argument("--strategies", default="evolution,steady-state,regularized,random")
    args = parser.parse_args(argv)
    names = [n for n in args.strategies.split(",") if n]
    seeds = range(args.seeds)
    total = args.mu + args.lam * (args.generations - 1)
    print(f"synthetic loss, optimum {OPTIMUM_WIDTH}|{OPTIMUM_LATENT}|{OPTIMUM_WIDTH} (loss 100); {args.seeds} seeds; "
          f"mu {args.mu}, lambda {args.lam}, {args.generations} generations (up to {total} proposals each; "
          f"duplicates dropped)")
    print("hidden layers = encoder + decoder, mean over the proposals of each half of a search, then over seeds "
          "[min-max over seeds]")
    print()
    header = f"{'strategy':<13} {'operators':<9} {'1st half':>21} {'2nd half':>21} {'change':>7} " \
             f"{'best loss':>9} {'best depth':>10} {'optimum':>8} {'proposals':>9}"
    print(header)
    print("-" * len(header))
    for name in names:
        for operators in (OPERATOR_SETS if name != "random" else ("-",)):
            m = measure(name, "paper" if operators == "-" else operators, seeds, args.mu, args.lam,
                        args.generations)
            change = statistics.fmean(m.second) - statistics.fmean(m.first)
            print(f"{name:<13} {operators:<9} {_spread(m.first):>21} {_spread(m.second):>21} {change:>+7.2f} "
                  f"{m.best_loss:>9.2f} {m.best_depth:>10.1f} {m.found:>4}/{len(seeds):<3} {m.proposals:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
