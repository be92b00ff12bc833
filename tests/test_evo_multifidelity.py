"""evo.multifidelity: (mu + lambda) with successive halving inside each generation - offspring at the lowest
fidelity, the best ceil(n / eta) of each rung (by loss, ties by genotype text) trained again at the next, only
the highest rung in the population; the epoch account per generation; budget cuts."""
import itertools
import math

import numpy as np
import pytest

from evo.engine import EvolutionEngine
from evo.evaluation import Evaluation
from evo.multifidelity import MultiFidelityEvolution, parse_fidelities
from evo.space import SearchSpace
from evo.strategies import StrategyOptions, make_strategy
from evo_helpers import SMALL, brute_force_best, evaluate, run_batches, synthetic_loss


def _rungs(strategy, outcome=evaluate):
    """Drive a whole batch at a time; return [(generation, epochs, batch)] for every rung asked."""
    rungs = []
    while not strategy.done:
        generation = strategy.generation
        batch = strategy.ask()
        if batch:
            rungs.append((generation, batch[0].epochs, batch))
            assert {c.epochs for c in batch} == {batch[0].epochs}
        strategy.tell([outcome(c) for c in batch])
    return rungs


@pytest.mark.parametrize("mu, lam, eta, fidelities, sizes", [
    (9, 9, 3, (1, 3, 9), [9, 3, 1]),
    (10, 10, 3, (1, 3, 9), [10, 4, 2]),
    (5, 5, 2, (1, 2, 4, 8), [5, 3, 2, 1]),
    (4, 6, 4, (2, 5), [4, 1]),
])
def test_each_rung_holds_ceil_n_over_eta_of_the_one_below(mu, lam, eta, fidelities, sizes):
    strategy = MultiFidelityEvolution(SearchSpace(), mu=mu, lam=lam, eta=eta, fidelities=fidelities, seed=1,
                                      generations=3)
    rungs = _rungs(strategy)
    first = [(epochs, len(batch)) for generation, epochs, batch in rungs if generation == 0]
    assert first == list(zip(fidelities, sizes, strict=True))
    for generation in (1, 2):
        got = [len(batch) for g, _, batch in rungs if g == generation]
        expected = [got[0]]
        while len(expected) < len(fidelities):
            expected.append(math.ceil(expected[-1] / eta))
        assert got == expected and got[0] <= lam


def test_promotion_takes_the_best_by_loss_with_ties_by_genotype_text():
    def tied(c):                               # two losses only: most of each rung ties
        return Evaluation.succeeded(c.genotype, 100.0 + (c.genotype.latent > 50) + c.epochs, epochs=c.epochs)

    strategy = MultiFidelityEvolution(SearchSpace(), mu=12, lam=12, eta=3, fidelities=(1, 2, 4), seed=4,
                                      generations=3)
    rungs = _rungs(strategy, tied)
    for (g, _, below), (g_next, _, above) in itertools.pairwise(rungs):
        if g != g_next:
            continue
        ranked = sorted(below, key=lambda c: (tied(c).loss, str(c.genotype)))
        assert [c.genotype for c in above] == [c.genotype for c in ranked[:math.ceil(len(below) / 3)]]


def test_failures_are_never_promoted_and_a_rung_that_all_failed_ends_the_generation():
    def fails_low(c):                          # deep encoders fail at one epoch
        if c.epochs == 1 and len(c.genotype.encoder) > 1:
            return Evaluation.failed(c.genotype, "diverged", epochs=1)
        return evaluate(c)

    strategy = MultiFidelityEvolution(SMALL, mu=6, lam=6, seed=2, generations=4)
    for _, epochs, batch in _rungs(strategy, fails_low):
        if epochs > 1:
            assert all(len(c.genotype.encoder) == 1 for c in batch)
    everything_fails = MultiFidelityEvolution(SMALL, mu=6, lam=6, seed=2, generations=2)
    rungs = _rungs(everything_fails, lambda c: Evaluation.failed(c.genotype, "crash", epochs=c.epochs))
    assert [(g, e) for g, e, _ in rungs] == [(0, 1), (1, 1)]      # no rung above the first
    assert [r.evaluated for r in everything_fails.history] == [6, 6] and everything_fails.population == ()


def _rising(c):
    """A loss that rises with the epochs: were a cheap result let into the population, it would win."""
    return Evaluation.succeeded(c.genotype, synthetic_loss(c.genotype) + 10 * c.epochs, epochs=c.epochs)


def test_the_population_holds_only_final_fidelity_results():
    strategy = MultiFidelityEvolution(SMALL, mu=4, lam=9, seed=5, generations=6)
    while not strategy.done:
        strategy.tell([_rising(c) for c in strategy.ask()])
        assert all(e.epochs == 9 for e in strategy.population)
        assert list(strategy.population) == brute_force_best(strategy.evaluations, 4, epochs=9)
    assert strategy.best.epochs == 9 and strategy.best == brute_force_best(strategy.evaluations, 1, epochs=9)[0]
    assert min(e.loss for e in strategy.evaluations if e.epochs < 9) < strategy.population[0].loss


