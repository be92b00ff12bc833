"""ASHA, the asynchronous successive-halving schedule (evo/asha.py), under every proposer it takes."""
from __future__ import annotations

import numpy as np
import pytest

from evo.adapters.tpe_asha import HalvingTPE
from evo.asha import HalvingEvolution, HalvingRandom, HalvingRegularized, promotion_rank
from evo.evaluation import Evaluation
from evo.genotype import parse_genotype
from evo.space import SearchSpace
from evo.strategy import StopReason
from evo.variation import MutationRates
from evo_helpers import evaluate, run_workers, texts

SPACE = SearchSpace()
CLASSES = {
    "random": lambda **kw: HalvingRandom(SPACE, **kw),
    "evolution": lambda **kw: HalvingEvolution(SPACE, **kw),
    "evolution-local": lambda **kw: HalvingEvolution(SPACE, mutation=MutationRates(operators="local"), **kw),
    "regularized": lambda **kw: HalvingRegularized(SPACE, tournament_size=2, **kw),
    "tpe": lambda **kw: HalvingTPE(SPACE, startup_trials=4, **kw),
}


def build(name, **changes):
    options = {"mu": 4, "seed": 5, "fidelities": (1, 3, 9), "eta": 3, "budget_epochs": 240, **changes}
    return CLASSES[name](**options)


@pytest.mark.parametrize("name", CLASSES)
def test_no_barrier_every_free_worker_gets_work_until_the_budget_is_spent(name):
    strategy = build(name)
    out, asks = [], 0
    while not strategy.done:
        batch = strategy.ask(8 - len(out))
        asks += 1
        if len(out) < 8 and not strategy._budget_hit and not strategy.exhausted:
            assert len(batch) == 8 - len(out), "a free worker was left without work while the budget lasts"
        out += batch
        if out:
            strategy.tell([evaluate(out.pop(0))])
    assert strategy.asked_epochs <= 240 and strategy.stop_reason is StopReason.BUDGET
    assert 240 - strategy.asked_epochs < 1 + 1e-9 or strategy.asked_epochs == 240


@pytest.mark.parametrize("name", CLASSES)
def test_every_promotion_was_in_the_top_third_of_its_rung_when_it_was_made(name):
    strategy = build(name)
    rung_seen: list[dict] = [{}, {}, {}]
    out = []
    pick = np.random.default_rng(0)
    while not strategy.done:
        for c in strategy.ask(6 - len(out)):
            k = (1, 3, 9).index(c.epochs)
            if k:
                below = sorted((e.loss, str(g)) for g, e in rung_seen[k - 1].items() if e.ok)
                top = {g for _, g in below[:len(rung_seen[k - 1]) // 3]}
                assert str(c.genotype) in top, f"{c} promoted without being in the top 1/3 of rung {k - 1}"
            out.append(c)
        c = out.pop(int(pick.integers(len(out))))
        e = evaluate(c)
        rung_seen[(1, 3, 9).index(c.epochs)][c.genotype] = e
        strategy.tell([e])
    assert len(rung_seen[2]) >= 1 and strategy.best is not None and strategy.best.epochs == 9


@pytest.mark.parametrize("name", CLASSES)
def test_the_same_arrival_order_gives_the_same_decisions(name):
    runs = [run_workers(build(name), 5, pick=np.random.default_rng(7)) for _ in range(2)]
    assert texts(runs[0][0]) == texts(runs[1][0])
    other = run_workers(build(name), 5, pick=np.random.default_rng(8))
    assert texts(other[0]) != texts(runs[0][0])  # the order matters: asynchronous by design


def test_generations_bound_the_proposals_and_the_rungs_are_finished():
    strategy = build("random", budget_epochs=None, max_evaluations=27)
    asks, _ = run_workers(strategy, 4)
    epochs = [c.epochs for batch in asks for c in batch]
    assert epochs.count(1) == 27 == strategy.proposed
    assert epochs.count(3) == 9 and epochs.count(9) == 3  # 27 // 3 and 9 // 3 promoted, nothing pending
    assert strategy.stop_reason is StopReason.EVALUATIONS


def test_promotion_rank_puts_a_higher_rung_first():
    a, b = parse_genotype("100|10|100"), parse_genotype("200|10|200")
    low = Evaluation.succeeded(a, 90.0, epochs=1)
    high = Evaluation.succeeded(b, 120.0, epochs=3)
    assert [e.genotype for e in promotion_rank([low, high], (1, 3))] == [b, a]


@pytest.mark.parametrize("bad", [{"eta": 1}, {"fidelities": (3, 3)}, {"fidelities": (9, 3)}, {"fidelities": ()}])
def test_bad_schedules_are_refused(bad):
    with pytest.raises(ValueError, match=r"eta|fidelities"):
        build("random", **bad)


def test_a_local_proposer_under_asha_proposes_shallower_networks_late_than_early():
    strategy = build("evolution-local", budget_epochs=600, mu=6)
    asks, _ = run_workers(strategy, 4, pick=np.random.default_rng(1))
    new = [c.genotype for batch in asks for c in batch if c.epochs == 1]
    depth = [len(g.encoder) + len(g.decoder) for g in new]
    half = len(depth) // 2
    assert np.mean(depth[half:]) < np.mean(depth[:half])


@pytest.mark.parametrize("continuing", [True, False])
def test_a_continued_promotion_is_charged_the_epochs_in_between(continuing):
    strategy = build("random", budget_epochs=None, max_evaluations=27, continue_promotions=continuing)
    asks, _ = run_workers(strategy, 4)
    counts = {e: sum(c.epochs == e for batch in asks for c in batch) for e in (1, 3, 9)}
    per_promotion = {3: 2, 9: 6} if continuing else {3: 3, 9: 9}
    assert strategy.asked_epochs == counts[1] + sum(counts[e] * per_promotion[e] for e in (3, 9))
    assert strategy.cost(asks[0][0]) == 1


@pytest.mark.parametrize("name", CLASSES)
def test_brackets_deal_new_genotypes_in_turn_and_the_last_has_no_early_stopping(name):
    strategy = build(name, brackets=3, budget_epochs=None, max_evaluations=30)
    asks, _ = run_workers(strategy, 4, pick=np.random.default_rng(2))
    first = {}
    for batch in asks:
        for c in batch:
            first.setdefault(c.genotype, c.epochs)
    starts = list(first.values())
    assert starts == [(1, 3, 9)[i % 3] for i in range(len(starts))] and len(starts) == 30
    at_nine = [g for g, e in first.items() if e == 9]
    assert len(at_nine) == 10                                   # a third judged at full fidelity at once
    charged = sum(strategy.cost(c) for batch in asks for c in batch)
    assert charged == strategy.asked_epochs
    # a bracket's start is paid in full; only promotions continue
    assert all(strategy.cost(type(asks[0][0])(g, e)) == e for g, e in first.items())


def test_one_bracket_is_plain_asha_and_too_many_are_refused():
    assert texts(run_workers(build("random", brackets=1), 4)[0]) == texts(run_workers(build("random"), 4)[0])
    with pytest.raises(ValueError, match="brackets must be an integer from 1 to the number of rungs"):
        build("random", brackets=4)


@pytest.mark.parametrize("budget", [100, 101, 102, 107])
def test_brackets_spend_the_budget_to_the_last_epoch_that_fits(budget):
    strategy = build("random", brackets=3, budget_epochs=budget)
    run_workers(strategy, 4)
    assert strategy.stop_reason is StopReason.BUDGET and strategy.asked_epochs == budget
