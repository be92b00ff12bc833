"""The Optuna mirror of a search (evo/adapters/optuna_mirror.py): one trial per evaluation, in a journal file
optuna (and optuna-dashboard) reads, never a trial twice across resumes, and a mirror that cannot be written
never stops the search."""
import datetime
import hashlib
import os
from dataclasses import dataclass, replace

import optuna
import pytest
from optuna.trial import TrialState

from evo.adapters import register_all
from evo.adapters.optuna_mirror import (
    FILE,
    METRIC,
    OptunaMirror,
    distributions,
    genotype_params,
    open_storage,
    trial_of,
)
from evo.evaluation import Candidate, Evaluation
from evo.genotype import Genotype, parse_genotype
from evo.head.evaluators import InProcessEvaluator
from evo.head.search_run import SearchRun
from evo.measurement import Measurement
from evo.search_config import SearchConfig
from evo.space import SearchSpace
from evo.spec import TrainSpec, task_id
from evo.strategies import StrategyOptions

SPACE = SearchSpace(max_layers=3)
SPEC = TrainSpec(dataset="synthetic", epochs=3)
G = parse_genotype("100,200|20|300")


@dataclass(frozen=True)
class _Trained:
    ok: bool
    measurement: Measurement
    error: str = ""


def _loss(genotype: Genotype, epoch: int) -> float:
    unit = int(hashlib.sha256(str(genotype).encode()).hexdigest()[:8], 16) / 2**32
    return 80.0 + 40.0 * unit + 30.0 / epoch


def _train(genotype: Genotype, spec: TrainSpec) -> _Trained:
    """A fake trainer: a loss fixed by the genotype, falling with the epochs."""
    curve = tuple(_loss(genotype, e) for e in range(1, spec.epochs + 1))
    return _Trained(True, Measurement(loss=curve[-1], curve=curve, epochs=spec.epochs, seconds=0.01, params=1000))


def _trials(path, name):
    return optuna.load_study(study_name=name, storage=open_storage(path)).get_trials(deepcopy=False)


# -- one trial -------------------------------------------------------------------------------

def test_distributions_are_the_space_on_its_grids():
    d = distributions(SPACE)
    assert set(d) == {"encoder_layers", "encoder_0", "encoder_1", "encoder_2", "latent", "decoder_layers",
                      "decoder_0", "decoder_1", "decoder_2"}
    assert (d["encoder_layers"].low, d["encoder_layers"].high) == (1, 3)
    assert (d["encoder_1"].low, d["encoder_1"].high, d["encoder_1"].step) == (50, 1000, 50)
    assert (d["latent"].low, d["latent"].high, d["latent"].step) == (10, 100, 10)
    assert genotype_params(G) == {"encoder_layers": 2, "encoder_0": 100, "encoder_1": 200, "latent": 20,
                                  "decoder_layers": 1, "decoder_0": 300}


def test_a_trial_holds_the_genotype_the_curve_and_the_figures():
    m = Measurement(loss=100.0, curve=(120.0, 110.0, 100.0), epochs=3, seconds=2.5, params=1234)
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    trial = trial_of(4, Evaluation.succeeded(G, 100.0, m, epochs=3), SPACE, final_epochs=3, worker="KEY",
                     task="t1", now=now)
    assert (trial.number, trial.state, trial.value) == (4, TrialState.COMPLETE, 100.0)
    assert trial.params == genotype_params(G)
    assert trial.intermediate_values == {1: 120.0, 2: 110.0, 3: 100.0}
    assert trial.user_attrs == {"genotype": str(G), "epochs": 3, "epochs_trained": 3, "seconds": 2.5, "state": "ok",
                                "params": 1234, "worker": "KEY", "task_id": "t1"}
    assert trial.datetime_complete - trial.datetime_start == datetime.timedelta(seconds=2.5)


def test_lower_rungs_are_pruned_and_failures_fail():
    low = Evaluation.succeeded(G, 110.0, Measurement(loss=110.0, curve=(120.0, 110.0), epochs=2), epochs=2)
    assert trial_of(0, low, SPACE, final_epochs=6).state is TrialState.PRUNED
    assert trial_of(0, low, SPACE, final_epochs=2).state is TrialState.COMPLETE
    failed = trial_of(0, Evaluation.failed(G, "training diverged", epochs=6), SPACE, final_epochs=6)
    assert (failed.state, failed.value, failed.user_attrs["error"]) == (TrialState.FAIL, None, "training diverged")
    lost = trial_of(0, Evaluation.lost(G, "every attempt's worker died", epochs=6), SPACE, final_epochs=6)
    assert (lost.state, lost.user_attrs["state"]) == (TrialState.FAIL, "lost")


