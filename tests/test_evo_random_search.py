"""evo.random_search: the baseline that asks fresh random genotypes and keeps the mu best."""
import pytest

from evo.evaluation import Evaluation
from evo.random_search import RandomSearch
from evo.space import SearchSpace

SMALL = SearchSpace(max_layers=2, width_min=50, width_max=150, width_step=50,
                    latent_min=10, latent_max=20, latent_step=10)


def synthetic_loss(g):
    return 100.0 + (sum(g.encoder) + sum(g.decoder)) / 100 + g.latent


def evaluate(batch):
    return [Evaluation.failed(g, "nan") if g.latent == 20 and len(g.encoder) == 1
            else Evaluation.succeeded(g, synthetic_loss(g)) for g in batch]


def test_random_search_asks_distinct_unseen_genotypes_and_keeps_the_mu_best():
    for seed in range(3):
        search = RandomSearch(SMALL, mu=5, batch=7, seed=seed)
        asked, told = set(), []
        for generation in range(10):
            batch = search.ask()
            assert len(batch) == (5 if generation == 0 else 7)
            assert len(set(batch)) == len(batch)
            assert not asked & set(batch)
            assert all(SMALL.contains(g) for g in batch)
            asked |= set(batch)
            evaluations = evaluate(batch)
            told.extend(evaluations)
            report = search.tell(evaluations)
            best = sorted((e for e in told if e.ok), key=lambda e: (e.loss, str(e.genotype)))[:5]
            assert list(report.population) == best
            assert report.duplicates == 0
            assert report.failed == sum(not e.ok for e in evaluations)
        assert len(asked) == 5 + 9 * 7


def test_random_search_is_deterministic():
    def run(seed):
        search = RandomSearch(SearchSpace(), mu=4, batch=6, seed=seed)
        asks = []
        for _ in range(5):
            batch = search.ask()
            asks.append(batch)
            search.tell(evaluate(batch))
        return asks, [(str(e.genotype), e.loss) for e in search.population]

    assert run(3) == run(3)
    assert run(3)[0][0] != run(4)[0][0]


def test_random_search_ask_twice_returns_the_same_batch():
    search = RandomSearch(SMALL, mu=3, batch=3, seed=0)
    assert search.ask() == search.ask()
    with pytest.raises(ValueError):
        search.tell(evaluate(search.ask())[1:])
    search.tell(evaluate(search.ask()))
    assert search.generation == 1


def test_random_search_stops_asking_when_the_space_runs_dry():
    tiny = SearchSpace(max_layers=1, width_min=50, width_max=50, latent_min=10, latent_max=20, latent_step=10)
    search = RandomSearch(tiny, mu=5, batch=5, seed=0)
    batch = search.ask()
    assert len(batch) == 2                                   # only two genotypes exist
    search.tell(evaluate(batch))
    assert search.ask() == []
    assert search.tell([]).evaluated == 0


@pytest.mark.parametrize("kwargs", [dict(mu=0), dict(batch=0), dict(batch=-1)])
def test_random_search_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        RandomSearch(SMALL, **kwargs)