def test_a_promoted_genotype_is_trained_again_and_is_not_a_duplicate():
    strategy = MultiFidelityEvolution(SearchSpace(), mu=9, lam=9, seed=0, generations=2)
    rungs = _rungs(strategy)
    gen0 = [batch for g, _, batch in rungs if g == 0]
    assert {c.genotype for c in gen0[1]} <= {c.genotype for c in gen0[0]}
    assert {c.genotype for c in gen0[2]} <= {c.genotype for c in gen0[1]}
    assert strategy.history[0].duplicates == 0 and strategy.history[0].evaluated == 9 + 3 + 1
    assert [e.epochs for e in strategy.evaluations[:13]] == [1] * 9 + [3] * 3 + [9]


def test_compute_per_generation_is_every_rung_paid_in_full():
    strategy = MultiFidelityEvolution(SearchSpace(), mu=9, lam=9, seed=3, generations=3)
    rungs = _rungs(strategy)
    per_generation = [sum(e * len(b) for g, e, b in rungs if g == k) for k in range(3)]
    assert per_generation[0] == 9 * 1 + 3 * 3 + 1 * 9 == 27
    totals = [r.epochs_total for r in strategy.history]
    assert totals == list(np.cumsum(per_generation))
    assert strategy.asked_epochs == totals[-1] == sum(e.epochs for e in strategy.evaluations)


def test_the_same_seed_gives_the_same_search_whatever_the_order_of_the_tells():
    def run(order_seed):
        strategy = MultiFidelityEvolution(SMALL, mu=4, lam=9, seed=7, generations=4)
        asks, _ = run_batches(strategy, 2, order_rng=np.random.default_rng(order_seed))
        return [str(c) for batch in asks for c in batch], strategy.snapshot()

    assert run(0) == run(1) == run(2)


@pytest.mark.parametrize("budget", [9, 12, 20, 27, 29, 40, 55, 100])
def test_a_budget_cuts_the_search_without_crossing_it_and_reports_every_result(budget):
    strategy = MultiFidelityEvolution(SearchSpace(), mu=9, lam=9, seed=1, budget_epochs=budget)
    rungs = _rungs(strategy)
    assert strategy.done and strategy.asked_epochs <= budget
    assert sum(r.evaluated for r in strategy.history) == strategy.evaluation_count
    assert strategy.history[-1].epochs_total == strategy.asked_epochs
    assert all(e.epochs == 9 for e in strategy.population)
    assert strategy.asked_epochs + 9 > budget or strategy.asked_epochs + 1 > budget   # nothing affordable left
    if budget < 27:                            # not even one generation fits: no 9-epoch result at all
        assert strategy.population == () and strategy.best is None
    cut = [(g, e, len(b)) for g, e, b in rungs]
    assert all(n >= 1 for _, _, n in cut)


def test_a_budget_below_the_final_fidelity_asks_nothing():
    strategy = MultiFidelityEvolution(SearchSpace(), mu=9, lam=9, seed=1, budget_epochs=8)
    assert strategy.done and strategy.ask() == []


def test_the_plain_engine_stays_exactly_available():
    plain = make_strategy(StrategyOptions(population=4, offspring=4, generations=3, seed=2))
    assert type(plain) is EvolutionEngine
    same = EvolutionEngine(mu=4, lam=4, generations=3, seed=2)
    for strategy in (plain, same):
        run_batches(strategy)
    assert plain.snapshot() == same.snapshot()
    multi = make_strategy(StrategyOptions(population=4, offspring=4, generations=3, fidelities=(1, 3), seed=2))
    assert type(multi) is MultiFidelityEvolution and multi.final_epochs == 3


def test_the_snapshot_names_the_rung():
    strategy = MultiFidelityEvolution(SearchSpace(), mu=9, lam=9, seed=0, generations=2)
    strategy.tell([evaluate(c) for c in strategy.ask()])
    assert strategy.snapshot()["rung"] == 1
    assert synthetic_loss(strategy.ask()[0].genotype, 3) > 0 and strategy.snapshot()["rung"] == 1


@pytest.mark.parametrize("text, fidelities", [("1,3,9", (1, 3, 9)), ("2", (2,)), ("1, 5 ,20", (1, 5, 20))])
def test_parse_fidelities(text, fidelities):
    assert parse_fidelities(text) == fidelities


@pytest.mark.parametrize("text", ["", "1,,3", "3,1", "1,1", "0,3", "a,b", "1.5,3", "-1,2"])
def test_bad_fidelities_are_refused_with_an_example(text):
    with pytest.raises(ValueError, match=r"e\.g\. 1,3,9"):
        parse_fidelities(text)


@pytest.mark.parametrize("kwargs", [dict(eta=1), dict(eta=2.0), dict(fidelities=()), dict(fidelities=(3, 1))])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        MultiFidelityEvolution(SMALL, **kwargs)
