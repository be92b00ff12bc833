"""Compute as the budget: every strategy counts the epochs it asks for (failed runs in full), never hands out
a candidate that would cross budget_epochs, and ends; the options that build strategies check their bounds."""
import pytest

from evo.evaluation import Evaluation
from evo.genotype import parse_genotype
from evo.head.progress import anytime
from evo.space import SearchSpace
from evo.strategies import STRATEGIES, OptionError, StrategyOptions, budget_of, make_strategy
from evo.strategy import StopReason
from evo_helpers import ALL, GENERATIONAL, OPTIONS, TINY, build, evaluate, run_workers

BUDGETS = [1, 2, 7, 9, 20, 33, 60]


def _spend(strategy, workers, outcome=evaluate, budget=None):
    """Drive with ``workers`` out at once, checking the account after every ask."""
    out, steps = [], 0
    while not strategy.done:
        batch = strategy.ask(workers - len(out))
        out += batch
        assert budget is None or strategy.asked_epochs <= budget
        assert strategy.asked_epochs == sum(c.epochs for c in out) + sum(e.epochs for e in strategy.evaluations)
        if out:
            strategy.tell([outcome(out.pop(0))])
        steps += 1
        assert steps < 10_000
    return strategy


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("workers", [1, 3])
def test_the_budget_is_never_crossed_and_the_search_ends(name, budget, workers):
    strategy = _spend(build(name, space=SearchSpace(), generations=None, budget_epochs=budget), workers,
                      budget=budget)
    assert strategy.done and strategy.asked_epochs <= budget
    assert strategy.asked_epochs + strategy.final_epochs > budget   # it stopped for the budget
    if strategy.evaluation_count:
        assert strategy.history[-1].epochs_total == strategy.asked_epochs
        assert sum(r.evaluated for r in strategy.history) == strategy.evaluation_count


