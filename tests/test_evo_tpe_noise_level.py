"""TPE's noise level: random proposals while the final-fidelity results carry no signal, TPE once one stands out."""
from __future__ import annotations

import zlib

import pytest

from evo.adapters import register_all
from evo.evaluation import Candidate, Evaluation
from evo.measurement import Measurement
from evo.strategies import OptionError, StrategyOptions, make_strategy

register_all()
STEADY = dict(strategy="tpe", mode="steady-state", epochs=2, budget_epochs=80, generations=None, startup_trials=5,
              seed=4)


def _plateau(c: Candidate) -> float:
    """Every model on one plateau: 27.10 to 27.14, the ranking a hash of the genotype (noise)."""
    return 27.10 + (zlib.crc32(str(c.genotype).encode()) % 5) / 100


def _run(loss, **changes):
    s = make_strategy(StrategyOptions(**{**STEADY, **changes}))
    while not s.done:
        asked = s.ask(1)
        if not asked:
            break
        c = asked[0]
        value = loss(c)
        s.tell([Evaluation.of(c, True, Measurement(loss=value, recon=value, kl=0.0, epochs=c.epochs, seconds=0.1),
                              None)])
    return s


def test_on_a_plateau_every_proposal_after_the_start_up_is_random():
    s = _run(_plateau, noise_level=0.005)
    assert not s.has_signal()
    proposals = len(s.study.trials)
    assert proposals == 40 and s.random_while_no_signal == proposals - 5  # every one after the 5 start-up trials


def test_once_a_result_stands_out_tpe_takes_over():
    escaped: set = set()
    told: list = []

    def loss(c: Candidate) -> float:
        told.append(c)
        if len(told) > 12 and not escaped:  # the 13th model escapes the plateau, by 3%
            escaped.add(c.genotype)
        return 26.3 if c.genotype in escaped else _plateau(c)

    s = _run(loss, noise_level=0.005)
    assert escaped and s.has_signal()
    assert s.random_while_no_signal == 13 - 5  # proposals 6 to 13 random (the 13th escaped), then TPE


def test_a_spread_of_results_is_signal_from_the_second_result_on():
    s = _run(lambda c: 100.0 + c.genotype.latent, noise_level=0.005)  # 10 to 100 nats apart: plain signal
    assert s.has_signal() and s.random_while_no_signal == 0  # the start-up trials already differ by > 0.5%


def test_without_a_noise_level_the_proposals_are_tpes_as_before():
    plain, again = _run(_plateau), _run(_plateau, noise_level=None)
    assert [t.params for t in plain.study.trials] == [t.params for t in again.study.trials]
    assert plain.random_while_no_signal == 0 and not plain.has_signal()
    hedged = _run(_plateau, noise_level=0.005)
    assert [t.params for t in hedged.study.trials][:5] == [t.params for t in plain.study.trials][:5]
    assert [t.params for t in hedged.study.trials] != [t.params for t in plain.study.trials]


def test_under_asynchronous_hyperband_only_final_fidelity_results_count():
    s = _run(_plateau, mode="asha", fidelities=(1, 3, 9), brackets=3, epochs=9, budget_epochs=300,
             noise_level=0.005)
    assert not s.has_signal() and s.random_while_no_signal > 0


def test_the_option_is_checked():
    with pytest.raises(OptionError, match="fraction of the loss"):
        StrategyOptions(**{**STEADY, "noise_level": 1.5})
    with pytest.raises(OptionError, match="needs strategy tpe in mode"):
        StrategyOptions(**{**STEADY, "strategy": "random", "mode": "generational", "noise_level": 0.01})
    with pytest.raises(OptionError, match="needs strategy tpe in mode"):
        StrategyOptions(**{**STEADY, "mode": "generational", "noise_level": 0.01})
