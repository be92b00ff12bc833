"""evo.steady_state: (mu + 1) evolution as results arrive - random until mu evaluations are told (or while
none succeeded), bred from the population as it is at each ask after; each tell competes at once; a report
every report_every; max_evaluations and the seen-set."""
import numpy as np
import pytest

from evo.evaluation import Evaluation
from evo.space import SearchSpace
from evo.steady_state import SteadyStateEngine
from evo.variation import MutationRates, breed
from evo_helpers import SMALL, TINY, brute_force_best, evaluate, first_unseen, one_mutation, rng_copy, run_workers


def _engine(**kw):
    options = dict(mu=4, seed=5, max_evaluations=30, report_every=5)
    return SteadyStateEngine(SMALL, **{**options, **kw})


def _expected(engine, n):
    """The n genotypes the engine's next ask(n) must hand out, computed from its state."""
    rng, taken = rng_copy(engine), []
    if engine.evaluation_count < engine.mu or not engine.population:
        propose = engine.space.sample
    else:
        parents = [e.genotype for e in engine.population]
        propose = lambda r: breed(parents, engine.space, r, engine.crossover_rate, engine.mutation_rate,  # noqa: E731
                                  engine.mutation)
    for _ in range(n):
        taken.append(first_unseen(propose, rng, engine.seen, taken))
    return taken


@pytest.mark.parametrize("workers", [1, 3])
def test_random_until_mu_are_told_then_bred_from_the_population_at_each_ask(workers):
    engine = _engine()
    out, random_asks, bred_asks = [], 0, 0
    while not engine.done:
        room = workers - len(out)
        expected = _expected(engine, room)
        bred = engine.evaluation_count >= engine.mu
        batch = engine.ask(room)
        assert [c.genotype for c in batch] == expected[:len(batch)]
        if batch:
            bred_asks += bred
            random_asks += not bred
        out += batch
        engine.tell([evaluate(out.pop(0))])
    assert random_asks >= 1 and bred_asks > 10


def test_children_are_one_mutation_from_the_population_when_only_mutation_breeds():
    engine = _engine(crossover_rate=0.0, mutation_rate=1.0, max_evaluations=40)
    checked = 0
    while not engine.done:
        parents = [e.genotype for e in engine.population]
        [candidate] = engine.ask(1)
        if engine.evaluation_count >= engine.mu:
            assert any(one_mutation(p, candidate.genotype) for p in parents), candidate
            checked += 1
        engine.tell([evaluate(candidate)])
    assert checked == 40 - 4


def test_while_nothing_succeeded_the_candidates_stay_random():
    engine = _engine(mu=3)
    for _ in range(6):                         # twice mu, all failed: population empty, still random draws
        expected = _expected(engine, 1)
        [candidate] = engine.ask(1)
        assert candidate.genotype == expected[0] and engine.population == ()
        engine.tell([Evaluation.failed(candidate.genotype, "out of memory", epochs=2)])
    assert engine.best is None


def _often_failing(candidate):
    if candidate.genotype.latent == 20 and len(candidate.genotype.encoder) == 2:
        return Evaluation.failed(candidate.genotype, "diverged", epochs=candidate.epochs)
    return evaluate(candidate)


def test_each_tell_competes_for_the_population_at_once():
    engine = _engine(max_evaluations=40)
    out = []
    while not engine.done:
        out += engine.ask(3 - len(out))
        engine.tell([_often_failing(out.pop(1 if len(out) > 1 else 0))])   # not in the order asked
        assert list(engine.population) == brute_force_best(engine.evaluations, engine.mu)
    assert any(not e.ok for e in engine.evaluations)


@pytest.mark.parametrize("max_evaluations, report_every", [(23, 5), (20, 5), (7, 10), (12, 1)])
def test_a_report_every_report_every_evaluations_and_one_for_the_rest(max_evaluations, report_every):
    engine = _engine(max_evaluations=max_evaluations, report_every=report_every)
    out, reports_after = [], []
    while not engine.done:
        out += engine.ask(3 - len(out))
        reports_after.append(len(engine.tell([evaluate(out.pop(0))])))
    full, rest = divmod(max_evaluations, report_every)
    assert [r.evaluated for r in engine.history] == [report_every] * full + ([rest] if rest else [])
    made_at = [i + 1 for i, made in enumerate(reports_after) if made]
    assert made_at == [report_every * (k + 1) for k in range(full)] + ([max_evaluations] if rest else [])
    assert [r.total_evaluations for r in engine.history] == made_at
    for report in engine.history:
        assert list(report.population) == brute_force_best(engine.evaluations[:report.total_evaluations], 4)


@pytest.mark.parametrize("workers", [1, 4, 9])
def test_max_evaluations_is_never_exceeded_even_with_many_workers(workers):
    engine = _engine(max_evaluations=17)
    out = []
    while not engine.done:
        out += engine.ask(workers - len(out))
        assert engine.evaluation_count + len(engine.outstanding) <= 17
        engine.tell([evaluate(out.pop(0))])
    assert engine.evaluation_count == 17 and engine.ask(5) == []


def test_no_genotype_is_asked_twice_and_duplicates_are_counted():
    duplicates = 0
    for seed in range(4):
        engine = _engine(seed=seed, max_evaluations=80, report_every=10)
        asks, reports = run_workers(engine, 3)
        genotypes = [c.genotype for batch in asks for c in batch]
        assert len(genotypes) == len(set(genotypes)) == 80
        duplicates += sum(r.duplicates for r in reports)
    assert duplicates > 0                      # in a space of 288, bred children repeat


def test_a_space_that_runs_dry_ends_the_search():
    engine = SteadyStateEngine(TINY, mu=2, seed=0, max_evaluations=10)
    asks, reports = run_workers(engine, 1)
    assert sorted(str(c) for batch in asks for c in batch) == ["50|10|50@2", "50|20|50@2"]
    assert engine.exhausted and engine.done and reports == []
    assert [r.evaluated for r in engine.history] == [2]             # reported by the ask that found it dry


def test_no_bound_but_the_epoch_budget():
    engine = SteadyStateEngine(SearchSpace(), mu=3, seed=1, epochs=3, budget_epochs=20, report_every=2)
    run_workers(engine, 2)
    assert engine.evaluation_count == 6 and engine.asked_epochs == 18


@pytest.mark.parametrize("kwargs", [dict(mu=0), dict(report_every=0), dict(max_evaluations=0),
                                    dict(crossover_rate=1.5), dict(mutation_rate=-0.1), dict(epochs=0)])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        SteadyStateEngine(SMALL, **{"max_evaluations": 10, **kwargs})


def test_mutation_rates_are_used():
    latent_only = MutationRates(network=0.0, latent=1.0)
    engine = _engine(crossover_rate=0.0, mutation_rate=1.0, mutation=latent_only, max_evaluations=12)
    asks, _ = run_workers(engine, 1)
    told = [e.genotype for e in engine.evaluations]
    for child in [c.genotype for batch in asks for c in batch][4:]:
        assert any(g.encoder == child.encoder and g.decoder == child.decoder and g.latent != child.latent
                   for g in told[:told.index(child)])
    assert np.all([SMALL.contains(g) for g in told])
