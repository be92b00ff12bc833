"""One writer per run directory, and storage faults that stop a head with one line and lose nothing (issue 18).

Real processes, real files: heads racing for one run directory, a run directory on a small tmpfs filled while
the search runs (root only: CI and the project's machines run as root), a journal the resuming user may not
write (the resume runs as the user nobody through setpriv).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from distributed_helpers import free_port_pair, wait_until

SEARCH = ["--dataset", "synthetic", "--population", "3", "--offspring", "3", "--seed", "5", "--heartbeat", "0.2",
          "--log-format", "json", "--log-level", "error"]
ROOT = os.geteuid() == 0


def head(run_dir: Path, *extra: str, sleep: str = "0.2", generations: int = 4) -> subprocess.Popen:
    port = free_port_pair()
    args = [sys.executable, "-m", "evo.cli", "search", "--bind", f"tcp://127.0.0.1:{port}", "--local-workers", "1",
            "--worker-arg=--fake", f"--worker-arg=--fake-sleep={sleep}", *SEARCH, *extra]
    if "--resume" not in extra:
        args += ["--run-dir", str(run_dir), "--generations", str(generations)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def holder(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "lock").read_text())
    except (OSError, ValueError):
        return {}


def journal_counts(run_dir: Path) -> tuple[int, int, int]:
    con = sqlite3.connect(f"file:{run_dir / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        asks = con.execute("SELECT COUNT(*) FROM events WHERE kind = 'ask'").fetchone()[0]
        tells = con.execute("SELECT COUNT(*) FROM events WHERE kind = 'tell'").fetchone()[0]
        results = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    finally:
        con.close()
    return asks, tells, results


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("evovae")]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.slow
def test_a_second_head_on_a_run_directory_in_use_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    first = head(run, sleep="0.3")
    wait_until(lambda: holder(run).get("pid") == first.pid and (run / "run.json").is_file(), 30,
               "the first head to lock and create its run directory")
    wait_until(lambda: journal_counts(run)[1] >= 1 and (run / "optuna-journal.log").is_file(), 30,
               "the first head's first result told and mirrored (its files all made)")
    kept = lambda: sorted(p.name for p in run.iterdir()  # noqa: E731 - SQLite's and Optuna's transient files aside
                          if not p.name.startswith("journal.sqlite-") and not p.name.endswith(".log.lock")
                          and p.name != "result.json")
    before = kept()
    second = head(run)
    status, out, err = finish(second, 30)
    line = one_error_line(err)
    assert status == 2 and "is in use by another evovae head" in line and f"PID {first.pid}" in line, err
    assert "ventilator" not in out  # refused before it bound anything
    assert kept() == before and {"journal.sqlite", "lock", "run.json", "logs"} <= set(before)  # the first's files
    assert holder(run)["pid"] == first.pid
    status, _, err = finish(first)
    assert status == 0, err
    done = json.loads((run / "result.json").read_text())
    _asks, tells, results = journal_counts(run)
    assert tells == results == len(done["evaluations"])  # every result told once: no second writer
    # and the run is resumable by the next head: the lock died with its holder
    status, out, err = finish(head(run, "--resume", str(run), "--generations", "5"))
    assert status == 0 and "stopped: evaluations" in out, err  # the default search is asynchronous


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))
def test_two_heads_started_together_on_one_run_directory_exactly_one_runs(tmp_path, attempt):
    run = tmp_path / "run"
    heads = [head(run, sleep="0.2"), head(run, sleep="0.2")]
    outcomes = [finish(h) for h in heads]
    statuses = sorted(status for status, _, _ in outcomes)
    assert statuses == [0, 2], outcomes
    loser = next(err for status, _, err in outcomes if status == 2)
    assert "is in use by another evovae head" in one_error_line(loser)
    _asks, tells, results = journal_counts(run)
    assert tells == results == len(json.loads((run / "result.json").read_text())["evaluations"])


@pytest.mark.slow
def test_two_resumes_started_together_one_runs_the_other_is_refused(tmp_path):
    run = tmp_path / "run"
    status, _, err = finish(head(run, generations=2, sleep="0.05"))
    assert status == 0, err
    heads = [head(run, "--resume", str(run), "--generations", "5"),
             head(run, "--resume", str(run), "--generations", "5")]
    outcomes = [finish(h) for h in heads]
    assert sorted(status for status, _, _ in outcomes) == [0, 2], outcomes
    _asks, tells, results = journal_counts(run)
    assert tells == results == len(json.loads((run / "result.json").read_text())["evaluations"])
    status, out, err = finish(head(run, "--resume", str(run)))  # the journal replays: nothing twice in it
    assert status == 0 and "0 run now" in out, (out, err)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a real file system that fills up."""
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root (CI and the project's machines run as root)")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path) -> Path:
    """Write until the file system is full; returns the filler."""
    filler = mount / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            pass
    return filler


@pytest.mark.slow
def test_a_full_disk_stops_the_head_with_one_line_and_a_resume_after_freeing_space_loses_nothing(tmp_path,
                                                                                              small_disk):
    reference = tmp_path / "reference"
    status, _, err = finish(head(reference, generations=6, sleep="0.05"))
    assert status == 0, err
    run = small_disk / "run"
    first = head(run, generations=6, sleep="0.3")
    wait_until(lambda: (run / "journal.sqlite").is_file() and journal_counts(run)[1] >= 3, 60,
               "the search to journal a few results")
    filler = fill(small_disk)
    status, out, err = finish(first)
    line = one_error_line(err)
    assert status == 1, (out, err)
    assert "cannot write" in line and str(run) in line, line
    assert line.endswith(f"evovae search --resume {run} --local-workers 1"), line  # the workers too: not journaled
    assert "full" in line or "No space" in line, line
    _asks, _tells, journaled = journal_counts(run)
    filler.unlink()
    status, out, err = finish(head(run, "--resume", str(run), sleep="0.05"))
    assert status == 0, (out, err)
    done = json.loads((run / "result.json").read_text())
    ref = json.loads((reference / "result.json").read_text())
    def outcomes(items: list[dict]) -> list[tuple]:  # training seconds aside: the fake workers slept differently
        return [(e["genotype"], e["epochs"], e["state"], e["loss"]) for e in items]

    assert outcomes(done["population"]) == outcomes(ref["population"])
    assert outcomes(done["evaluations"]) == outcomes(ref["evaluations"])
    assert done["replayed_from_journal"] + done["reused_from_journal"] == journaled  # nothing finished again
    assert done["evaluated_now"] == len(ref["evaluations"]) - journaled


@pytest.mark.slow
def test_a_journal_the_resuming_user_may_not_write_is_refused_before_any_socket_is_bound():
    if not ROOT:
        pytest.skip("running the resume as another user needs root")
    base = Path(tempfile.mkdtemp(prefix="evovae-ro-"))
    try:
        base.chmod(0o755)
        run = base / "run"
        status, _, err = finish(head(run, generations=2, sleep="0.0"))
        assert status == 0, err
        for path in (run, *run.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        port = free_port_pair()
        done = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                               sys.executable, "-m", "evo.cli", "search", "--resume", str(run), "--generations", "3",
                               "--bind", f"tcp://127.0.0.1:{port}", "--local-workers", "1", "--worker-arg=--fake",
                               "--log-level", "error"], capture_output=True, text=True, timeout=60, cwd=base)
        line = one_error_line(done.stderr)
        assert done.returncode == 2 and "cannot write the run journal" in line and "readonly" in line, done.stderr
        assert "ventilator" not in done.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_run_directory_left_with_only_a_half_created_journal_is_named(tmp_path, capsys):
    from evo.cli.app import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "journal.sqlite.new").write_bytes(b"half")
    assert main(["search", "--resume", str(run), "--in-process"]) == 2
    err = capsys.readouterr().err
    assert "holds only journal.sqlite.new" in err and f"remove {run}" in err and len(err.splitlines()) == 1


