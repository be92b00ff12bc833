"""evo.engine: (mu + lambda) evolution through ask/tell, with a cheap synthetic fitness.

The engine asks for candidates (genotype @ epochs, 2 epochs here) and is told Evaluations."""
import statistics

import numpy as np
import pytest

from evo.engine import EvolutionEngine
from evo.evaluation import Candidate, Evaluation
from evo.genotype import GenotypeError, parse_genotype
from evo.measurement import Measurement
from evo.space import SearchSpace
from evo_helpers import SMALL, TINY, brute_force_best, one_mutation


def synthetic_loss(g):
    return 100.0 + (sum(g.encoder) + sum(g.decoder)) / 100 + g.latent


def genotypes(batch):
    """The genotypes of a batch of candidates (a batch of genotypes as it is)."""
    return [getattr(c, "genotype", c) for c in batch]


def succeed(batch):
    return [Evaluation.succeeded(g, synthetic_loss(g), epochs=2) for g in genotypes(batch)]


def fails(g):
    return g.latent == 20 and len(g.decoder) == 2


def sometimes_fail(batch):
    return [Evaluation.failed(g, "diverged", epochs=2) if fails(g) else
            Evaluation.succeeded(g, synthetic_loss(g), epochs=2) for g in genotypes(batch)]


def tell_one_generation(engine, evaluations):
    """Tell a whole batch: it completes exactly one generation, whose report is returned."""
    [report] = engine.tell(evaluations)
    return report


def drive(engine, generations, evaluate=succeed, order_rng=None):
    """Run ``generations`` ask/tell rounds; return the asks, the reports and every evaluation told."""
    asks, reports, told = [], [], []
    for _ in range(generations):
        batch = engine.ask()
        asks.append(batch)
        evaluations = list(evaluate(batch))
        if order_rng is not None:
            evaluations = [evaluations[i] for i in order_rng.permutation(len(evaluations))]
        told.extend(evaluations)
        reports.append(tell_one_generation(engine, evaluations))
    return asks, reports, told


# -- ask / tell contract ----------------------------------------------------------------------------------

@pytest.mark.parametrize("space", [SearchSpace(), SMALL])
def test_generation_zero_asks_mu_distinct_genotypes_of_the_space(space):
    for seed in range(5):
        engine = EvolutionEngine(space, mu=12, lam=7, seed=seed)
        batch = engine.ask()
        assert all(isinstance(c, Candidate) and c.epochs == 2 for c in batch)
        assert len(batch) == 12 and len(set(genotypes(batch))) == 12
        assert all(space.contains(g) for g in genotypes(batch))
        assert engine.generation == 0


def test_the_batch_is_handed_out_once_and_in_any_pieces():
    engine = EvolutionEngine(SMALL, mu=6, lam=6, seed=1)
    whole = EvolutionEngine(SMALL, mu=6, lam=6, seed=1).ask()
    first = engine.ask(2)
    first.clear()                                   # the caller's list is a copy
    pieces = engine.outstanding + engine.ask(3) + engine.ask()
    assert pieces == whole and engine.outstanding == whole
    assert engine.ask() == [] and engine.ask(4) == []  # all of it is out: nothing more until it is told
    tell_one_generation(engine, succeed(whole))
    second = engine.ask()
    assert second and not set(second) & set(whole) and engine.ask() == []
    assert engine.generation == 1


def _asked_engine():
    engine = EvolutionEngine(SearchSpace(), mu=5, lam=5, seed=3)
    return engine, engine.ask()


def test_a_generation_completes_only_when_its_whole_batch_was_told():
    engine, batch = _asked_engine()
    assert engine.tell(succeed(batch[:-1])) == []       # four of five: no generation yet
    assert engine.outstanding == batch[-1:] and engine.generation == 0 and engine.evaluation_count == 4
    assert engine.population == () and engine.ask() == []
    report = tell_one_generation(engine, succeed(batch[-1:]))
    assert report.evaluated == 5 and engine.generation == 1 and len(engine.population) == 5


