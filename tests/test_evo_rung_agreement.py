"""Rung agreement (evo/asha.py): asynchronous Hyperband deals new genotypes only to the brackets whose first rung
ranks like the final one, measured on the final results' learning curves."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy.stats import spearmanr

from evo.asha import HalvingRandom, spearman_rho
from evo.evaluation import Candidate, Evaluation
from evo.measurement import Measurement
from evo.space import SearchSpace
from evo.strategies import OptionError, StrategyOptions, make_strategy

RUNGS = (1, 3, 9)


def _quality(genotype) -> float:
    return 100 + abs(sum(genotype.encoder) - 800) / 20 + genotype.latent / 5


def _noise(genotype, epoch: int) -> float:
    digest = hashlib.sha256(f"{genotype}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def _curve(genotype, epochs: int, signal: bool) -> tuple[float, ...]:
    """Validation loss after each epoch: the final quality plus a decaying term; ``signal`` False puts every
    model on one plateau for its first 3 epochs (the order there is noise)."""
    out = []
    for e in range(1, epochs + 1):
        if e <= 3 and not signal:
            out.append(300.0 + _noise(genotype, e))
        else:
            out.append(_quality(genotype) + 50 / e)
    return tuple(out)


def _evaluate(c: Candidate, signal: bool) -> Evaluation:
    curve = _curve(c.genotype, c.epochs, signal)
    m = Measurement(loss=curve[-1], recon=curve[-1], kl=0.0, epochs=c.epochs, seconds=0.1, curve=curve)
    return Evaluation.of(c, True, m, None)


def _search(signal: bool, agreement: float | None, budget: int = 1500, workers: int = 4) -> HalvingRandom:
    s = HalvingRandom(SearchSpace(), mu=4, seed=3, fidelities=RUNGS, eta=3, budget_epochs=budget, brackets=3,
                      rung_agreement=agreement)
    out: list[Candidate] = []
    while not s.done:
        out += s.ask(workers - len(out))
        if not out:
            break
        s.tell([_evaluate(out.pop(0), signal)])
    return s


def _starts(s: HalvingRandom) -> list[int]:
    """The rung each proposed genotype started at, in the order proposed."""
    return [s._bracket[g] for g in s._bracket]


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)
    assert spearman_rho(a, b) == pytest.approx(spearmanr(a, b)[0])
    assert spearman_rho([1, 1, 1], [1, 2, 3]) == 0.0


def test_rungs_without_signal_stop_getting_new_genotypes():
    s = _search(signal=False, agreement=0.5)
    assert s.agreement[1] < 0.5 and s.agreement[3] < 0.5, s.agreement
    starts = _starts(s)
    judged = len(starts) // 2  # by then the agreement has been measured on 8 or more final results
    # (the last few: what is left of the budget fits only the cheapest start, at rung 1, as without agreement)
    assert set(starts[judged:-10]) == {2}, "after the rungs were found to rank at random only the top bracket starts"
    assert {0, 1} <= set(starts[:judged])  # before that, Hyperband's turn-by-turn deal


def test_rungs_with_signal_keep_every_bracket():
    s = _search(signal=True, agreement=0.5)
    assert s.agreement[1] > 0.9 and s.agreement[3] > 0.9, s.agreement
    starts = _starts(s)
    assert {0, 1, 2} <= set(starts[len(starts) // 2:])


def test_without_agreement_it_is_plain_hyperband():
    s = _search(signal=False, agreement=None)
    starts = _starts(s)
    assert set(starts[len(starts) // 2:]) == {0, 1, 2} and not s.agreement


def test_the_option_is_checked():
    base = dict(strategy="random", mode="asha", fidelities=RUNGS, budget_epochs=100, generations=None)
    assert make_strategy(StrategyOptions(**base, brackets=3, rung_agreement=0.5)).rung_agreement == 0.5
    with pytest.raises(OptionError, match="needs mode asha and brackets >= 2"):
        StrategyOptions(**base, rung_agreement=0.5)
    with pytest.raises(OptionError, match="from -1 to 1"):
        StrategyOptions(**base, brackets=3, rung_agreement=1.5)
