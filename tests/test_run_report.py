"""`evovae report RUN_DIR`: report.md and its PNGs for a finished search, a killed one, the same resumed, a run
of format 1, and a run without logs; every number checked against result.json and the journal; the run directory
left as it was (the journal byte for byte, no -wal/-shm files made); bad input in one line, exit status 2.

The fast tests search in this process with the fake worker (gpuworker.evaluators.fake_evaluator, here also
reporting a parameter count); the slow ones run `evovae search` itself: real
training in-process, and a head with fake local workers killed with SIGKILL and resumed."""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from distributed_helpers import Process, free_port_pair, wait_until
from evo.cli.app import main
from evo.head.evaluators import InProcessEvaluator
from evo.head.journal import RunJournal
from evo.head.search_run import SearchRun
from evo.search_config import SearchConfig
from evo.spec import TrainSpec
from evo.strategies import StrategyOptions
from gpuworker.evaluators import fake_evaluator

SPEC = TrainSpec(dataset="synthetic", epochs=2)
RANDOM = StrategyOptions(strategy="random", population=6, offspring=6, generations=2, epochs=2, seed=4)
ASHA = StrategyOptions(strategy="evolution", mode="asha", fidelities=(1, 3), population=4, offspring=4,
                       budget_epochs=60, epochs=3, seed=2)
FIGURES = ("anytime.png", "curves.png", "params.png", "importance.png", "workers.png")
_FAKE = fake_evaluator()


def _params(genotype, features: int = 16 * 16) -> int:
    """The weights and biases of the genotype's dense layers on 16 x 16 images (encoder to the latent's mean and
    log-variance, decoder back): a count for the fake worker to report, as the trainer reports its model's."""
    sizes = [features, *genotype.encoder, 2 * genotype.latent]
    decoder = [genotype.latent, *genotype.decoder, features]
    return sum(a * b + b for path in (sizes, decoder) for a, b in itertools.pairwise(path))


class Trainer:
    """The fake worker, reporting a parameter count; ``die_at``: the call that raises (a head killed while it
    trained)."""

    def __init__(self, die_at: int | None = None) -> None:
        self.calls, self.die_at = 0, die_at

    def __call__(self, genotype, spec):
        self.calls += 1
        if self.calls == self.die_at:
            raise RuntimeError("the head died")
        result = _FAKE(genotype, spec, lambda _: None)
        return replace(result, measurement=replace(result.measurement, params=_params(genotype)))


def _search(run_dir: Path, options: StrategyOptions = RANDOM, *, die_at: int | None = None,
            spec: TrainSpec = SPEC) -> None:
    """A search in ``run_dir`` (made, or resumed where it has a journal) until done, or until the trainer dies."""
    if (run_dir / RunJournal.FILE).exists():
        search = SearchRun.open(run_dir)
    else:
        spec = spec.replace(epochs=options.epochs, seed=options.seed)  # one seed, as `evovae search --seed` gives
        search = SearchRun.create(run_dir, SearchConfig(options, spec))
    search.runner.poll_s = 0.0  # the trainer answers at once: no waiting between results
    try:
        search.replay()
        try:
            search.run(InProcessEvaluator(Trainer(die_at)))
        except RuntimeError:
            return
        summary = search.summary()
        summary["space"] = asdict(search.config.space)
        search.finish(summary)
    finally:
        search.close()


def _report(run_dir: Path, *args: str) -> str:
    assert main(["report", str(run_dir), *args]) == 0
    out = Path(args[args.index("--out") + 1]) if "--out" in args else run_dir / "report"
    return (out / "report.md").read_text()


def _state(run_dir: Path) -> dict[str, str]:
    """What the run directory holds, but its report: each file's SHA-256."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and "report" not in p.relative_to(run_dir).parts}


def _row(report: str, name: str) -> str:
    found = re.search(rf"^\| {re.escape(name)} \| (.*) \|$", report, re.M)
    assert found, f"no row {name!r} in the header"
    return found.group(1)


def _top(report: str) -> list[tuple[str, float]]:
    """The top table's (genotype, loss) rows."""
    return [(g.replace("\\|", "|"), float(loss)) for g, loss in
            re.findall(r"^\| \d+ \| `([^`]+)` \| ([\d.]+) \|", report, re.M)]


