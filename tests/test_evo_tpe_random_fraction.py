"""TPE's random fraction (BOHB's hedge): a share of proposals drawn uniformly from the space, each still a trial."""
from __future__ import annotations

import pytest

from evo.adapters import register_all
from evo.adapters.tpe import genotype_params, suggest_genotype
from evo.genotype import parse_genotype
from evo.strategies import OptionError, StrategyOptions, make_strategy
from test_evo_rung_agreement import _evaluate

register_all()
BASE = dict(strategy="tpe", mode="asha", fidelities=(1, 3, 9), brackets=3, budget_epochs=200, generations=None,
            startup_trials=5, seed=2)


def _run(**changes):
    s = make_strategy(StrategyOptions(**{**BASE, **changes}))
    out, asked = [], []
    while not s.done:
        fresh = s.ask(4 - len(out))
        asked += [str(c) for c in fresh]
        out += fresh
        if not out:
            break
        s.tell([_evaluate(out.pop(0), True)])
    return s, asked


def test_genotype_params_are_what_a_trial_suggests():
    import optuna

    g = parse_genotype("250,900|30|450,50,1000")
    study = optuna.create_study()
    study.enqueue_trial(genotype_params(g))
    assert suggest_genotype(study.ask(), make_strategy(StrategyOptions(**BASE)).space) == g


def test_a_random_fraction_changes_the_proposals_and_every_one_is_a_trial():
    _, asked_plain = _run()
    mixed, asked_mixed = _run(random_fraction=0.5)
    assert asked_plain == _run()[1] and asked_mixed == _run(random_fraction=0.5)[1]  # seeded: the same again
    assert asked_mixed[:5] == asked_plain[:5]  # the start-up proposals are Optuna's own, as before
    assert asked_mixed != asked_plain
    # every new genotype is a trial of the study (promotions join it as finished trials)
    assert len(mixed.study.trials) >= mixed.proposed


def test_the_option_is_checked():
    with pytest.raises(OptionError, match="from 0 to 1"):
        StrategyOptions(**{**BASE, "random_fraction": 1.5})
    with pytest.raises(OptionError, match="needs strategy tpe in mode"):
        StrategyOptions(**{**BASE, "strategy": "random", "random_fraction": 0.3})
