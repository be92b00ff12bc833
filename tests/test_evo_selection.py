"""evo.selection and evo.evaluation: (mu + lambda) truncation, fitness = 1 / loss, failures; states (ok,
failed, lost), candidates (genotype @ epochs), epochs and seconds; an evaluation of a trainer's report."""
import numpy as np
import pytest

from evo.evaluation import Candidate, EvalState, Evaluation, parse_candidate
from evo.genotype import GenotypeError, parse_genotype
from evo.measurement import Measurement
from evo.selection import rank, select_survivors
from evo.space import SearchSpace

G = parse_genotype("850|20|1000")
E = 2  # the fidelity of the evaluations here, where it does not matter


# -- Evaluation -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", [1e-6, 0.5, 1.0, 95.25, 250, 1e12])
def test_fitness_is_one_over_loss(loss):
    e = Evaluation.succeeded(G, loss, epochs=E)
    assert e.ok and e.error == ""
    assert type(e.loss) is float and e.loss == float(loss)
    assert e.fitness == 1.0 / loss


def test_lower_loss_means_higher_fitness():
    assert Evaluation.succeeded(G, 90.0, epochs=E).fitness > Evaluation.succeeded(G, 91.0, epochs=E).fitness


def test_failed_evaluation_has_fitness_zero():
    e = Evaluation.failed(G, "diverged in epoch 2", epochs=E)
    assert not e.ok and e.loss is None and e.fitness == 0.0
    assert e.error == "diverged in epoch 2"
    assert Evaluation.failed(G, "", epochs=E).error == "unknown failure"
    assert Evaluation(G, None, epochs=E, error="boom").fitness == 0.0


@pytest.mark.parametrize("loss", [0.0, -0.0, -1.0, -1e-300, float("nan"), float("inf"), float("-inf")])
def test_non_finite_or_non_positive_loss_raises(loss):
    with pytest.raises(ValueError) as info:
        Evaluation.succeeded(G, loss, epochs=E)
    assert "850|20|1000" in str(info.value)
    with pytest.raises(ValueError):
        Evaluation(G, loss, epochs=E)


def test_failed_evaluation_needs_an_error():
    with pytest.raises(ValueError) as info:
        Evaluation(G, None, epochs=E)
    assert "error" in str(info.value)
    with pytest.raises(ValueError):
        Evaluation(G, None, epochs=E, error="")


def test_evaluation_is_frozen_and_the_measurement_does_not_count_for_equality():
    a = Evaluation.succeeded(G, 100.0, Measurement(kl=20.0), epochs=E)
    b = Evaluation.succeeded(G, 100.0, Measurement(kl=21.0), epochs=E)
    assert a == b and hash(a) == hash(b)
    assert a != Evaluation.succeeded(G, 100.5, epochs=E)
    assert a.measurement == Measurement(kl=20.0) and a.measurement.kl == 20.0
    assert Evaluation.succeeded(G, 100.0, epochs=E).measurement == Measurement()   # none given: an empty one
    with pytest.raises(AttributeError):
        a.loss = 1.0
    with pytest.raises(AttributeError):
        a.measurement.kl = 1.0                                            # the measurement is frozen too


@pytest.mark.parametrize("epochs", [0, -1, 2.0, True, None, "2"])
def test_an_evaluation_needs_epochs_of_at_least_one(epochs):
    for make in (lambda: Evaluation.succeeded(G, 95.0, epochs=epochs),
                 lambda: Evaluation.failed(G, "diverged", epochs=epochs),
                 lambda: Evaluation.lost(G, "gave up", epochs=epochs),
                 lambda: Evaluation(G, 95.0, epochs=epochs)):
        with pytest.raises(ValueError, match=r"epochs \(its fidelity\) must be an integer >= 1"):
            make()