def test_the_lock_is_free_again_when_its_holder_dies(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    code = ("import sys, time; from evo.head.lock import RunLock; RunLock.acquire(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    holder_process = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    assert holder_process.stdout.readline().strip() == "locked"
    from evo.head.lock import RunDirLocked, RunLock

    with pytest.raises(RunDirLocked, match=f"PID {holder_process.pid}"):
        RunLock.acquire(run)
    holder_process.kill()  # kill -9: no clean-up runs
    holder_process.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            lock = RunLock.acquire(run)
            break
        except RunDirLocked:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert holder(run)["pid"] == os.getpid()
    lock.release()


# ---------------------------------------------------------------- experiments: their own run directory

def experiment(kind: str, run: Path, *extra: str, sleep: str = "0.5") -> subprocess.Popen:
    """``evovae experiment compare|paper`` on fake local workers (tiny preset, synthetic data): new in ``run``,
    or ``--resume run`` when ``extra`` holds --resume."""
    port = free_port_pair()
    args = [sys.executable, "-m", "evo.cli", "experiment", kind, "--bind", f"tcp://127.0.0.1:{port}",
            "--local-workers", "1", "--worker-arg=--fake", f"--worker-arg=--fake-sleep={sleep}",
            "--log-format", "json", "--log-level", "error", *extra]
    if "--resume" not in extra:
        args += ["--preset", "tiny", "--dataset", "synthetic"]
        args += (["--run-dir", str(run), "--arms", "random", "--seeds", "1", "--fidelity-count", "0"]
                 if kind == "compare" else ["--out", str(run)])
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def search_tells(run: Path) -> int:
    """Results told so far in the searches of an experiment's run directory."""
    return sum(journal_counts(journal.parent)[1] for journal in run.glob("searches/*/journal.sqlite"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["compare", "paper"])
def test_a_second_experiment_on_a_run_directory_in_use_is_refused_naming_the_holder(tmp_path, kind):
    run = tmp_path / "run"
    first = experiment(kind, run, sleep="1.0")  # its search lasts well beyond the second's start-up
    wait_until(lambda: holder(run).get("pid") == first.pid and search_tells(run) >= 1, 60,
               f"the first {kind} to lock its run directory and journal a result")
    logs_before = sorted(p.name for p in (run / "logs").iterdir())
    # a resume; for a paper also a new one with --force, which would remove what the first wrote
    seconds = [("--resume", str(run))] + ([("--force",)] if kind == "paper" else [])
    for again in seconds:
        status, out, err = finish(experiment(kind, run, *again), 60)
        line = one_error_line(err)
        assert status == 2 and "is in use by another evovae head" in line and f"PID {first.pid}" in line, err
        assert out == ""  # refused before it said its run directory, bound a port or started a worker
    assert sorted(p.name for p in (run / "logs").iterdir()) == logs_before  # no second worker's log
    assert search_tells(run) >= 1  # nothing of the first's removed
    assert holder(run)["pid"] == first.pid
    first.send_signal(signal.SIGTERM)
    status, out, err = finish(first)
    assert status == 128 + signal.SIGTERM and f"--resume {run}" in err, (out, err)  # it ran on undisturbed
    from evo.head.lock import RunLock

    RunLock.acquire(run).release()  # free again once its holder ended


@pytest.mark.slow
def test_a_full_disk_stops_a_comparison_with_one_line_and_its_resume_finishes_it(small_disk):
    run = small_disk / "run"
    first = experiment("compare", run, sleep="0.3")
    wait_until(lambda: search_tells(run) >= 3, 60, "the comparison's search to journal a few results")
    filler = fill(small_disk)
    status, out, err = finish(first)
    line = one_error_line(err)
    assert status == 1, (out, err)
    assert "cannot write" in line and str(run) in line and f"evovae experiment compare --resume {run}" in line, line
    filler.unlink()
    status, out, err = finish(experiment("compare", run, "--resume", str(run), sleep="0.05"), 180)
    assert status == 0 and f"report {run / 'report.md'}" in out, (out, err)
    assert json.loads((run / "results.json").read_text())["summary"]


def test_a_checkpoint_the_fake_worker_cannot_write_is_no_failure_of_the_genotype(tmp_path):
    """As the real store (gpuworker/checkpoints.py): a full or read-only disk under RUN_DIR/checkpoints was a
    task.error with a traceback in the fake worker, and the genotype's result a failure."""
    import structlog

    from evo.genotype import parse_genotype
    from evo.spec import TrainSpec
    from gpuworker.evaluators import fake_evaluator

    blocked = tmp_path / "checkpoints"
    blocked.write_text("a file where the store's directory should be")  # every write under it fails (ENOTDIR)
    with structlog.testing.capture_logs() as logs:
        result = fake_evaluator(checkpoints=str(blocked))(parse_genotype("850|20|1000"), TrainSpec(epochs=2),
                                                          lambda _: None)
    assert result.ok and result.measurement.loss is not None
    (warning,) = [e for e in logs if e["event"] == "checkpoint.not_saved"]
    assert str(blocked) in warning["path"] and warning["error"]