def test_a_continued_promotion_numbers_its_epochs_from_the_start():
    whole = Measurement(loss=90.0, curve=(120.0, 110.0, 100.0, 95.0, 90.0), epochs=5, resumed_from=2)
    assert list(trial_of(0, Evaluation.succeeded(G, 90.0, whole, epochs=5), SPACE).intermediate_values) == [1, 2, 3,
                                                                                                           4, 5]
    # a worker that reports only the epochs it trained after the checkpoint
    after = Measurement(loss=90.0, curve=(100.0, 95.0, 90.0), epochs=5, resumed_from=2)
    trial = trial_of(0, Evaluation.succeeded(G, 90.0, after, epochs=5), SPACE)
    assert trial.intermediate_values == {3: 100.0, 4: 95.0, 5: 90.0}
    assert (trial.user_attrs["epochs_trained"], trial.user_attrs["resumed_from"]) == (3, 2)


def test_a_genotype_outside_the_space_keeps_its_text():
    wide = parse_genotype("100,200,300,400|20|300")  # four layers in a space of at most three
    trial = trial_of(0, Evaluation.failed(wide, "x", epochs=1), SPACE)
    assert "encoder_layers" not in trial.params and "encoder_3" not in trial.params
    assert trial.params["latent"] == 20 and trial.user_attrs["genotype"] == str(wide)


# -- the mirror ------------------------------------------------------------------------------

def _observe(mirror, evaluations):
    for e in evaluations:
        mirror(Candidate(e.genotype, e.epochs), e, None, False)


def _evaluations(n):
    out = []
    for i in range(n):
        g = Genotype((50 * (i + 1),), 10, (100,))
        out.append(Evaluation.of(Candidate(g, 3), True, _train(g, SPEC).measurement))
    return out


def test_a_new_mirror_on_the_same_file_skips_what_it_holds(tmp_path):
    path, evaluations = tmp_path / FILE, _evaluations(5)
    first = OptunaMirror(path, SPACE, 3, "run", spec=SPEC)
    _observe(first, evaluations[:3])
    again = OptunaMirror(path, SPACE, 3, "run", spec=SPEC)
    _observe(again, evaluations)  # a resume: the three replayed, then two new
    assert (again.skipped, again.written) == (3, 2)
    trials = _trials(path, "run")
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert [t.user_attrs["genotype"] for t in trials] == [str(e.genotype) for e in evaluations]
    assert trials[0].user_attrs["task_id"] == task_id(evaluations[0].genotype, SPEC)


def test_a_line_torn_by_a_kill_is_cut_and_written_again(tmp_path):
    path, evaluations = tmp_path / FILE, _evaluations(3)
    _observe(OptunaMirror(path, SPACE, 3, "run"), evaluations)
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # killed in the middle of writing the third trial
    assert len(_trials(path, "run")) == 2  # optuna's reader skips the torn line
    again = OptunaMirror(path, SPACE, 3, "run")
    _observe(again, evaluations)
    assert (again.skipped, again.written) == (2, 1)
    assert [t.user_attrs["genotype"] for t in _trials(path, "run")] == [str(e.genotype) for e in evaluations]


def test_a_lock_left_by_a_killed_writer_is_removed(tmp_path):
    path, evaluations = tmp_path / FILE, _evaluations(2)
    _observe(OptunaMirror(path, SPACE, 3, "run"), evaluations[:1])
    lock = tmp_path / f"{FILE}.lock"
    lock.symlink_to(path)  # optuna's lock, as a writer killed in the middle of an append leaves it
    os.utime(lock, (1, 1), follow_symlinks=False)
    again = OptunaMirror(path, SPACE, 3, "run")
    _observe(again, evaluations[:1])  # opened, nothing written yet (optuna would wait 30 s for that lock)
    assert again.skipped == 1 and not lock.is_symlink()
    _observe(again, evaluations[1:])
    assert (again.written, again.failed) == (1, None)


def test_a_mirror_that_cannot_be_written_stops_quietly(tmp_path):
    (tmp_path / "blocked").write_text("a file where the run directory should be")
    failures = []
    mirror = OptunaMirror(tmp_path / "blocked" / FILE, SPACE, 3, "run", on_failure=lambda p, why: failures.append(why))
    _observe(mirror, _evaluations(3))  # no exception
    assert mirror.failed and len(failures) == 1 and mirror.written == 0


# -- with the head: every tell, live and replayed --------------------------------------------

def _search(run_dir, options, *, generations=None, resume=False):
    config = SearchConfig(options, SPEC, SPACE)
    run = SearchRun.open(run_dir, generations=generations) if resume else SearchRun.create(run_dir, config)
    with run:
        mirror = OptunaMirror.of(run_dir, run.config)
        run.observe(mirror)
        run.replay()
        run.run(InProcessEvaluator(_train))
        return run.strategy.evaluations, mirror


