"""What the strategy and Runner tests share: small spaces, a deterministic loss that falls with the epochs,
pure ask/tell drivers, and one small configuration of every strategy."""
from __future__ import annotations

import dataclasses

import numpy as np

import evo.adapters
from evo.evaluation import Candidate, Evaluation
from evo.genotype import Genotype
from evo.measurement import Measurement
from evo.space import SearchSpace
from evo.spec import TrainSpec
from evo.strategies import StrategyOptions, make_strategy
from evo.strategy import Report, Strategy
from gpuworker.result import TrainResult

evo.adapters.register_all()  # TPE is built by evo.adapters, registered by name as the composition layer does

# 12 networks x 2 latents x 12 networks = 288 genotypes: bred offspring are often seen before
SMALL = SearchSpace(max_layers=2, width_min=50, width_max=150, width_step=50,
                    latent_min=10, latent_max=20, latent_step=10)
# two genotypes in all: 50|10|50 and 50|20|50
TINY = SearchSpace(max_layers=1, width_min=50, width_max=50, latent_min=10, latent_max=20, latent_step=10)

#: one small configuration of every strategy, by the name the tests use
OPTIONS = {
    "evolution": StrategyOptions(strategy="evolution", population=4, offspring=5, generations=4, seed=3),
    "multifidelity": StrategyOptions(strategy="evolution", population=4, offspring=9, generations=3,
                                     fidelities=(1, 3, 9), seed=3),
    "random": StrategyOptions(strategy="random", population=4, offspring=5, generations=4, seed=3),
    "steady-state": StrategyOptions(strategy="evolution", mode="steady-state", population=4, offspring=5,
                                    generations=4, seed=3),
    "regularized": StrategyOptions(strategy="regularized", population=4, offspring=5, generations=4,
                                   tournament_size=2, seed=3),
    "tpe": StrategyOptions(strategy="tpe", mode="steady-state", population=4, offspring=5, generations=4,
                           startup_trials=4, seed=3),
    "tpe-batch": StrategyOptions(strategy="tpe", population=4, offspring=5, generations=4, startup_trials=4, seed=3),
    "tpe-multifidelity": StrategyOptions(strategy="tpe", population=4, offspring=9, generations=3,
                                         fidelities=(1, 3, 9), startup_trials=4, seed=3),
}
GENERATIONAL = ("evolution", "multifidelity", "random", "tpe-batch", "tpe-multifidelity")
ASYNCHRONOUS = ("steady-state", "regularized", "tpe")
ALL = GENERATIONAL + ASYNCHRONOUS


def build(name: str, space: SearchSpace = SMALL, **changes) -> Strategy:
    """A fresh strategy of the configuration ``name``, with ``changes`` to its options."""
    return make_strategy(dataclasses.replace(OPTIONS[name], **changes), space)


def synthetic_loss(genotype: Genotype, epochs: int = 2) -> float:
    """Like gpuworker's fake loss: smooth in the genotype, falling with the epochs, deeper networks learning
    more slowly (so a low fidelity ranks them worse than a high one)."""
    layers = len(genotype.encoder) + len(genotype.decoder)
    slow = 40.0 * (1 + layers / 5) * (1 / epochs - 1 / 2)
    return 100.0 + (sum(genotype.encoder) + sum(genotype.decoder)) / 100 + genotype.latent / 10 + slow


def diverges(genotype: Genotype) -> bool:
    """The genotypes whose training "diverges" in these tests (about one in eight of SMALL)."""
    return genotype.latent == 20 and len(genotype.decoder) == 2 and genotype.decoder[0] == 150


def evaluate(candidate: Candidate) -> Evaluation:
    """The outcome of training ``candidate``: deterministic, some failures, seconds proportional to epochs."""
    g, epochs = candidate.genotype, candidate.epochs
    if diverges(g):
        return Evaluation.failed(g, "diverged", Measurement(seconds=0.1 * epochs), epochs=epochs)
    loss = synthetic_loss(g, epochs)
    return Evaluation.succeeded(g, loss, Measurement(loss=loss, epochs=epochs, seconds=0.1 * epochs), epochs=epochs)


def train(genotype: Genotype, spec: TrainSpec) -> TrainResult:
    """What a trainer reports for ``genotype`` trained as ``spec`` says (the outcome of :func:`evaluate`), for an
    InProcessEvaluator: it makes the same Evaluation of it, stamped with the task's epochs."""
    e = evaluate(Candidate(genotype, spec.epochs))
    return TrainResult(str(genotype), e.ok, e.measurement, e.error)