def test_an_evaluation_without_epochs_is_refused():
    for make in (lambda: Evaluation.succeeded(G, 95.0), lambda: Evaluation.failed(G, "diverged"),
                 lambda: Evaluation.lost(G, "gave up"), lambda: Evaluation(G, 95.0)):
        with pytest.raises(TypeError, match="epochs"):
            make()
    assert Evaluation.succeeded(G, 95.0, epochs=1).epochs == 1


def test_evaluation_of_a_successful_report():
    measurement = Measurement(loss=95.5, recon=70.0, kl=25.5, curve=(120.0, 95.5))
    e = Evaluation.of(Candidate(G, 3), True, measurement)
    assert e.ok and e.loss == 95.5 and e.fitness == 1 / 95.5 and e.genotype == G and e.epochs == 3
    assert e.measurement is measurement
    assert e.measurement.recon == 70.0 and e.measurement.curve == (120.0, 95.5)
    e = Evaluation.of(Candidate(G, 3), True, Measurement(loss=95))
    assert e.ok and type(e.loss) is float and e.loss == 95.0
    e = Evaluation.of(Candidate(G, 3), True, Measurement(loss=np.float64(95.5)))
    assert e.ok and e.loss == 95.5 and type(e.loss) is float


def test_evaluation_of_a_failed_report_keeps_the_error():
    e = Evaluation.of(Candidate(G, 3), False, Measurement(loss=95.5), "worker died")
    assert not e.ok and e.error == "worker died" and e.fitness == 0.0 and e.loss is None
    assert e.measurement.loss == 95.5 and e.epochs == 3                 # what it measured is kept
    e = Evaluation.of(Candidate(G, 3), False, Measurement())
    assert not e.ok and e.error


@pytest.mark.parametrize("figures", [{}, {"loss": None}, {"loss": float("nan")}, {"loss": float("inf")},
                                     {"loss": 0.0}, {"loss": -3.0}])
def test_evaluation_of_a_report_without_a_usable_loss_fails(figures):
    measurement = Measurement.from_dict(figures)
    e = Evaluation.of(Candidate(G, 3), True, measurement)
    assert not e.ok and e.fitness == 0.0 and e.state is EvalState.FAILED and e.epochs == 3
    assert "loss" in e.error and repr(measurement.loss) in e.error
    assert measurement.loss in (None, 0.0, -3.0)                        # a non-finite loss is no loss at all


@pytest.mark.parametrize("loss", [True, "95.5", [95.5]])
def test_a_loss_that_is_not_a_number_is_no_report_at_all(loss):
    with pytest.raises(ValueError, match="'loss'"):
        Measurement.from_dict({"loss": loss})


# -- selection ------------------------------------------------------------------------------------------

def _random_pool(rng, space, size, fail_rate=0.2):
    genotypes = []
    while len(genotypes) < size:
        g = space.sample(rng)
        if g not in genotypes:
            genotypes.append(g)
    out = []
    for g in genotypes:
        if rng.random() < fail_rate:
            out.append(Evaluation.failed(g, "diverged", epochs=E))
        else:
            out.append(Evaluation.succeeded(g, float(rng.integers(90, 96)), epochs=E))   # few values: many ties
    return out


def _brute_force(evaluations, mu):
    ok = [e for e in evaluations if e.ok]
    return sorted(ok, key=lambda e: (e.loss, str(e.genotype)))[:mu]


def test_the_mu_best_survive_against_a_brute_force_sort():
    space = SearchSpace()
    for seed in range(200):
        rng = np.random.default_rng(seed)
        pool = _random_pool(rng, space, int(rng.integers(2, 30)))
        cut = int(rng.integers(0, len(pool) + 1))
        parents, offspring = pool[:cut], pool[cut:]
        mu = int(rng.integers(1, 12))
        survivors = select_survivors(parents, offspring, mu)
        assert isinstance(survivors, tuple)
        assert list(survivors) == _brute_force(pool, mu)
        assert all(s.ok for s in survivors)
        assert len(survivors) == min(mu, sum(e.ok for e in pool))


