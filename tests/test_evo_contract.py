"""The one ask/tell contract (evo.strategy), checked for every strategy: ask(n) -> candidates, tell(evaluations)
-> reports, done; refusals leave the strategy unchanged; generational strategies are deterministic whatever
the order and the pieces in which their batches are asked and told."""
import json
import re

import numpy as np
import pytest

from evo.evaluation import Candidate, Evaluation
from evo.genotype import parse_genotype
from evo.measurement import Measurement
from evo.strategy import AsyncStrategy, GenerationalStrategy, Report
from evo_helpers import (
    ALL,
    GENERATIONAL,
    OPTIONS,
    SMALL,
    build,
    evaluate,
    history,
    run_batches,
    run_workers,
    texts,
    told,
)

STRANGER = parse_genotype("50|10|50")  # in SMALL; the tests check it is not outstanding first


def _state(strategy):
    return (json.dumps(strategy.snapshot(), sort_keys=True), [str(c) for c in strategy.outstanding],
            told(strategy), history(strategy))


@pytest.mark.parametrize("name", ALL)
def test_every_strategy_is_generational_or_asynchronous(name):
    strategy = build(name)
    assert isinstance(strategy, GenerationalStrategy if name in GENERATIONAL else AsyncStrategy)
    assert not strategy.done and strategy.outstanding == [] and strategy.history == []


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_ask_n_never_hands_out_more_than_n(name, n):
    strategy = build(name)
    asks, _ = run_batches(strategy, n)
    assert max(map(len, asks)) == n if n <= 3 else max(map(len, asks)) <= n  # batches here hold 4 or more
    assert sum(map(len, asks)) == strategy.evaluation_count


@pytest.mark.parametrize("name", ALL)
def test_ask_zero_asks_nothing_and_draws_nothing(name):
    strategy = build(name)
    before = _state(strategy)
    assert strategy.ask(0) == []
    assert _state(strategy) == before
    strategy.ask(2)
    before = _state(strategy)
    assert strategy.ask(0) == []
    assert _state(strategy) == before


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("n", [-1, 1.0, "2", True])
def test_ask_refuses_a_bad_count(name, n):
    with pytest.raises(ValueError, match="n must be None or an integer >= 0"):
        build(name).ask(n)


@pytest.mark.parametrize("name", ALL)
def test_candidates_lie_in_the_space_at_the_strategys_epochs_and_are_asked_once(name):
    strategy = build(name)
    asks, _ = run_workers(strategy, 3)
    candidates = [c for batch in asks for c in batch]
    assert all(isinstance(c, Candidate) and SMALL.contains(c.genotype) for c in candidates)
    assert len(set(candidates)) == len(candidates)                 # never the same genotype at the same epochs
    fidelities = OPTIONS[name].fidelities or (OPTIONS[name].epochs,)
    assert {c.epochs for c in candidates} == set(fidelities)
    assert strategy.final_epochs == fidelities[-1]
    assert strategy.asked_epochs == sum(c.epochs for c in candidates)


@pytest.mark.parametrize("name", ALL)
def test_outstanding_and_seen_follow_the_asks_and_tells(name):
    strategy = build(name)
    batch = strategy.ask(3)
    assert strategy.outstanding == batch and len(batch) == 3
    assert all(strategy.seen[c.genotype] is None for c in batch)
    first = evaluate(batch[1])
    assert strategy.tell([first]) == []                            # nothing completed yet
    assert strategy.outstanding == [batch[0], batch[2]]
    assert strategy.seen[batch[1].genotype] == first and strategy.evaluations == [first]


@pytest.mark.parametrize("name", ALL)
def test_tell_before_any_ask_is_refused(name):
    strategy = build(name)
    assert strategy.tell([]) == []                                 # nothing told: nothing happens
    with pytest.raises(ValueError, match="is not outstanding: ask for it first"):
        strategy.tell([Evaluation.succeeded(STRANGER, 100.0, epochs=strategy.final_epochs)])
    assert strategy.evaluation_count == 0 and strategy.seen == {}


@pytest.mark.parametrize("name", ALL)
def test_a_tell_naming_anything_not_outstanding_is_refused_whole(name):
    strategy = build(name)
    batch = strategy.ask(3)
    assert STRANGER not in strategy.seen
    before = _state(strategy)
    wrong_epochs = Evaluation.succeeded(batch[0].genotype, 100.0, epochs=batch[0].epochs + 1)
    for bad in ([evaluate(batch[0]), Evaluation.succeeded(STRANGER, 100.0, epochs=batch[0].epochs)],
                [evaluate(batch[0]), evaluate(batch[0])],          # the same candidate twice in one tell
                [evaluate(batch[1]), wrong_epochs]):
        with pytest.raises(ValueError, match="is not outstanding"):
            strategy.tell(bad)
        assert _state(strategy) == before                          # nothing of the refused tell was applied
    strategy.tell([evaluate(batch[0])])
    with pytest.raises(ValueError, match=re.escape(str(batch[0]))):  # told once only
        strategy.tell([evaluate(batch[0])])