def run_batches(strategy: Strategy, n: int | None = None, order_rng: np.random.Generator | None = None,
                outcome=evaluate, limit: int = 10_000) -> tuple[list[list[Candidate]], list[Report]]:
    """Ask ``n`` at a time and tell everything asked at once (shuffled by ``order_rng``) until done.
    Returns every ask and every report."""
    asks, reports = [], []
    for _ in range(limit):
        if strategy.done:
            return asks, reports
        batch = strategy.ask(n)
        asks.append(batch)
        evaluations = [outcome(c) for c in batch]
        if order_rng is not None:
            evaluations = [evaluations[i] for i in order_rng.permutation(len(evaluations))]
        reports += strategy.tell(evaluations)
        assert batch or strategy.done, "an empty ask with nothing outstanding must mean done"
    raise AssertionError(f"{type(strategy).__name__} did not finish in {limit} asks")


def run_workers(strategy: Strategy, workers: int, outcome=evaluate, pick: np.random.Generator | None = None,
                limit: int = 10_000) -> tuple[list[list[Candidate]], list[Report]]:
    """Keep up to ``workers`` candidates out, as the Runner does: ask for the free room, then tell one result
    (the oldest outstanding, or one chosen by ``pick``), until done."""
    asks, reports = [], []
    out: list[Candidate] = []
    for _ in range(limit):
        if strategy.done:
            assert not out
            return asks, reports
        batch = strategy.ask(workers - len(out)) if len(out) < workers else []
        if batch:
            asks.append(batch)
            out += batch
        if not out:
            assert strategy.done, "an empty ask with nothing outstanding must mean done"
            continue
        candidate = out.pop(int(pick.integers(len(out))) if pick is not None else 0)
        reports += strategy.tell([outcome(candidate)])
    raise AssertionError(f"{type(strategy).__name__} did not finish in {limit} steps")


def texts(asks: list[list[Candidate]]) -> list[list[str]]:
    return [[str(c) for c in batch] for batch in asks]


def history(strategy: Strategy) -> list[tuple]:
    """Everything a strategy's reports say, as plain values."""
    return [(r.generation, r.evaluated, r.failed, r.duplicates, r.total_evaluations, r.epochs_total,
             tuple((str(e.genotype), e.epochs, e.loss) for e in r.population)) for r in strategy.history]


def told(strategy: Strategy) -> list[tuple]:
    """The evaluation sequence, as plain values."""
    return [(str(e.candidate), e.state.value, e.loss) for e in strategy.evaluations]


def brute_force_best(evaluations, mu: int, epochs: int | None = None) -> list[Evaluation]:
    """The ``mu`` best successful evaluations (at ``epochs``, if given), ties by genotype text; a genotype
    counts once (its first evaluation)."""
    first: dict[Genotype, Evaluation] = {}
    for e in evaluations:
        if e.ok and (epochs is None or e.epochs == epochs):
            first.setdefault(e.genotype, e)
    return sorted(first.values(), key=lambda e: (e.loss, str(e.genotype)))[:mu]


def rng_copy(strategy: Strategy) -> np.random.Generator:
    """A generator in the strategy's RNG state now: to compute what its next ask must draw."""
    rng = np.random.Generator(type(strategy.rng.bit_generator)())
    rng.bit_generator.state = strategy.rng.bit_generator.state
    return rng


def first_unseen(propose, rng: np.random.Generator, seen, taken=()) -> Genotype:
    """What an asynchronous strategy hands out: its first proposal not seen before (up to 100 tries)."""
    for _ in range(100):
        genotype = propose(rng)
        if genotype not in seen and genotype not in taken:
            return genotype
    raise AssertionError("no unseen proposal in 100 tries")


def network_step(before: tuple, after: tuple) -> bool:
    """``after`` is ``before``, or it with one layer appended, or with one layer's width changed."""
    if after == before:
        return True
    if len(after) == len(before) + 1:
        return after[:-1] == before
    return len(after) == len(before) and sum(x != y for x, y in zip(before, after, strict=True)) == 1


def one_mutation(parent: Genotype, child: Genotype) -> bool:
    """``child`` is what one mutation of ``parent`` can give."""
    return child != parent and network_step(parent.encoder, child.encoder) and \
        network_step(parent.decoder, child.decoder)