def test_tell_with_an_extra_evaluation_raises_and_tells_nothing():
    engine, batch = _asked_engine()
    stranger = next(g for g in (parse_genotype(t) for t in ("850|20|1000", "1000|60|700,750"))
                    if g not in genotypes(batch))
    with pytest.raises(ValueError) as info:
        engine.tell([*succeed(batch), Evaluation.succeeded(stranger, 100.0, epochs=2)])
    assert str(stranger) in str(info.value) and "not outstanding" in str(info.value)
    assert engine.outstanding == batch and engine.evaluation_count == 0
    with pytest.raises(ValueError):                      # replacing one with a stranger
        engine.tell([*succeed(batch[:-1]), Evaluation.succeeded(stranger, 100.0, epochs=2)])
    assert engine.evaluation_count == 0
    assert tell_one_generation(engine, succeed(batch)).evaluated == 5


def test_tell_with_a_duplicate_evaluation_raises():
    engine, batch = _asked_engine()
    with pytest.raises(ValueError) as info:
        engine.tell(succeed([*batch, batch[0]]))
    assert str(batch[0]) in str(info.value)
    with pytest.raises(ValueError):                      # same genotype with a different loss
        engine.tell([*succeed(batch), Evaluation.succeeded(batch[0].genotype, 1.0, epochs=2)])
    assert engine.evaluation_count == 0 and engine.population == ()


def test_tell_before_ask_and_a_second_tell_are_refused():
    engine = EvolutionEngine(SMALL, mu=4, lam=4, seed=0)
    assert engine.tell([]) == []
    probe = EvolutionEngine(SMALL, mu=4, lam=4, seed=0).ask()
    with pytest.raises(ValueError, match="not outstanding: ask for it first"):
        engine.tell(succeed(probe))
    batch = engine.ask()
    assert batch == probe
    tell_one_generation(engine, succeed(batch))
    with pytest.raises(ValueError, match="not outstanding"):   # a second tell needs a new ask
        engine.tell(succeed(batch))
    assert engine.generation == 1


def test_evaluations_at_other_epochs_are_refused():
    engine, batch = _asked_engine()
    with pytest.raises(ValueError, match="@5 is not outstanding"):
        engine.tell([Evaluation.succeeded(batch[0].genotype, 100.0, epochs=5)])
    engine.tell([Evaluation.succeeded(batch[0].genotype, 100.0, epochs=2)])
    stamped = Evaluation.of(batch[1], True, Measurement(loss=101.0))   # at the epochs of the candidate asked
    engine.tell([stamped])
    assert [e.epochs for e in engine.evaluations] == [2, 2] and engine.evaluations[1].loss == 101.0
    assert engine.seen[batch[1].genotype].candidate == batch[1]
    with pytest.raises(ValueError, match=r"is not outstanding: ask for it first"):   # not twice
        engine.tell([stamped])


@pytest.mark.parametrize("kwargs", [dict(mu=0), dict(mu=-3), dict(lam=0), dict(crossover_rate=1.5),
                                    dict(crossover_rate=-0.1), dict(mutation_rate=2.0),
                                    dict(mutation_rate=-1.0), dict(mutation_rate=float("nan")),
                                    dict(epochs=0), dict(epochs=2.0), dict(generations=0),
                                    dict(budget_epochs=0), dict(budget_epochs=1.5)])
def test_bad_engine_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        EvolutionEngine(SMALL, **kwargs)


def test_generations_end_the_search():
    for generations in (1, 2, 5):
        engine = EvolutionEngine(SMALL, mu=4, lam=4, seed=2, generations=generations)
        asks = 0
        while not engine.done:
            engine.tell(sometimes_fail(engine.ask()))
            asks += 1
        assert engine.generation == generations == len(engine.history) == asks
        assert engine.ask() == []


# -- selection through generations ------------------------------------------------------------------------

