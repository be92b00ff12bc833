"""evo.random_search: the baseline that asks fresh random genotypes and keeps the mu best."""
import numpy as np
import pytest

from evo.evaluation import Evaluation
from evo.random_search import RandomSearch
from evo.space import SearchSpace

SMALL = SearchSpace(max_layers=2, width_min=50, width_max=150, width_step=50,
                    latent_min=10, latent_max=20, latent_step=10)
TINY = SearchSpace(max_layers=1, width_min=50, width_max=50, latent_min=10, latent_max=20, latent_step=10)


def synthetic_loss(g):
    return 100.0 + (sum(g.encoder) + sum(g.decoder)) / 100 + g.latent


def evaluate(batch):
    return [Evaluation.failed(c.genotype, "nan", epochs=c.epochs) if c.genotype.latent == 20 and
            len(c.genotype.encoder) == 1 else Evaluation.succeeded(c.genotype, synthetic_loss(c.genotype),
                                                                   epochs=c.epochs) for c in batch]


def test_random_search_asks_distinct_unseen_genotypes_and_keeps_the_mu_best():
    for seed in range(3):
        search = RandomSearch(SMALL, mu=5, batch=7, seed=seed, epochs=3)
        asked, told = set(), []
        for generation in range(10):
            batch = search.ask()
            genotypes = [c.genotype for c in batch]
            assert len(batch) == (5 if generation == 0 else 7) and {c.epochs for c in batch} == {3}
            assert len(set(genotypes)) == len(genotypes)
            assert not asked & set(genotypes)
            assert all(SMALL.contains(g) for g in genotypes)
            asked |= set(genotypes)
            evaluations = evaluate(batch)
            told.extend(evaluations)
            [report] = search.tell(evaluations)
            best = sorted((e for e in told if e.ok), key=lambda e: (e.loss, str(e.genotype)))[:5]
            assert list(report.population) == best
            assert report.duplicates == 0
            assert report.failed == sum(not e.ok for e in evaluations)
            assert report.epochs_total == 3 * len(asked) == search.asked_epochs
        assert len(asked) == 5 + 9 * 7


def test_random_search_draws_exactly_the_spaces_samples():
    search = RandomSearch(SearchSpace(), mu=4, batch=6, seed=8)
    rng = np.random.default_rng(8)
    expected = []
    while len(expected) < 4:                   # the full space: no repeats in so few draws
        g = SearchSpace().sample(rng)
        if g not in expected:
            expected.append(g)
    assert [c.genotype for c in search.ask()] == expected


def test_random_search_is_deterministic_whatever_the_order_of_the_tells():
    def run(seed, order=None):
        search = RandomSearch(SearchSpace(), mu=4, batch=6, seed=seed, generations=5)
        asks = []
        while not search.done:
            batch = search.ask()
            asks.append(batch)
            evaluations = evaluate(batch)
            if order is not None:
                evaluations = [evaluations[i] for i in order.permutation(len(evaluations))]
            search.tell(evaluations)
        return asks, [(str(e.genotype), e.loss) for e in search.population]

    assert run(3) == run(3) == run(3, np.random.default_rng(1))
    assert run(3)[0][0] != run(4)[0][0]


def test_random_search_completes_a_round_only_when_all_of_it_was_told():
    search = RandomSearch(SMALL, mu=3, batch=3, seed=0)
    batch = search.ask()
    assert search.ask() == []                  # all of the round is out
    assert search.tell(evaluate(batch)[1:]) == [] and search.generation == 0
    with pytest.raises(ValueError, match="not outstanding"):
        search.tell(evaluate(batch)[1:])
    assert len(search.tell(evaluate(batch)[:1])) == 1 and search.generation == 1


def test_random_search_ends_when_the_space_runs_dry():
    search = RandomSearch(TINY, mu=5, batch=5, seed=0)
    batch = search.ask()
    assert len(batch) == 2                                   # only two genotypes exist
    search.tell(evaluate(batch))
    assert search.exhausted and search.done and search.ask() == []


@pytest.mark.parametrize("kwargs", [dict(mu=0), dict(batch=0), dict(batch=-1), dict(epochs=0),
                                    dict(generations=0)])
def test_random_search_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        RandomSearch(SMALL, **kwargs)
