"""The life of one search (evo/head/search_run.py): create, replay, run, finish with the stop reason, resume,
a refused start that leaves nothing behind, one process per run directory, and refusals that name their option.
Real files, real SQLite, the in-process evaluator with the tests' deterministic trainer (no training)."""
from __future__ import annotations

import json

import pytest

from evo.head.evaluators import InProcessEvaluator
from evo.head.journal import JournalError
from evo.head.search_run import RunDirLocked, SearchRun
from evo.search_config import SearchConfig
from evo.spec import TrainSpec
from evo.strategies import StrategyOptions
from evo_helpers import SMALL, train

CONFIG = SearchConfig(StrategyOptions(population=3, offspring=2, generations=2, epochs=1, seed=5),
                      TrainSpec(dataset="synthetic", epochs=1), SMALL)


def _search(run: SearchRun) -> dict:
    run.replay()
    run.run(InProcessEvaluator(train))
    return run.finish()


def test_a_search_is_created_run_finished_and_resumed_for_more(tmp_path):
    with SearchRun.create(tmp_path / "runs" / "r", CONFIG) as run:
        first = _search(run)
    done = json.loads((tmp_path / "runs" / "r" / "result.json").read_text())
    assert done == first and done["stop_reason"] == "generations"
    assert done["evaluated_now"] == 3 + 2  # generation 0 (the population), then 1 (the offspring)
    with SearchRun.open(tmp_path / "runs" / "r", generations=3) as run:
        again = _search(run)
        assert run.runner.replayed == 5
    assert again["stop_reason"] == "generations" and again["evaluated_now"] == 2  # one more generation only


def test_a_refused_start_leaves_nothing_and_a_used_directory_is_left_as_it_was(tmp_path):
    run = SearchRun.create(tmp_path / "new" / "r", CONFIG)
    run.close(refused=True)
    assert list(tmp_path.iterdir()) == []
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("someone's")
    with pytest.raises(JournalError, match="not empty") as refused:
        SearchRun.create(used, CONFIG)
    assert refused.value.option is None
    assert sorted(p.name for p in used.iterdir()) == ["notes.txt"]


def test_one_process_at_a_time_in_a_run_directory(tmp_path):
    with SearchRun.create(tmp_path / "r", CONFIG), pytest.raises(RunDirLocked):
        SearchRun.open(tmp_path / "r")
    with SearchRun.open(tmp_path / "r"):  # released on close
        pass


def test_refusals_of_an_option_name_it(tmp_path):
    """What the command line says as --generations or --cache comes with the option's name, not in the text."""
    with SearchRun.create(tmp_path / "r", CONFIG) as run:
        _search(run)
    with pytest.raises(JournalError, match="a resume may give more, not fewer") as fewer:
        SearchRun.open(tmp_path / "r", generations=1)
    assert fewer.value.option == "generations"
    with SearchRun.open(tmp_path / "r") as run:  # left as it was: still a search of 2 generations
        assert run.config == CONFIG
    not_sqlite = tmp_path / "cache.sqlite"
    not_sqlite.write_text("not a database")
    with pytest.raises(JournalError, match="cannot open or create the cache") as cache:
        SearchRun.create(tmp_path / "r2", CONFIG, cache=not_sqlite)
    assert cache.value.option == "cache" and not (tmp_path / "r2").exists()


def test_named_opens_the_same_search_and_refuses_another(tmp_path):
    with SearchRun.named(tmp_path / "r", CONFIG) as run:
        _search(run)
    with SearchRun.named(tmp_path / "r", CONFIG) as run:
        assert run.replay() > 0
    other = SearchConfig(StrategyOptions(population=3, offspring=2, generations=2, epochs=1, seed=6), CONFIG.spec,
                         SMALL)
    with pytest.raises(JournalError, match="other settings"):
        SearchRun.named(tmp_path / "r", other)
