"""evo.adapters.tpe: Optuna's TPE through its ask-and-tell interface - seeded determinism, conditional
parameters that always give a genotype of the space, duplicates answered from the seen-set (never asked
twice), failures told as failed trials."""
import optuna
import pytest

from evo.adapters.tpe import TPESearch
from evo.evaluation import Evaluation
from evo.space import SearchSpace
from evo_helpers import SMALL, TINY, evaluate, run_workers, synthetic_loss

RUNNING = optuna.trial.TrialState.RUNNING


def _tpe(space=SMALL, **kw):
    return TPESearch(space, **{"mu": 4, "seed": 0, "max_evaluations": 30, "startup_trials": 5, **kw})


def _sequence(strategy, workers=1):
    asks, _ = run_workers(strategy, workers)
    return [str(c) for batch in asks for c in batch]


def test_the_same_seed_and_tells_give_the_same_proposals():
    assert _sequence(_tpe(SearchSpace(), seed=3)) == _sequence(_tpe(SearchSpace(), seed=3))
    assert _sequence(_tpe(SearchSpace(), seed=3, max_evaluations=12), 3) == \
        _sequence(_tpe(SearchSpace(), seed=3, max_evaluations=12), 3)
    assert _sequence(_tpe(SearchSpace(), seed=3)) != _sequence(_tpe(SearchSpace(), seed=4))


def test_after_the_start_up_trials_tpe_exploits_what_it_was_told():
    strategy = _tpe(SearchSpace(), max_evaluations=40, startup_trials=10, seed=1)
    run_workers(strategy, 1)
    losses = [e.loss for e in strategy.evaluations]
    assert sorted(losses[10:])[5] < sorted(losses[:10])[5]      # its proposals beat the random ones'


def test_conditional_parameters_give_genotypes_of_the_space():
    space = SearchSpace(min_layers=2, max_layers=4, width_min=100, width_max=400, width_step=100,
                        latent_min=5, latent_max=25, latent_step=5)
    strategy = _tpe(space, max_evaluations=40)
    run_workers(strategy, 2)
    assert all(space.contains(e.genotype) for e in strategy.evaluations)
    depths = {e.genotype.depth for e in strategy.evaluations}
    assert {d[0] for d in depths} == {2, 3, 4} and {d[1] for d in depths} == {2, 3, 4}
    for trial in strategy.study.trials:       # a width exists only for the layers a network has
        for net in ("encoder", "decoder"):
            layers = trial.params[f"{net}_layers"]
            assert {k for k in trial.params if k.startswith(f"{net}_") and k != f"{net}_layers"} == \
                {f"{net}_{i}" for i in range(layers)}


@pytest.mark.parametrize("workers", [1, 4])
def test_duplicates_are_answered_from_the_seen_set_and_never_asked_twice(workers):
    strategy = _tpe(max_evaluations=60, startup_trials=4)
    asks, _ = run_workers(strategy, workers)
    genotypes = [c.genotype for batch in asks for c in batch]
    assert len(genotypes) == len(set(genotypes)) == 60
    assert strategy.answered_duplicates > 0
    trials = strategy.study.trials
    assert len(trials) == 60 + strategy.answered_duplicates       # each duplicate proposal is a trial...
    assert not [t for t in trials if t.state is RUNNING]          # ...and every trial was told its loss
    known = {str(e.genotype): e.loss for e in strategy.evaluations}
    for trial in trials:
        p = trial.params
        text = "|".join([",".join(str(p[f"encoder_{i}"]) for i in range(p["encoder_layers"])), str(p["latent"]),
                         ",".join(str(p[f"decoder_{i}"]) for i in range(p["decoder_layers"]))])
        assert trial.value == known[text]
    assert sum(r.duplicates for r in strategy.history) >= strategy.answered_duplicates


# 2 x 2 x 2 genotypes: random proposals repeat soon
EIGHT = SearchSpace(max_layers=1, width_min=50, width_max=100, width_step=50, latent_min=10, latent_max=20,
                    latent_step=10)


def _running(strategy):
    return [t for t in strategy.study.trials if t.state is RUNNING]


def test_a_duplicate_of_a_genotype_still_training_is_answered_when_its_result_arrives():
    strategy = _tpe(EIGHT, max_evaluations=8, startup_trials=100)
    out = []
    while len(strategy.study.trials) == len(out):                 # until a proposal repeats an outstanding one
        out += strategy.ask(1)
    assert strategy.answered_duplicates >= 1
    assert len(_running(strategy)) == len(strategy.study.trials) > len(out)   # it waits with its original
    strategy.tell([evaluate(c) for c in out])
    assert _running(strategy) == []


@pytest.mark.parametrize("seed", range(3))
def test_duplicates_proposed_within_one_ask_are_answered_too(seed):
    strategy = _tpe(EIGHT, max_evaluations=8, startup_trials=100, seed=seed)
    batch = strategy.ask(6)
    assert len({c.genotype for c in batch}) == 6
    assert len(strategy.study.trials) == 6 + strategy.answered_duplicates
    strategy.tell([evaluate(c) for c in batch])
    assert _running(strategy) == []


def test_failures_are_failed_trials():
    strategy = _tpe(max_evaluations=15)
    run_workers(strategy, 2, outcome=lambda c: Evaluation.failed(c.genotype, "diverged", epochs=c.epochs)
                if c.genotype.latent == 20 else evaluate(c))
    states = {t.state for t in strategy.study.trials}
    assert optuna.trial.TrialState.FAIL in states and RUNNING not in states
    assert all(e.ok for e in strategy.population)


def test_an_exhausted_space_ends_the_search_quickly():
    strategy = _tpe(TINY, max_evaluations=10, startup_trials=2)
    strategy.max_proposals = 50                                   # trials one proposal may take
    run_workers(strategy, 1)
    assert strategy.exhausted and strategy.done and strategy.evaluation_count == 2
    assert len(strategy.study.trials) <= 2 + 50 + 2                # one proposal's worth, not a hundred
    assert sum(r.evaluated for r in strategy.history) == 2


def test_the_loss_told_to_optuna_is_the_evaluations():
    strategy = _tpe(max_evaluations=6)
    run_workers(strategy, 1)
    first = strategy.study.trials[0]
    assert first.value == synthetic_loss(strategy.evaluations[0].genotype, 2)


@pytest.mark.parametrize("kwargs", [dict(startup_trials=0), dict(startup_trials=1.5), dict(mu=0)])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        _tpe(**kwargs)


def test_multifidelity_tpe_is_seeded_prunes_what_stops_short_and_selects_on_the_last_rung():
    import optuna

    from evo.adapters.tpe import MultiFidelityTPE
    from evo.evaluation import Evaluation

    def run():
        s = MultiFidelityTPE(mu=4, lam=6, seed=3, fidelities=(1, 4), eta=3, budget_epochs=60, startup_trials=4)
        while not s.done:
            batch = s.ask(2)
            s.tell([Evaluation.succeeded(c.genotype, 100 + c.genotype.latent / 10 + 40 / c.epochs, epochs=c.epochs)
                    for c in batch])
        return s

    a, b = run(), run()
    assert [str(e.candidate) for e in a.evaluations] == [str(e.candidate) for e in b.evaluations]
    assert a.asked_epochs <= 60 and all(e.epochs == 4 for e in a.population)
    states = [t.state for t in a.study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) >= 4  # 2 of every 3 stop at the first rung
    complete = [t for t in a.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.value for t in complete) == sorted(e.loss for e in a.evaluations if e.epochs == 4)
