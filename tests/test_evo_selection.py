"""evo.selection and evo.evaluation: (mu + lambda) truncation, fitness = 1 / loss, failures; states (ok,
failed, lost), candidates (genotype @ epochs), epochs and seconds."""
import numpy as np
import pytest

from evo.evaluation import Candidate, EvalState, Evaluation, evaluation_from_metrics, parse_candidate
from evo.genotype import GenotypeError, parse_genotype
from evo.selection import rank, select_survivors
from evo.space import SearchSpace

G = parse_genotype("850|20|1000")


# -- Evaluation -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", [1e-6, 0.5, 1.0, 95.25, 250, 1e12])
def test_fitness_is_one_over_loss(loss):
    e = Evaluation.succeeded(G, loss)
    assert e.ok and e.error == ""
    assert type(e.loss) is float and e.loss == float(loss)
    assert e.fitness == 1.0 / loss


def test_lower_loss_means_higher_fitness():
    assert Evaluation.succeeded(G, 90.0).fitness > Evaluation.succeeded(G, 91.0).fitness


def test_failed_evaluation_has_fitness_zero():
    e = Evaluation.failed(G, "diverged in epoch 2")
    assert not e.ok and e.loss is None and e.fitness == 0.0
    assert e.error == "diverged in epoch 2"
    assert Evaluation.failed(G, "").error == "unknown failure"
    assert Evaluation(G, None, "boom").fitness == 0.0


@pytest.mark.parametrize("loss", [0.0, -0.0, -1.0, -1e-300, float("nan"), float("inf"), float("-inf")])
def test_non_finite_or_non_positive_loss_raises(loss):
    with pytest.raises(ValueError) as info:
        Evaluation.succeeded(G, loss)
    assert "850|20|1000" in str(info.value)
    with pytest.raises(ValueError):
        Evaluation(G, loss)


def test_failed_evaluation_needs_an_error():
    with pytest.raises(ValueError) as info:
        Evaluation(G, None)
    assert "error" in str(info.value)
    with pytest.raises(ValueError):
        Evaluation(G, None, "")


def test_evaluation_is_frozen_and_metrics_do_not_count_for_equality():
    a = Evaluation.succeeded(G, 100.0, {"kl": 20.0})
    b = Evaluation.succeeded(G, 100.0, {"kl": 21.0})
    assert a == b and hash(a) == hash(b)
    assert a != Evaluation.succeeded(G, 100.5)
    assert a.metrics == {"kl": 20.0}
    with pytest.raises(AttributeError):
        a.loss = 1.0


def test_evaluation_from_metrics_success():
    metrics = {"loss": 95.5, "recon": 70.0, "kl": 25.5, "curve": (120.0, 95.5)}
    e = evaluation_from_metrics(G, True, metrics)
    assert e.ok and e.loss == 95.5 and e.fitness == 1 / 95.5 and e.genotype == G
    assert e.metrics["recon"] == 70.0 and e.metrics["curve"] == (120.0, 95.5)
    e = evaluation_from_metrics(G, True, {"loss": 95})
    assert e.ok and type(e.loss) is float and e.loss == 95.0
    e = evaluation_from_metrics(G, True, {"loss": np.float64(95.5)})
    assert e.ok and e.loss == 95.5


def test_evaluation_from_metrics_failure_keeps_the_error():
    e = evaluation_from_metrics(G, False, {"loss": 95.5}, "worker died")
    assert not e.ok and e.error == "worker died" and e.fitness == 0.0
    e = evaluation_from_metrics(G, False, {})
    assert not e.ok and e.error


@pytest.mark.parametrize("metrics", [{}, {"loss": None}, {"loss": float("nan")}, {"loss": float("inf")},
                                     {"loss": 0.0}, {"loss": -3.0}, {"loss": True}, {"loss": "95.5"}])
def test_evaluation_from_metrics_without_a_usable_loss_fails(metrics):
    e = evaluation_from_metrics(G, True, metrics)
    assert not e.ok and e.fitness == 0.0
    assert "loss" in e.error and repr(metrics.get("loss")) in e.error


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
            out.append(Evaluation.failed(g, "diverged"))
        else:
            out.append(Evaluation.succeeded(g, float(rng.integers(90, 96))))   # few values: many ties
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
    good = Evaluation.succeeded(parse_genotype("50|10|50"), 500.0)
    failed = [Evaluation.failed(parse_genotype(f"{w}|10|50"), "crash") for w in (100, 150, 200)]
    assert select_survivors(failed, [good], 10) == (good,)
    assert select_survivors([], failed, 3) == ()
    assert rank(failed + [good]) == [good]


def test_ties_are_broken_by_genotype_text():
    texts = ["50|10|50", "1000|10|50", "200|10|50", "200|10|1000"]
    evals = [Evaluation.succeeded(parse_genotype(t), 100.0) for t in texts]
    expected = ["1000|10|50", "200|10|1000", "200|10|50", "50|10|50"]   # plain string order
    rng = np.random.default_rng(0)
    for _ in range(10):
        order = rng.permutation(len(evals))
        shuffled = [evals[i] for i in order]
        assert [str(e.genotype) for e in rank(shuffled)] == expected
        assert [str(e.genotype) for e in select_survivors(shuffled[:2], shuffled[2:], 3)] == expected[:3]