def test_elitism_population_is_the_mu_best_ever_told():
    for seed in range(4):
        mu = 6
        engine = EvolutionEngine(SearchSpace(), mu=mu, lam=8, seed=seed)
        told, previous_best = [], float("inf")
        for generation in range(12):
            batch = genotypes(engine.ask())
            evaluations = sometimes_fail(batch)
            told.extend(evaluations)
            report = tell_one_generation(engine, evaluations)
            assert report.generation == generation
            assert list(report.population) == brute_force_best(told, mu)
            assert report.population == engine.population
            assert report.best is engine.population[0]
            assert report.best.loss <= previous_best     # the best never gets worse
            previous_best = report.best.loss
            assert engine.best == brute_force_best(told, 1)[0]
            losses = [e.loss for e in report.population]
            assert report.median_loss == statistics.median(losses)


def test_parents_keep_their_evaluation_objects():
    engine = EvolutionEngine(SMALL, mu=8, lam=8, seed=5)
    told_by_genotype = {}
    previous = ()
    for _ in range(10):
        evaluations = sometimes_fail(genotypes(engine.ask()))
        told_by_genotype.update((e.genotype, e) for e in evaluations)
        engine.tell(evaluations)
        for member in engine.population:
            assert member is told_by_genotype[member.genotype]  # the very object that was told
        kept = {e.genotype: e for e in previous} if previous else {}
        for member in engine.population:
            if member.genotype in kept:
                assert member is kept[member.genotype]
        previous = engine.population


def test_evolution_improves_on_its_initial_population():
    engine = EvolutionEngine(SearchSpace(), mu=10, lam=10, seed=0)
    _, reports, _ = drive(engine, 20)
    assert reports[-1].best.loss < reports[0].best.loss
    assert reports[-1].median_loss < reports[0].median_loss


def test_a_child_equal_to_its_parent_is_always_mutated():
    # no crossover and no voluntary mutation: every child starts as a copy of a parent
    for seed in range(3):
        engine = EvolutionEngine(SearchSpace(), mu=6, lam=8, seed=seed, crossover_rate=0.0, mutation_rate=0.0)
        engine.tell(succeed(genotypes(engine.ask())))
        parents = [e.genotype for e in engine.population]
        batch = genotypes(engine.ask())
        assert len(batch) == 8 and not set(batch) & set(parents)
        for child in batch:      # one mutation step away from some parent
            assert any(one_mutation(p, child) for p in parents), child


def test_crossover_rate_one_without_mutation_breeds_crossover_children():
    crossed = 0
    for seed in range(3):
        engine = EvolutionEngine(SearchSpace(), mu=6, lam=8, seed=seed, crossover_rate=1.0, mutation_rate=0.0)
        engine.tell(succeed(genotypes(engine.ask())))
        parents = [e.genotype for e in engine.population]
        for child in genotypes(engine.ask()):
            assert child not in parents and SearchSpace().contains(child)
            # a crossover child that equals no parent is not mutated: all its genes are inherited
            if (any(child.encoder == p.encoder for p in parents) and any(child.latent == p.latent for p in parents)
                    and any(child.decoder == p.decoder for p in parents)):
                crossed += 1
            else:    # it equalled a parent and was then mutated
                assert any(one_mutation(p, child) for p in parents), child
    assert crossed > 5


# -- the seen-set ---------------------------------------------------------------------------------------

def test_no_genotype_is_ever_asked_twice_and_duplicates_are_counted():
    total_duplicates = 0
    for seed in range(5):
        lam = 10
        engine = EvolutionEngine(SMALL, mu=10, lam=lam, seed=seed)
        asked = set()
        evaluated = 0
        for generation in range(15):
            batch = genotypes(engine.ask())
            assert len(set(batch)) == len(batch)
            assert not asked & set(batch), f"seed {seed} generation {generation} re-asked a genotype"
            assert all(SMALL.contains(g) for g in batch)
            asked |= set(batch)
            report = tell_one_generation(engine, sometimes_fail(batch))
            evaluated += len(batch)
            assert report.evaluated == len(batch)
            assert report.total_evaluations == evaluated == engine.evaluation_count
            if generation == 0:
                assert report.duplicates == 0
            else:                                        # every bred child is either asked or a duplicate
                assert len(batch) + report.duplicates == lam
            total_duplicates += report.duplicates
        assert set(engine.seen) == asked
        assert all(engine.seen[g] is not None for g in asked)
    assert total_duplicates > 0


