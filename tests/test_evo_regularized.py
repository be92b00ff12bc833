"""evo.regularized: aging evolution (Real et al. 2019) - a queue of the P most recent evaluations, the oldest
dies (not the worst), the parent is the best of S drawn without replacement, mutated; asynchronous."""
import numpy as np
import pytest

from evo.evaluation import Evaluation
from evo.regularized import RegularizedEvolution
from evo.selection import rank
from evo.space import SearchSpace
from evo.variation import mutate
from evo_helpers import SMALL, TINY, brute_force_best, evaluate, first_unseen, one_mutation, rng_copy, run_workers


def _aging(**kw):
    options = dict(mu=5, tournament_size=3, seed=2, max_evaluations=40)
    return RegularizedEvolution(SearchSpace(), **{**options, **kw})


def _drawn_parent(strategy, rng):
    """The tournament, drawn as the paper says: S members of the queue uniformly without replacement, the
    best successful one wins (the best living one if all S failed)."""
    queue = strategy.queue
    picks = rng.choice(len(queue), size=min(strategy.tournament_size, len(queue)), replace=False)
    contenders = rank(queue[int(i)] for i in sorted(picks))
    return (contenders or rank(queue))[0].genotype


def _expected(strategy):
    rng = rng_copy(strategy)
    if len(strategy.seen) < strategy.mu or not any(e.ok for e in strategy.queue):
        return first_unseen(strategy.space.sample, rng, strategy.seen)
    return first_unseen(lambda r: mutate(_drawn_parent(strategy, r), strategy.space, r, strategy.mutation), rng,
                        strategy.seen)


def test_the_queue_holds_the_p_most_recent_evaluations_in_the_order_told():
    strategy = _aging(mu=4)
    out = []
    while not strategy.done:
        out += strategy.ask(3 - len(out))
        strategy.tell([evaluate(out.pop(-1))])      # the newest first: tell order differs from ask order
        assert list(strategy.queue) == strategy.evaluations[-4:]
        assert list(strategy.population) == rank(strategy.queue)
    assert strategy.evaluation_count == 40


def test_the_oldest_dies_not_the_worst():
    strategy = _aging(mu=3, tournament_size=1)
    [first] = strategy.ask(1)
    champion = Evaluation.succeeded(first.genotype, 1.0, epochs=2)   # better than anything that follows
    strategy.tell([champion])
    for _ in range(2):
        [c] = strategy.ask(1)
        strategy.tell([evaluate(c)])
    assert strategy.population[0] == champion and strategy.queue[0] == champion
    [c] = strategy.ask(1)
    strategy.tell([evaluate(c)])
    assert champion not in strategy.queue and champion not in strategy.population   # aged out
    assert strategy.best == champion                # still the best of the search
    assert len(strategy.queue) == 3


def test_candidates_are_random_until_p_were_asked_then_mutants_of_tournament_winners():
    strategy = _aging(mu=5, tournament_size=3)
    bred = 0
    while not strategy.done:
        expected = _expected(strategy)
        was_random = len(strategy.seen) < strategy.mu
        [candidate] = strategy.ask(1)
        assert candidate.genotype == expected
        bred += not was_random
        strategy.tell([evaluate(candidate)])
    assert bred == 40 - 5


def test_a_tournament_of_the_whole_queue_always_mutates_its_best():
    strategy = _aging(mu=4, tournament_size=4, max_evaluations=30)
    for _ in range(30):
        best = rank(strategy.queue)[0].genotype if len(strategy.seen) >= 4 else None
        [candidate] = strategy.ask(1)
        if best is not None:
            assert one_mutation(best, candidate.genotype), (best, candidate)
        strategy.tell([evaluate(candidate)])


def test_a_tournament_of_one_breeds_from_members_other_than_the_best():
    strategy = _aging(mu=6, tournament_size=1)
    not_from_the_best = 0
    for _ in range(40):
        best = rank(strategy.queue)[0].genotype if len(strategy.seen) >= 6 else None
        [candidate] = strategy.ask(1)
        if best is not None and not one_mutation(best, candidate.genotype):
            not_from_the_best += 1
            assert any(one_mutation(e.genotype, candidate.genotype) for e in strategy.queue)
        strategy.tell([evaluate(candidate)])
    assert not_from_the_best > 5


def test_it_breeds_while_results_are_outstanding():
    strategy = _aging(mu=4, max_evaluations=20)
    first = strategy.ask(4)
    strategy.tell([evaluate(c) for c in first[:3]])
    # one of the first P still training: the next child is bred from the three in the queue now
    expected = _expected(strategy)
    [child] = strategy.ask(1)
    assert child.genotype == expected and child.genotype not in [c.genotype for c in first]
    assert strategy.outstanding == [first[3], child]


def test_failed_members_age_in_the_queue_but_never_win():
    strategy = RegularizedEvolution(SMALL, mu=4, tournament_size=2, seed=0, max_evaluations=60)
    failing = lambda c: (Evaluation.failed(c.genotype, "diverged", epochs=2) if c.genotype.latent == 20  # noqa: E731
                         else evaluate(c))
    while not strategy.done:
        alive = [e for e in strategy.queue if e.ok]
        [candidate] = strategy.ask(1)
        if len(strategy.seen) > 5 and alive:
            assert any(one_mutation(e.genotype, candidate.genotype) for e in alive)
        strategy.tell([failing(candidate)])
        assert all(e.ok for e in strategy.population)
    assert any(not e.ok for e in strategy.evaluations)


def test_never_asks_a_genotype_twice_and_ends():
    strategy = RegularizedEvolution(SMALL, mu=5, tournament_size=2, seed=1, max_evaluations=100, report_every=20)
    asks, _ = run_workers(strategy, 4)
    genotypes = [c.genotype for batch in asks for c in batch]
    assert len(genotypes) == len(set(genotypes)) == 100
    assert sum(r.duplicates for r in strategy.history) > 0
    assert [r.evaluated for r in strategy.history] == [20] * 5
    assert strategy.best == brute_force_best(strategy.evaluations, 1)[0]
    dry = RegularizedEvolution(TINY, mu=2, tournament_size=1, seed=0, max_evaluations=10)
    run_workers(dry, 1)
    assert dry.exhausted and dry.evaluation_count == 2


@pytest.mark.parametrize("size", [0, 6, 2.0])
def test_the_tournament_must_fit_the_population(size):
    with pytest.raises(ValueError, match="tournament_size must be an integer in \\[1, population 5\\]"):
        RegularizedEvolution(SMALL, mu=5, tournament_size=size, max_evaluations=10)


def test_the_same_seed_and_tells_give_the_same_search():
    a, b = _aging(), _aging()
    pick_a, pick_b = np.random.default_rng(4), np.random.default_rng(4)
    assert run_workers(a, 3, pick=pick_a)[0] == run_workers(b, 3, pick=pick_b)[0]
    assert a.queue == b.queue