def _best_of(result: dict) -> list[tuple[str, float]]:
    final = [e for e in result["evaluations"] if e["state"] == "ok" and e["epochs"] == result["final_epochs"]]
    return [(e["genotype"], round(e["loss"], 3)) for e in sorted(final, key=lambda e: e["loss"])]


def _sections(report: str) -> list[str]:
    return re.findall(r"^## (.+)$", report, re.M)


def _check_pngs(folder: Path, names) -> None:
    for name in names:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


# -- a finished search ---------------------------------------------------------------------------------------

def test_the_report_of_a_finished_search_agrees_with_its_result_and_leaves_the_run_as_it_was(tmp_path):
    run = tmp_path / "run"
    _search(run)
    before = _state(run)
    report = _report(run)
    assert _state(run) == before and not list(run.glob("journal.sqlite-*"))   # nothing written, no -wal/-shm made
    result = json.loads((run / "result.json").read_text())
    assert _sections(report) == ["Best so far", "Top 10 at the final fidelity", "Learning curves of the 8 best",
                                 "Loss against parameters", "Parameter importance", "Workers"]
    _check_pngs(run / "report", ("anytime.png", "curves.png", "params.png", "importance.png"))
    assert not (run / "report" / "workers.png").exists()
    assert "No logs kept with this run" in report
    n = len(result["evaluations"])
    assert _row(report, "evaluations").startswith(f"{n} ({n} ok, 0 failed, 0 lost; 0 from the cache); {n} ok at "
                                                  f"the final fidelity of 2 epochs")
    assert _row(report, "epochs").startswith(f"{result['epochs_total']} charged")
    assert _row(report, "status") == f"finished: {result['stop_reason']}"
    best = result["best"]
    assert f"`{best['genotype'].replace('|', chr(92) + '|')}`: validation loss {best['loss']:.3f} at 2 epochs, " \
           f"{_params(parse(best['genotype'])):,} parameters" == _row(report, "best")
    assert _top(report) == _best_of(result)[:10]
    assert "strategy random, mode generational, population 6, offspring 6, generations 2, epochs 2, seed 4" in \
        _row(report, "strategy")
    # the Pareto front: by parameters, each with a lower loss than every smaller model's
    front = [(int(p.replace(",", "")), float(loss)) for p, loss in
             re.findall(r"^\| ([\d,]+) \| ([\d.]+) \| `", report, re.M)]
    points = {(_params(parse(e["genotype"])), round(e["loss"], 3)) for e in result["evaluations"]}
    expected, lowest = [], float("inf")
    for params, loss in sorted(points):
        if loss < lowest:
            expected.append((params, loss))
            lowest = loss
    assert front == expected
    # the importance: 12 trials at the final fidelity, made from the journal (no mirror in this run)
    assert f"over the {n} complete trials at 2 epochs of trials made from the journal's evaluations" in report


def parse(text: str):
    from evo.genotype import parse_genotype

    return parse_genotype(text)


def test_a_report_elsewhere_and_again_replaces_its_figures(tmp_path):
    run = tmp_path / "run"
    _search(run, replace(RANDOM, generations=1))
    out = tmp_path / "elsewhere"
    report = _report(run, "--out", str(out), "--top", "3")
    assert not (run / "report").exists() and (out / "report.md").is_file()
    assert "Learning curves of the 3 best" in report and "Validation loss after each epoch of the 3 best" in report
    assert "Too few trials for the importance: 6 complete at the final fidelity of 2 epochs, it needs at least 10" \
        in report
    assert not (out / "importance.png").exists()
    (out / "importance.png").write_bytes(b"an older report's")  # a figure this report does not draw is removed
    _report(run, "--out", str(out))
    assert not (out / "importance.png").exists()


# -- killed, then resumed ------------------------------------------------------------------------------------