def test_seen_marks_outstanding_genotypes_until_told():
    engine = EvolutionEngine(SMALL, mu=4, lam=4, seed=0)
    batch = genotypes(engine.ask())
    assert engine.seen == dict.fromkeys(batch) and engine.evaluations == []
    evaluations = succeed(batch)
    engine.tell(evaluations)
    assert engine.seen == {e.genotype: e for e in evaluations}


def test_a_space_that_runs_dry_ends_the_search():
    engine = EvolutionEngine(TINY, mu=3, lam=4, seed=0)
    batch = genotypes(engine.ask())
    assert sorted(map(str, batch)) == ["50|10|50", "50|20|50"]      # fewer than mu: only two exist
    report = tell_one_generation(engine, succeed(batch))
    assert engine.exhausted and engine.done
    assert engine.ask() == [] and engine.tell([]) == []
    assert engine.population == report.population and engine.generation == 1


def test_generations_of_duplicates_only_are_reported_empty():
    engine = EvolutionEngine(TINY, mu=2, lam=4, seed=0, generations=4)
    population = tell_one_generation(engine, succeed(engine.ask())).population
    assert not engine.exhausted and len(population) == 2
    assert engine.ask() == [] and engine.done                      # generations 1-3 bred duplicates only
    for report in engine.history[1:]:
        assert report.evaluated == 0 and report.duplicates == 4 and report.population == population
    assert len(engine.history) == 4


def test_without_a_generation_bound_a_dry_space_ends_after_100_empty_generations():
    engine = EvolutionEngine(TINY, mu=2, lam=4, seed=0, budget_epochs=1000)
    tell_one_generation(engine, succeed(engine.ask()))
    assert engine.ask() == [] and engine.exhausted and engine.done
    assert len(engine.history) == 101 and engine.asked_epochs == 4


# -- failures ---------------------------------------------------------------------------------------------

def test_failed_evaluations_never_survive_are_counted_and_never_reasked():
    saw_failures = 0
    for seed in range(4):
        engine = EvolutionEngine(SMALL, mu=8, lam=8, seed=seed)
        failed = set()
        for _ in range(12):
            batch = genotypes(engine.ask())
            assert not failed & set(batch)
            report = tell_one_generation(engine, sometimes_fail(batch))
            failed |= {g for g in batch if fails(g)}
            assert report.failed == sum(fails(g) for g in batch)
            assert not any(fails(e.genotype) for e in report.population)
            assert all(e.ok for e in report.population)
            saw_failures += report.failed
        for g in failed:
            assert engine.seen[g].error == "diverged" and engine.seen[g].fitness == 0.0
    assert saw_failures > 0


def test_all_failed_generation_zero_restarts_from_fresh_random_genotypes():
    for seed in range(3):
        engine = EvolutionEngine(SMALL, mu=6, lam=4, seed=seed)
        first = genotypes(engine.ask())
        report = tell_one_generation(engine, [Evaluation.failed(g, "out of memory", epochs=2) for g in first])
        assert report.population == () and report.best is None and report.median_loss is None
        assert report.failed == 6 and engine.best is None
        fresh = genotypes(engine.ask())
        assert len(fresh) == 6 and len(set(fresh)) == 6        # mu fresh ones, not lam offspring
        assert not set(fresh) & set(first)
        assert all(SMALL.contains(g) for g in fresh)
        report = tell_one_generation(engine, succeed(fresh))
        assert len(report.population) == 6 and report.failed == 0


