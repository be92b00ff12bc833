"""The default search (neither --strategy nor --mode): what the command line and the Python API fill in, and
that the comparisons' default arm is that same search."""
from __future__ import annotations

from dataclasses import asdict

from evo.adapters import register_all
from evo.cli.app import _parser, _subparser
from evo.cli.search_options import config_of
from evo.experiments.compare import COMPARE_PRESETS, DEFAULT_ARM, arm_options
from evo.strategies import DEFAULT_NOISE_LEVEL, DEFAULT_RUNG_AGREEMENT, make_strategy
from evovae._search import _options

register_all()
CPU = ["--dataset", "synthetic", "--epochs", "10", "--budget-epochs", "240", "--population", "6", "--offspring", "6",
       "--seed", "3"]


def _cli(*argv: str):
    return config_of(_subparser(_parser(), "search").parse_args(list(argv))).options


def test_the_default_is_hedged_tpe_under_asynchronous_hyperband():
    o = _cli(*CPU)
    assert (o.strategy, o.mode, o.fidelities, o.brackets) == ("tpe", "asha", (1, 3, 10), 3)
    assert (o.rung_agreement, o.noise_level) == (DEFAULT_RUNG_AGREEMENT, DEFAULT_NOISE_LEVEL) == (0.5, 0.005)
    strategy = make_strategy(o)
    assert strategy.noise_level == 0.005 and strategy.rung_agreement == 0.5


def test_the_comparisons_default_arm_is_the_default_search():
    cli = asdict(_cli(*CPU))
    arm = asdict(arm_options(DEFAULT_ARM, COMPARE_PRESETS["cpu"], 3))
    assert cli == arm, {k: (cli[k], arm[k]) for k in cli if cli[k] != arm[k]}


def test_the_python_api_fills_in_the_same_default():
    from evo.space import SearchSpace

    api = _options(dict(strategy=None, mode=None, generations=None, budget_epochs=240, epochs=10, fidelities=None,
                        eta=3, brackets=None, rung_agreement=None, noise_level=None, population=6, offspring=6,
                        random_fraction=0.0, tournament_size=3, startup_trials=10, crossover_rate=0.5,
                        mutation_rate=0.8, operators="paper", continue_promotions=True, initial=(), seed=3),
                   SearchSpace())
    assert api == _cli(*CPU)


def test_the_hedges_turn_off_and_a_named_strategy_has_none():
    off = _cli(*CPU, "--noise-level", "0", "--rung-agreement", "-1")
    strategy = make_strategy(off)
    assert strategy.noise_level is None and strategy.rung_agreement == -1.0
    assert strategy._dealt_brackets() == [0, 1, 2]  # every bracket dealt, whatever the agreement
    named = _cli(*CPU, "--strategy", "tpe", "--mode", "asha")
    assert (named.brackets, named.rung_agreement, named.noise_level) == (1, None, None)  # plain ASHA, as always
    assert _cli(*CPU, "--strategy", "tpe").mode == "generational"  # the earlier default