def test_a_killed_search_is_reported_from_its_journal_and_the_resumed_one_from_its_result(tmp_path):
    run = tmp_path / "run"
    _search(run, ASHA, die_at=9)  # the head dies while training the 9th
    assert not (run / "result.json").exists()
    before = _state(run)
    report = _report(run)
    assert _state(run) == before
    told = sum(len(ids) for kind, ids, _, _ in _events(run) if kind == "tell")
    assert told == 8
    assert _row(report, "evaluations").startswith("8 (8 ok")
    assert _row(report, "status").startswith("not finished") and "evovae search --resume" in _row(report, "status")
    assert "replayed through a fresh strategy in memory" in report
    assert "resumed" not in _row(report, "run directory")

    _search(run, ASHA)  # resumed until done
    result = json.loads((run / "result.json").read_text())
    assert result["replayed_from_journal"] == 8
    report = _report(run)
    n = len(result["evaluations"])
    final = sum(e["epochs"] == 3 and e["state"] == "ok" for e in result["evaluations"])
    assert _row(report, "evaluations").startswith(f"{n} ({n} ok, 0 failed, 0 lost; 0 from the cache); {final} ok "
                                                  "at the final fidelity of 3 epochs")
    assert _row(report, "status") == f"finished: {result['stop_reason']}"
    assert "; resumed, last at " in _row(report, "run directory") and "its `result.json`" in report
    assert f"validation loss {result['best']['loss']:.3f} at 3 epochs" in _row(report, "best")
    assert _top(report) == _best_of(result)[:10]
    assert _row(report, "epochs").startswith(f"{result['epochs_total']} charged by the strategy")


def test_a_stale_result_is_not_believed(tmp_path):
    """result.json written, then the search resumed for more generations and killed: the journal holds more."""
    run = tmp_path / "run"
    _search(run, replace(RANDOM, generations=1))
    with SearchRun.open(run, generations=2) as search:
        search.runner.poll_s = 0.0
        search.replay()
        with pytest.raises(RuntimeError):
            search.run(InProcessEvaluator(Trainer(die_at=3)))
    report = _report(run)
    assert "result.json holds 6 evaluations, the journal 8" in report
    assert _row(report, "evaluations").startswith("8 (8 ok")
    assert _row(report, "status").startswith("not finished")


def test_a_journal_that_does_not_replay_is_reported_from_the_journal_alone(tmp_path):
    run = tmp_path / "run"
    _search(run, replace(RANDOM, generations=1))
    result = json.loads((run / "result.json").read_text())
    (run / "result.json").unlink()
    con = sqlite3.connect(run / RunJournal.FILE)  # another seed: the code of another day, as far as a replay sees
    config = json.loads(dict(con.execute("SELECT key, value FROM meta"))["config"])
    config["options"]["seed"] = 5
    with con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(config),))
    con.close()
    report = _report(run)
    assert "the journal does not replay with this code (replaying" in report and "(read-only) alone" in report
    assert _row(report, "status").startswith("unknown: the journal does not replay")
    assert _row(report, "evaluations").startswith("6 (6 ok") and _top(report) == _best_of(result)
    assert _row(report, "epochs").startswith("12 charged")


def _events(run: Path):
    journal = RunJournal.open(run, readonly=True)
    try:
        return list(journal.events())
    finally:
        journal.close()


# -- an old run ----------------------------------------------------------------------------------------------

_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL CHECK (kind IN ('ask', 'tell')),
    at REAL NOT NULL, task_ids TEXT NOT NULL, genotypes TEXT NOT NULL, state TEXT);
CREATE TABLE results (task_id TEXT PRIMARY KEY, genotype TEXT NOT NULL, loss REAL, error TEXT NOT NULL,
    metrics TEXT NOT NULL, source TEXT NOT NULL, at REAL NOT NULL);