def test_failed_ones_never_survive():
    good = Evaluation.succeeded(parse_genotype("50|10|50"), 500.0, epochs=E)
    failed = [Evaluation.failed(parse_genotype(f"{w}|10|50"), "crash", epochs=E) for w in (100, 150, 200)]
    assert select_survivors(failed, [good], 10) == (good,)
    assert select_survivors([], failed, 3) == ()
    assert rank([*failed, good]) == [good]


def test_ties_are_broken_by_genotype_text():
    texts = ["50|10|50", "1000|10|50", "200|10|50", "200|10|1000"]
    evals = [Evaluation.succeeded(parse_genotype(t), 100.0, epochs=E) for t in texts]
    expected = ["1000|10|50", "200|10|1000", "200|10|50", "50|10|50"]   # plain string order
    rng = np.random.default_rng(0)
    for _ in range(10):
        order = rng.permutation(len(evals))
        shuffled = [evals[i] for i in order]
        assert [str(e.genotype) for e in rank(shuffled)] == expected
        assert [str(e.genotype) for e in select_survivors(shuffled[:2], shuffled[2:], 3)] == expected[:3]


def test_parents_and_offspring_are_pooled():
    parents = [Evaluation.succeeded(parse_genotype(f"{w}|10|50"), loss, epochs=E)
               for w, loss in ((50, 90.0), (100, 99.0), (150, 98.0))]
    offspring = [Evaluation.succeeded(parse_genotype(f"{w}|20|50"), loss, epochs=E)
                 for w, loss in ((50, 91.0), (100, 100.0), (150, 92.0))]
    survivors = select_survivors(parents, offspring, 3)
    assert [e.loss for e in survivors] == [90.0, 91.0, 92.0]          # a parent and two children
    assert survivors[0] is parents[0] and survivors[1] is offspring[0] and survivors[2] is offspring[2]
    # an elite parent survives offspring that are all worse
    worse = [Evaluation.succeeded(parse_genotype(f"{w}|30|50"), 200.0, epochs=E) for w in (50, 100, 150, 200)]
    assert select_survivors(parents, worse, 3) == tuple(sorted(parents, key=lambda e: e.loss))


def test_a_genotype_told_twice_survives_once_with_the_parent_evaluation():
    g = parse_genotype("300|30|300")
    parent = Evaluation.succeeded(g, 95.0, epochs=E)
    child = Evaluation.succeeded(g, 90.0, epochs=E)
    survivors = select_survivors([parent], [child], 5)
    assert len(survivors) == 1 and survivors[0] is parent


@pytest.mark.parametrize("mu", [0, -1])
def test_mu_below_one_raises(mu):
    with pytest.raises(ValueError) as info:
        select_survivors([Evaluation.succeeded(G, 1.0, epochs=E)], [], mu)
    assert "mu" in str(info.value)


def test_survivors_are_sorted_best_first():
    rng = np.random.default_rng(42)
    pool = _random_pool(rng, SearchSpace(), 40, fail_rate=0.0)
    survivors = select_survivors(pool[:20], pool[20:], 40)
    losses = [e.loss for e in survivors]
    assert losses == sorted(losses) and len(survivors) == 40


# -- states, candidates, fidelities ---------------------------------------------------------------------

def test_every_evaluation_has_an_explicit_state():
    assert Evaluation.succeeded(G, 95.0, epochs=E).state is EvalState.OK
    assert Evaluation.failed(G, "diverged", epochs=E).state is EvalState.FAILED
    lost = Evaluation.lost(G, "gave up after 3 attempts: heartbeats missed", epochs=5, attempts=3)
    assert lost.state is EvalState.LOST and not lost.ok and lost.fitness == 0.0 and lost.loss is None
    assert lost.attempts == 3 and lost.measurement == Measurement() and lost.epochs == 5
    assert lost.seconds == 0.0 and lost.epochs_trained == 0                     # nothing known to have trained
    assert Evaluation(G, 95.0, epochs=E).state is EvalState.OK
    assert Evaluation(G, None, epochs=E, error="x").state is EvalState.FAILED
    assert Evaluation(G, None, epochs=E, error="x", state="lost").state is EvalState.LOST   # from its stored text
    assert EvalState("ok") is EvalState.OK and EvalState.FAILED.value == "failed"