def test_all_failed_initial_population_is_not_asked_again():
    initial = [parse_genotype(t) for t in ("850|20|1000", "200,500|20|1000,650,50")]
    engine = EvolutionEngine(SearchSpace(), mu=4, seed=0, initial=initial)
    first = genotypes(engine.ask())
    engine.tell([Evaluation.failed(g, "crash", epochs=2) for g in first])
    again = genotypes(engine.ask())
    assert len(again) == 4 and not set(again) & set(first)


# -- determinism --------------------------------------------------------------------------------------------

def _snapshot(reports):
    return [(r.generation, r.evaluated, r.failed, r.duplicates, r.total_evaluations,
             tuple((str(e.genotype), e.loss, e.error) for e in r.population)) for r in reports]


def test_same_seed_same_search_bit_for_bit():
    for seed in (0, 7):
        a = EvolutionEngine(SMALL, mu=8, lam=8, seed=seed)
        b = EvolutionEngine(SMALL, mu=8, lam=8, seed=seed)
        asks_a, reports_a, _ = drive(a, 12, sometimes_fail)
        asks_b, reports_b, _ = drive(b, 12, sometimes_fail)
        assert asks_a == asks_b
        assert _snapshot(reports_a) == _snapshot(reports_b)
        assert a.population == b.population
        assert [e.loss for e in a.population] == [e.loss for e in b.population]


def test_telling_in_a_shuffled_order_gives_the_same_search():
    a = EvolutionEngine(SearchSpace(), mu=8, lam=10, seed=11)
    b = EvolutionEngine(SearchSpace(), mu=8, lam=10, seed=11)
    asks_a, reports_a, _ = drive(a, 10, sometimes_fail)
    asks_b, reports_b, _ = drive(b, 10, sometimes_fail, order_rng=np.random.default_rng(99))
    assert asks_a == asks_b
    assert _snapshot(reports_a) == _snapshot(reports_b)
    assert list(a.seen) == list(b.seen)


def test_a_different_seed_gives_a_different_search():
    a = EvolutionEngine(SearchSpace(), mu=8, lam=8, seed=1)
    b = EvolutionEngine(SearchSpace(), mu=8, lam=8, seed=2)
    asks_a, _, _ = drive(a, 5)
    asks_b, _, _ = drive(b, 5)
    assert asks_a[0] != asks_b[0]
    assert set(a.seen) != set(b.seen)


# -- initial population -------------------------------------------------------------------------------------

def test_initial_genotypes_seed_generation_zero():
    initial = [parse_genotype(t) for t in ("850|20|1000", "200,500|20|1000,650,50", "1000|60|700,750")]
    engine = EvolutionEngine(SearchSpace(), mu=8, seed=0, initial=initial)
    batch = genotypes(engine.ask())
    assert batch[:3] == initial
    assert len(batch) == 8 and len(set(batch)) == 8
    assert all(SearchSpace().contains(g) for g in batch)
    exact = EvolutionEngine(SearchSpace(), mu=3, seed=0, initial=initial)
    assert genotypes(exact.ask()) == initial
    exact.tell(succeed(initial))
    assert not set(genotypes(exact.ask())) & set(initial)               # bred offspring, not the initial ones again


def test_invalid_initial_raises():
    with pytest.raises(GenotypeError) as info:
        EvolutionEngine(SearchSpace(), mu=4, initial=[parse_genotype("75|20|1000")])
    assert "75" in str(info.value)
    with pytest.raises(GenotypeError):
        EvolutionEngine(SMALL, mu=4, initial=[parse_genotype("850|20|1000")])   # valid text, outside SMALL
    with pytest.raises(ValueError) as info:
        EvolutionEngine(SearchSpace(), mu=4, initial=[parse_genotype("850|20|1000")] * 2)
    assert "twice" in str(info.value)


def test_initial_longer_than_mu_is_refused():
    initial = [parse_genotype(t) for t in ("850|20|1000", "200,500|20|1000,650,50", "1000|60|700,750")]
    with pytest.raises(ValueError, match="do not fit a population of 2"):
        EvolutionEngine(SearchSpace(), mu=2, seed=0, initial=initial)