def test_parents_and_offspring_are_pooled():
    parents = [Evaluation.succeeded(parse_genotype(f"{w}|10|50"), loss)
               for w, loss in ((50, 90.0), (100, 99.0), (150, 98.0))]
    offspring = [Evaluation.succeeded(parse_genotype(f"{w}|20|50"), loss)
                 for w, loss in ((50, 91.0), (100, 100.0), (150, 92.0))]
    survivors = select_survivors(parents, offspring, 3)
    assert [e.loss for e in survivors] == [90.0, 91.0, 92.0]          # a parent and two children
    assert survivors[0] is parents[0] and survivors[1] is offspring[0] and survivors[2] is offspring[2]
    # an elite parent survives offspring that are all worse
    worse = [Evaluation.succeeded(parse_genotype(f"{w}|30|50"), 200.0) for w in (50, 100, 150, 200)]
    assert select_survivors(parents, worse, 3) == tuple(sorted(parents, key=lambda e: e.loss))


def test_a_genotype_told_twice_survives_once_with_the_parent_evaluation():
    g = parse_genotype("300|30|300")
    parent = Evaluation.succeeded(g, 95.0)
    child = Evaluation.succeeded(g, 90.0)
    survivors = select_survivors([parent], [child], 5)
    assert len(survivors) == 1 and survivors[0] is parent


@pytest.mark.parametrize("mu", [0, -1])
def test_mu_below_one_raises(mu):
    with pytest.raises(ValueError) as info:
        select_survivors([Evaluation.succeeded(G, 1.0)], [], mu)
    assert "mu" in str(info.value)


def test_survivors_are_sorted_best_first():
    rng = np.random.default_rng(42)
    pool = _random_pool(rng, SearchSpace(), 40, fail_rate=0.0)
    survivors = select_survivors(pool[:20], pool[20:], 40)
    losses = [e.loss for e in survivors]
    assert losses == sorted(losses) and len(survivors) == 40


# -- states, candidates, fidelities ---------------------------------------------------------------------

def test_every_evaluation_has_an_explicit_state():
    assert Evaluation.succeeded(G, 95.0).state is EvalState.OK
    assert Evaluation.failed(G, "diverged").state is EvalState.FAILED
    lost = Evaluation.lost(G, "gave up after 3 attempts: heartbeats missed", epochs=5, attempts=3)
    assert lost.state is EvalState.LOST and not lost.ok and lost.fitness == 0.0 and lost.loss is None
    assert lost.metrics == {"attempts": 3} and lost.epochs == 5
    assert Evaluation(G, 95.0).state is EvalState.OK and Evaluation(G, None, "x").state is EvalState.FAILED
    assert Evaluation(G, None, "x", state="lost").state is EvalState.LOST        # from its stored text
    assert EvalState("ok") is EvalState.OK and EvalState.FAILED.value == "failed"


@pytest.mark.parametrize("state", [EvalState.FAILED, EvalState.LOST])
def test_a_failed_or_lost_evaluation_has_no_loss_and_says_why(state):
    with pytest.raises(ValueError, match=f"a {state.value} evaluation of 850\\|20\\|1000 has no loss"):
        Evaluation(G, 95.0, "boom", state=state)
    with pytest.raises(ValueError, match="needs an error message"):
        Evaluation(G, None, "", state=state)
    with pytest.raises(ValueError, match="finite positive"):
        Evaluation(G, None, "boom", state=EvalState.OK)


def test_a_lost_evaluation_never_survives():
    good = Evaluation.succeeded(parse_genotype("50|10|50"), 500.0)
    assert select_survivors([Evaluation.lost(G, "gave up")], [good], 3) == (good,)


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
    e = Evaluation.succeeded(G, 95.0, {"kl": 1.0}, epochs=5, seconds=12.5)
    assert e.candidate == Candidate(G, 5) and e.seconds == 12.5
    assert e != Evaluation.succeeded(G, 95.0, epochs=3)                 # another fidelity, another result
    assert e == Evaluation.succeeded(G, 95.0, epochs=5, seconds=1.0)    # the time it took does not count
    bare = Evaluation.failed(G, "diverged", {"epoch": 1})
    moved = bare.at(3)
    assert (moved.epochs, moved.state, moved.error, moved.metrics) == (3, EvalState.FAILED, "diverged", {"epoch": 1})
    assert bare.epochs == 0                                             # unknown until a strategy resolves it


def test_evaluation_from_metrics_takes_the_epochs_and_the_training_seconds():
    e = evaluation_from_metrics(G, True, {"loss": 95.0, "seconds": 3.5}, epochs=4)
    assert (e.epochs, e.seconds, e.state) == (4, 3.5, EvalState.OK)
    for seconds in (None, float("nan"), -1.0, "3", True):
        assert evaluation_from_metrics(G, True, {"loss": 95.0, "seconds": seconds}).seconds == 0.0
    failed = evaluation_from_metrics(G, False, {"seconds": 2.0}, "out of memory", epochs=4)
    assert (failed.state, failed.epochs, failed.seconds, failed.error) == (EvalState.FAILED, 4, 2.0, "out of memory")