@pytest.mark.parametrize("state", [EvalState.FAILED, EvalState.LOST])
def test_a_failed_or_lost_evaluation_has_no_loss_and_says_why(state):
    with pytest.raises(ValueError, match=f"a {state.value} evaluation of 850\\|20\\|1000 has no loss"):
        Evaluation(G, 95.0, epochs=E, error="boom", state=state)
    with pytest.raises(ValueError, match="needs an error message"):
        Evaluation(G, None, epochs=E, error="", state=state)
    with pytest.raises(ValueError, match="finite positive"):
        Evaluation(G, None, epochs=E, error="boom", state=EvalState.OK)


def test_a_lost_evaluation_never_survives():
    good = Evaluation.succeeded(parse_genotype("50|10|50"), 500.0, epochs=E)
    assert select_survivors([Evaluation.lost(G, "gave up", epochs=E)], [good], 3) == (good,)


def test_candidates_are_genotype_at_epochs():
    c = Candidate(G, 5)
    assert str(c) == "850|20|1000@5" and parse_candidate(str(c)) == c
    assert Candidate(G, 5) == Candidate(parse_genotype("850|20|1000"), 5) != Candidate(G, 6)
    assert len({Candidate(G, 5), Candidate(G, 5), Candidate(G, 1)}) == 2
    assert sorted([Candidate(G, 9), Candidate(G, 1)])[0].epochs == 1
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
            Candidate(G, bad)


@pytest.mark.parametrize("text", ["850|20|1000", "850|20|1000@", "850|20|1000@x", "850|20|1000@-2", "@5"])
def test_parse_candidate_refuses_what_is_not_one(text):
    with pytest.raises(GenotypeError):
        parse_candidate(text)


def test_epochs_and_seconds_belong_to_an_evaluation():
    e = Evaluation.succeeded(G, 95.0, Measurement(kl=1.0, seconds=12.5), epochs=5)
    assert e.candidate == Candidate(G, 5) and e.seconds == 12.5
    assert e != Evaluation.succeeded(G, 95.0, epochs=3)                 # another fidelity, another result
    assert e == Evaluation.succeeded(G, 95.0, Measurement(seconds=1.0), epochs=5)   # the time it took does not count
    with pytest.raises(TypeError):
        Evaluation.succeeded(G, 95.0, epochs=5, seconds=1.0)            # the seconds are the measurement's
    with pytest.raises(AttributeError):
        e.seconds = 1.0


def test_evaluation_of_a_report_takes_the_candidates_epochs_and_the_training_seconds():
    e = Evaluation.of(Candidate(G, 4), True, Measurement(loss=95.0, seconds=3.5, epochs=3))
    assert (e.epochs, e.seconds, e.state, e.epochs_trained) == (4, 3.5, EvalState.OK, 3)   # fidelity, not count
    assert e.candidate == Candidate(G, 4)
    for seconds in (None, float("nan"), float("inf"), -1.0, 0):
        assert Evaluation.of(Candidate(G, 4), True, Measurement(loss=95.0, seconds=seconds)).seconds == 0.0
    for seconds in ("3", True):
        with pytest.raises(ValueError, match="'seconds'"):
            Measurement.from_dict({"loss": 95.0, "seconds": seconds})
    failed = Evaluation.of(Candidate(G, 4), False, Measurement(seconds=2.0), "out of memory")
    assert (failed.state, failed.epochs, failed.seconds, failed.error) == (EvalState.FAILED, 4, 2.0, "out of memory")