@pytest.mark.parametrize("options", [
    StrategyOptions(strategy="evolution", population=3, offspring=3, generations=2, epochs=3, seed=1),
    StrategyOptions(strategy="evolution", population=3, offspring=6, generations=2, epochs=3, fidelities=(1, 3),
                    seed=1),
    StrategyOptions(strategy="tpe", population=3, offspring=3, generations=2, epochs=3, startup_trials=2, seed=1),
    StrategyOptions(strategy="regularized", population=3, offspring=3, generations=2, epochs=3,
                    seed=1),
    StrategyOptions(strategy="evolution", mode="asha", population=3, offspring=3, generations=3, epochs=3,
                    fidelities=(1, 3), seed=1),
    StrategyOptions(strategy="random", population=3, offspring=3, generations=2, epochs=3, seed=1),
], ids=["evolution", "multifidelity", "tpe", "regularized", "asha", "random"])
def test_every_evaluation_of_a_search_is_one_trial(tmp_path, options):
    register_all()
    evaluations, mirror = _search(tmp_path / "run", options)
    study = optuna.load_study(study_name="run", storage=open_storage(tmp_path / "run" / FILE))
    assert study.metric_names == [METRIC]
    assert (study.user_attrs["strategy"], study.user_attrs["final_epochs"]) == (options.strategy, 3)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == len(evaluations) == mirror.written
    assert sorted(t.user_attrs["genotype"] for t in trials) == sorted(str(e.genotype) for e in evaluations)
    states = {t.state for t in trials}
    assert states == ({TrialState.COMPLETE, TrialState.PRUNED} if options.fidelities else {TrialState.COMPLETE})
    assert all(len(t.intermediate_values) == t.user_attrs["epochs"] for t in trials)


def test_a_resumed_search_has_no_trial_twice(tmp_path):
    options = StrategyOptions(strategy="evolution", population=3, offspring=3, generations=2, epochs=3, seed=2)
    _search(tmp_path / "straight", replace(options, generations=4))
    _search(tmp_path / "run", options)
    held = len(_trials(tmp_path / "run" / FILE, "run"))
    # a kill between the journal's tell and the mirror's write: the mirror lacks the last trial
    lines = (tmp_path / "run" / FILE).read_bytes().splitlines(keepends=True)
    (tmp_path / "run" / FILE).write_bytes(b"".join(lines[:-1]))
    evaluations, mirror = _search(tmp_path / "run", options, generations=4, resume=True)
    assert mirror.skipped == held - 1 and mirror.written == len(evaluations) - held + 1
    trials = _trials(tmp_path / "run" / FILE, "run")
    assert [t.number for t in trials] == list(range(len(evaluations)))
    straight = _trials(tmp_path / "straight" / FILE, "straight")
    assert [t.user_attrs["genotype"] for t in trials] == [t.user_attrs["genotype"] for t in straight]
    assert [t.value for t in trials] == [t.value for t in straight]


# -- every search of the composition layer writes it -------------------------------------------------

def test_an_experiments_searches_and_peer_arms_write_their_mirrors(tmp_path):
    from evo.engine import EvolutionEngine
    from evo.experiments.searches import SearchBench

    bench = SearchBench(tmp_path, InProcessEvaluator(_train), lambda: 1, space=SPACE)
    options = StrategyOptions(strategy="evolution", population=3, offspring=3, generations=2, epochs=3, seed=4)
    result = bench.search("evolution-seed4", options, SPEC)
    peer = bench.peer("peer-seed4", {"peer": "engine"},
                      lambda directory: EvolutionEngine(SPACE, mu=3, lam=3, seed=5, epochs=3, generations=2), SPEC)
    for name, summary in (("evolution-seed4", result), ("peer-seed4", peer)):
        trials = _trials(tmp_path / "searches" / name / FILE, name)
        assert [t.user_attrs["genotype"] for t in trials] == [e["genotype"] for e in summary["evaluations"]]


@pytest.mark.slow  # trains a few small models
def test_the_python_api_writes_the_mirror(tmp_path):
    import numpy as np

    import evovae

    rows = (np.random.default_rng(0).random((200, 8)) < 0.5).astype(np.float32)
    result = evovae.search(rows, run_dir=tmp_path / "run", budget_epochs=2, epochs=1, population=2, offspring=2,
                           space=SearchSpace(max_layers=1, width_max=100), seed=1)
    trials = _trials(tmp_path / "run" / FILE, "run")
    assert [t.user_attrs["genotype"] for t in trials] == [str(e.genotype) for e in result.evaluations]
    assert all(t.state is TrialState.COMPLETE and len(t.intermediate_values) == 1 for t in trials)