@pytest.mark.parametrize("name", ALL)
def test_tell_takes_only_evaluations(name):
    strategy = build(name)
    batch = strategy.ask(2)
    with pytest.raises(TypeError, match="takes Evaluation objects"):
        strategy.tell([(c.genotype, 100.0) for c in batch])
    assert strategy.outstanding == batch


def test_an_evaluation_cannot_leave_its_epochs_out():
    g = STRANGER
    with pytest.raises(TypeError, match="epochs"):
        Evaluation.succeeded(g, 123.0)                             # no default: the fidelity must be said
    with pytest.raises(TypeError, match="epochs"):
        Evaluation(g, 123.0)
    for epochs in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError, match=r"epochs \(its fidelity\) must be an integer >= 1"):
            Evaluation.succeeded(g, 123.0, epochs=epochs)


@pytest.mark.parametrize("name", ALL)
def test_an_evaluation_of_the_outstanding_candidate_is_told_at_its_epochs(name):
    strategy = build(name)
    batch = strategy.ask(2)
    told_now = Evaluation.of(batch[0], True, Measurement(loss=123.0))  # what an evaluator makes of a report
    assert told_now.epochs == batch[0].epochs and told_now.candidate == batch[0]
    strategy.tell([told_now])
    assert strategy.evaluations[0].epochs == batch[0].epochs and strategy.evaluations[0].loss == 123.0
    assert strategy.outstanding == batch[1:]


@pytest.mark.parametrize("name", ALL)
def test_reports_count_what_was_told_and_the_epochs_asked(name):
    strategy = build(name)
    _asks, reports = run_workers(strategy, 2)
    assert all(isinstance(r, Report) for r in reports) and reports == strategy.history
    assert [r.generation for r in reports] == list(range(len(reports)))
    assert sum(r.evaluated for r in reports) == strategy.evaluation_count
    assert reports[-1].total_evaluations == strategy.evaluation_count
    assert reports[-1].epochs_total == strategy.asked_epochs
    assert [r.epochs_total for r in reports] == sorted(r.epochs_total for r in reports)
    assert all(r.failed == sum(not e.ok for e in strategy.evaluations[r.total_evaluations - r.evaluated:
                                                                      r.total_evaluations]) for r in reports)
    assert strategy.best == reports[-1].best_so_far
    assert strategy.best.epochs == strategy.final_epochs


@pytest.mark.parametrize("name", ALL)
def test_done_asks_nothing_more_and_refuses_tells(name):
    strategy = build(name)
    run_workers(strategy, 3)
    assert strategy.done and strategy.outstanding == []
    before = _state(strategy)
    assert strategy.ask() == [] and strategy.ask(5) == []
    assert _state(strategy) == before
    with pytest.raises(ValueError, match="not outstanding"):
        strategy.tell([strategy.evaluations[-1]])


@pytest.mark.parametrize("name", ALL)
def test_not_done_while_a_candidate_is_outstanding(name):
    strategy = build(name, generations=1)
    out = []
    while batch := strategy.ask():                                 # everything it hands out before any tell
        out += batch
    assert out and not strategy.done
    strategy.tell([evaluate(c) for c in out[:-1]])
    assert strategy.outstanding == out[-1:] and not strategy.done
    strategy.tell([evaluate(out[-1])])
    run_workers(strategy, 1)
    assert strategy.done


@pytest.mark.parametrize("name", ALL)
def test_the_snapshot_is_plain_json(name):
    strategy = build(name)
    run_workers(strategy, 2)
    snapshot = strategy.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["evaluations"] == strategy.evaluation_count
    assert snapshot["asked_epochs"] == strategy.asked_epochs
    assert snapshot["population"] == [[str(e.genotype), e.loss] for e in strategy.population]


# -- determinism ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_the_same_seed_and_tells_give_the_same_search(name):
    a, b = build(name), build(name)
    asks_a, _ = run_workers(a, 3)
    asks_b, _ = run_workers(b, 3)
    assert texts(asks_a) == texts(asks_b) and told(a) == told(b) and history(a) == history(b)
    c = build(name, seed=OPTIONS[name].seed + 1)
    run_workers(c, 3)
    assert told(c) != told(a)


@pytest.mark.parametrize("name", GENERATIONAL)
def test_a_generational_search_does_not_depend_on_the_order_or_pieces_of_its_tells(name):
    reference = build(name)
    run_batches(reference, None)
    for seed, (n, workers) in enumerate([(None, None), (1, None), (3, None), (None, 2), (None, 5)]):
        strategy = build(name)
        if workers is None:
            run_batches(strategy, n, order_rng=np.random.default_rng(seed))
        else:
            run_workers(strategy, workers, pick=np.random.default_rng(seed))
        assert history(strategy) == history(reference)
        assert strategy.snapshot()["rng"] == reference.snapshot()["rng"]
        assert sorted(told(strategy)) == sorted(told(reference))
        assert strategy.population == reference.population