@pytest.mark.parametrize("name", ALL)
def test_generations_and_budget_end_the_search_at_whichever_comes_first(name):
    free = _spend(build(name, generations=3), 2)
    spent = free.asked_epochs
    tight = _spend(build(name, generations=3, budget_epochs=spent // 2), 2, budget=spent // 2)
    assert tight.asked_epochs <= spent // 2 < spent
    loose = _spend(build(name, generations=3, budget_epochs=spent * 10), 2)
    assert loose.asked_epochs == spent and loose.evaluation_count == free.evaluation_count


def _count_end(name):
    """The count-based end of a strategy: generations (generational), evaluations (asynchronous)."""
    return StopReason.GENERATIONS if name in GENERATIONAL else StopReason.EVALUATIONS


@pytest.mark.parametrize("name", ALL)
def test_the_stop_reason_is_none_until_the_strategy_is_done(name):
    strategy = build(name, generations=1)
    assert strategy.stop_reason is None
    out = []
    while batch := strategy.ask():                                 # everything it hands out before any tell
        out += batch
    strategy.tell([evaluate(c) for c in out[:-1]])
    assert not strategy.done and strategy.stop_reason is None     # the last one is still out
    strategy.tell([evaluate(out[-1])])
    run_workers(strategy, 1)
    assert strategy.done and strategy.stop_reason is _count_end(name)


@pytest.mark.parametrize("name", ALL)
def test_the_stop_reason_of_a_search_given_generations_or_evaluations(name):
    strategy = _spend(build(name), 2)
    assert strategy.stop_reason is _count_end(name)
    assert StopReason(strategy.stop_reason.value) is strategy.stop_reason   # journaled as text, read back
    if name in GENERATIONAL:
        assert len(strategy.history) == OPTIONS[name].generations
    else:
        assert strategy.evaluation_count == OPTIONS[name].max_evaluations


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("budget", [1, 9, 20])
def test_the_stop_reason_of_a_search_given_a_budget(name, budget):
    strategy = _spend(build(name, space=SearchSpace(), generations=None, budget_epochs=budget), 2, budget=budget)
    assert strategy.stop_reason is StopReason.BUDGET and strategy.stop_reason.value == "budget"
    assert not strategy.exhausted and strategy.asked_epochs + strategy.final_epochs > budget


@pytest.mark.parametrize("name", ALL)
def test_the_stop_reason_is_whichever_end_came_first(name):
    spent = _spend(build(name, generations=3), 2).asked_epochs
    assert _spend(build(name, generations=3, budget_epochs=spent // 2), 2).stop_reason is StopReason.BUDGET
    assert _spend(build(name, generations=3, budget_epochs=spent * 10), 2).stop_reason is _count_end(name)


@pytest.mark.parametrize("name", ALL)
def test_the_stop_reason_of_a_space_that_ran_dry(name):
    strategy = _spend(build(name, space=TINY), 2)                  # two genotypes in all
    assert strategy.exhausted and strategy.stop_reason is StopReason.EXHAUSTED
    assert strategy.stop_reason.value == "space exhausted"
    assert {str(e.genotype) for e in strategy.evaluations} == {"50|10|50", "50|20|50"}
    if not name.startswith("tpe"):                                  # (TPE takes seconds to run dry: once is enough)
        budgeted = _spend(build(name, space=TINY, generations=None, budget_epochs=1000), 2)
        assert budgeted.stop_reason is StopReason.EXHAUSTED         # the space, not the budget, ended it


@pytest.mark.parametrize("name", ALL)
def test_a_failed_run_costs_its_full_epochs(name):
    def all_fail(c):
        return Evaluation.failed(c.genotype, "out of memory", epochs=c.epochs)

    strategy = _spend(build(name, generations=None, budget_epochs=30), 2, outcome=all_fail, budget=30)
    assert strategy.evaluation_count and all(not e.ok for e in strategy.evaluations)
    assert strategy.asked_epochs == sum(e.epochs for e in strategy.evaluations) > 30 - strategy.final_epochs
    assert strategy.best is None


@pytest.mark.parametrize("name", ALL)
def test_the_anytime_curve_follows_the_epoch_account(name):
    strategy = _spend(build(name), 3)
    curve = anytime(strategy.evaluations, strategy.final_epochs)
    assert len(curve) == strategy.evaluation_count
    assert curve[-1][0] == strategy.asked_epochs
    bests = [b for _, b in curve if b is not None]
    assert bests == sorted(bests, reverse=True) and bests[-1] == strategy.best.loss


def test_budget_of_counts_the_evaluations_of_a_generational_search():
    assert budget_of(10, 10, 5) == 50 and budget_of(4, 6, 1) == 4 and budget_of(4, 6, 0) == 4
    assert StrategyOptions(population=4, offspring=6, generations=3).max_evaluations == 16
    assert StrategyOptions(generations=None, budget_epochs=40).max_evaluations is None


@pytest.mark.parametrize("kwargs, option, message", [
    (dict(strategy="bayes"), "strategy", "unknown strategy 'bayes'; choose one of evolution, random, regularized, tpe"),
    (dict(mode="async"), "mode", "must be one of generational, steady-state, asha, got 'async'"),
    (dict(generations=None), "generations", "a search needs an end"),
    (dict(strategy="random", fidelities=(1, 3)), "fidelities",
     "apply to the generational strategies evolution and tpe"),
    (dict(mode="steady-state", fidelities=(1, 3)), "fidelities", "need mode generational or asha"),
    (dict(strategy="regularized", mode="steady-state"), "mode", "regularized is asynchronous already"),
    (dict(strategy="random", mode="steady-state"), "mode", "random is generational only"),
    (dict(mode="asha"), "fidelities", "asha needs two or more rungs"),
    (dict(mode="asha", fidelities=(3,)), "fidelities", "asha needs two or more rungs"),
    (dict(fidelities=(3, 1)), "fidelities", "strictly increasing"),
    (dict(eta=1), "eta", "must be an integer >= 2"),
    (dict(population=0), "population", "must be an integer >= 1"),
    (dict(crossover_rate=1.5), "crossover_rate", "must be a probability"),
    (dict(operators="tiny"), "operators", "must be one of paper, local"),
    (dict(strategy="regularized", population=2, tournament_size=3), "tournament_size", "larger than the population"),
    (dict(strategy="tpe", initial=(parse_genotype("100|10|100"),)), "initial", "seed the generational evolution"),
])
def test_options_refuse_what_makes_no_search_naming_the_option(kwargs, option, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(")) as caught:
        StrategyOptions(**kwargs)
    assert caught.value.option == option and str(caught.value).startswith(f"{option}: ")


@pytest.mark.parametrize("strategy", ["evolution", "random", "regularized", "tpe"])
def test_every_proposer_runs_under_asha(strategy):
    options = StrategyOptions(strategy=strategy, mode="asha", fidelities=(1, 3, 9), population=4, offspring=4,
                              generations=None, budget_epochs=120, startup_trials=4, tournament_size=2)
    built = make_strategy(options, SearchSpace(max_layers=2))
    run_workers(built, 6)
    assert built.stop_reason is StopReason.BUDGET and built.asked_epochs <= 120 and built.best.epochs == 9


@pytest.mark.parametrize("budget", [0, -5, 2.5])
def test_a_bad_budget_is_refused(budget):
    with pytest.raises(OptionError, match="budget_epochs: must be an integer >= 1"):
        StrategyOptions(generations=None, budget_epochs=budget)


def test_every_strategy_name_builds():
    assert set(STRATEGIES) == {o.strategy for o in OPTIONS.values()}
    for name in ALL:
        assert build(name).final_epochs == OPTIONS[name].final_epochs


@pytest.mark.parametrize("kwargs", [dict(brackets=2), dict(mode="asha", fidelities=(1, 3), brackets=3),
                                    dict(mode="asha", fidelities=(1, 3), brackets=0)])
def test_brackets_need_asha_and_enough_rungs(kwargs):
    with pytest.raises(OptionError) as caught:
        StrategyOptions(**kwargs)
    assert caught.value.option == "brackets"