"""


def _as_format_1(new: Path, old: Path) -> None:
    """``new``'s run as evovae wrote it before fidelities: journal format 1 (bare genotypes, results without
    state, epochs, seconds or worker key, no asked_epochs in the snapshots), the flat configuration of the
    `evovae search` of then, and a result.json without curves or anytime curve."""
    old.mkdir()
    src = sqlite3.connect(new / RunJournal.FILE)
    config = json.loads(dict(src.execute("SELECT key, value FROM meta"))["config"])
    flat = {**{k: v for k, v in config["options"].items() if v not in ((), [], None)}, **config["spec"]}
    dst = sqlite3.connect(old / RunJournal.FILE, isolation_level=None)
    dst.executescript(_V1_SCHEMA)
    dst.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("format", "evovae-run"), ("version", "1"), ("config", json.dumps(flat)), ("created", "2025-06-01T00:00:00Z")])
    for kind, at, ids, genotypes, state in src.execute("SELECT kind, at, task_ids, genotypes, state FROM events"):
        if kind == "ask":
            genotypes = json.dumps([text.rpartition("@")[0] for text in json.loads(genotypes)])
        else:
            state = json.dumps({k: v for k, v in json.loads(state).items() if k != "asked_epochs"})
        dst.execute("INSERT INTO events (kind, at, task_ids, genotypes, state) VALUES (?, ?, ?, ?, ?)",
                    (kind, at, ids, genotypes, state))
    dst.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
                    src.execute("SELECT task_id, genotype, loss, error, metrics, source, at FROM results").fetchall())
    dst.close()
    src.close()
    result = json.loads((new / "result.json").read_text())
    del result["anytime"]
    for e in result["evaluations"]:
        del e["curve"]
    (old / "result.json").write_text(json.dumps(result))


def test_a_run_of_format_1_is_reported_from_a_migrated_copy_and_left_unchanged(tmp_path):
    _search(tmp_path / "new")
    old = tmp_path / "old"
    _as_format_1(tmp_path / "new", old)
    before = _state(old)
    report = _report(old)
    assert _state(old) == before   # still format 1: migrated only in a copy
    assert "the journal is of format 1 (before fidelities): read from a migrated copy" in report
    assert "result.json is of an older form" in report
    result = json.loads((tmp_path / "new" / "result.json").read_text())
    assert _top(report) == _best_of(result)[:10]
    assert _row(report, "status") == f"finished: {result['stop_reason']} (as the replayed journal says)"
    _check_pngs(old / "report", ("anytime.png", "curves.png", "params.png", "importance.png"))


# -- bad input -----------------------------------------------------------------------------------------------

def test_what_is_not_a_run_with_something_to_report_is_one_line_and_status_2(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "journal.sqlite").write_text("hello")
    RunJournal.create(tmp_path / "empty", SearchConfig(RANDOM, SPEC).to_dict()).close()
    (tmp_path / "file").write_text("x")
    _search(tmp_path / "experiment" / "searches" / "random-seed4", replace(RANDOM, generations=1))
    cases = {"experiment": "is an experiment's directory: give one of its searches, "
                           f"{tmp_path / 'experiment' / 'searches' / 'random-seed4'} (its searches: random-seed4)",
             "missing": "no such directory", "file": "is not a run directory (not a directory)",
             "plain": "is not an evovae run directory: no journal.sqlite in it",
             "foreign": "is not an evovae run journal (file is not a database)",
             "empty": "the journal holds no evaluation yet: nothing to report"}
    for name, says in cases.items():
        capsys.readouterr()
        assert main(["report", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("evovae report: error: ") and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "empty" / "report").exists()
    with pytest.raises(SystemExit) as stop:
        main(["report", str(tmp_path / "plain"), "--top", "0"])
    assert stop.value.code == 2 and "--top: 0 is not between 1 and 20" in capsys.readouterr().err


# -- the real command ----------------------------------------------------------------------------------------

def _evovae(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evo.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                                                "PYTHONPATH": str(Path(__file__).parent.parent), "HOME": str(cwd)})


@pytest.mark.slow
def test_the_report_of_a_real_search_with_training(tmp_path):
    run = tmp_path / "run"
    done = _evovae("search", "--in-process", "--dataset", "synthetic", "--train-subset", "300", "--val-size", "100",
                   "--strategy", "random", "--population", "6", "--offspring", "6", "--generations", "2",
                   "--epochs", "1", "--max-layers", "1", "--run-dir", str(run), "--log-level", "warning", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    made = _evovae("report", str(run), cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    assert made.stdout.strip().startswith(f"wrote {run / 'report' / 'report.md'} with anytime.png, curves.png")
    report = (run / "report" / "report.md").read_text()
    result = json.loads((run / "result.json").read_text())
    assert _top(report) == _best_of(result)[:10] and _row(report, "evaluations").startswith("12 (12 ok")
    journal = RunJournal.open(run, readonly=True)
    params = {str(e.genotype): e.measurement.params for e in journal.results().values()}
    journal.close()
    assert all(params.values())  # the trainer counted them
    front = re.findall(r"^\| ([\d,]+) \| ([\d.]+) \| `([^`]+)` \|$", report, re.M)
    assert front and all(int(p.replace(",", "")) == params[g.replace("\\|", "|")] for p, _, g in front)
    _check_pngs(run / "report", ("anytime.png", "curves.png", "params.png", "importance.png"))
    assert "complete trials at 1 epochs of" in report   # 12 trials: enough for the importance
    assert "Workers" in _sections(report) and "workers.png" not in report   # trained in-process: no workers


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_head_killed_with_sigkill_then_resumed_has_a_report_each_time_with_the_workers_timeline(tmp_path):
    run = tmp_path / "run"
    search = ["--population", "4", "--offspring", "4", "--generations", "6", "--seed", "3", "--dataset", "synthetic",
              "--epochs", "2", "--local-workers", "2", "--worker-arg=--fake", "--worker-arg=--fake-sleep=0.1",
              "--heartbeat", "0.2", "--log-format", "json"]
    head = Process("head", [sys.executable, "-m", "evo.cli", "search", "--bind", f"tcp://127.0.0.1:{free_port_pair()}",
                            *search, "--run-dir", str(run)], tmp_path)
    try:
        wait_until(lambda: len(head.log.events("task.completed", role="search")) >= 10, 60,
                   "10 results in the head's log", fail=head.describe)
        head.signal(signal.SIGKILL)
        assert head.wait(10) == -signal.SIGKILL
    finally:
        head.kill_group()
    _keep_logs(run, head.stderr_path)
    killed = _evovae("report", str(run), cwd=tmp_path)
    assert killed.returncode == 0, killed.stderr[-3000:]
    report = (run / "report" / "report.md").read_text()
    assert _row(report, "status").startswith("not finished")
    assert "![workers' timeline](workers.png)" in report

    resumed = _evovae("search", "--resume", str(run), "--bind", f"tcp://127.0.0.1:{free_port_pair()}",
                      "--local-workers", "2", "--worker-arg=--fake", "--heartbeat", "0.2", "--log-format", "json",
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _keep_logs(run, None, resumed.stderr)
    made = _evovae("report", str(run), cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    report = (run / "report" / "report.md").read_text()
    result = json.loads((run / "result.json").read_text())
    n = len(result["evaluations"])
    assert _row(report, "evaluations").startswith(f"{n} ({n} ok") and "; resumed, last at " in report
    assert _top(report) == _best_of(result)[:10]
    _check_pngs(run / "report", ("anytime.png", "curves.png", "workers.png"))
    total = re.search(r"^\| all \| (\d+) \| (\d+) \|", report, re.M)
    assert total and int(total.group(2)) >= n - result["replayed_from_journal"]   # every result of the resume


def _keep_logs(run: Path, stderr: Path | None, text: str | None = None) -> None:
    """Where the head kept no logs in the run directory, its stderr (JSON lines) kept there by hand."""
    logs = run / "logs"
    kept = sorted(logs.glob("head*.log*")) if logs.is_dir() else []
    if kept and "copied" not in kept[0].name:
        return
    logs.mkdir(exist_ok=True)
    index = len(list(logs.glob("copied-*.log")))
    if stderr is not None:
        shutil.copyfile(stderr, logs / f"copied-{index}.log")
    else:
        (logs / f"copied-{index}.log").write_text(text or "")
