"""Logs kept with the run: the head's lines in RUN_DIR/logs/head.log and each local worker's in
worker-localN.log (JSON, rotated, whatever the terminal shows: evo.cmdline.log_setup), read back by
``evovae logs summarize|trace RUN_DIR`` - for a search made without any redirection, and for an experiment."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from evo.cmdline import log_setup
from evo.cmdline.log_setup import WorkerLines, configure, keep_logs, quiet_terminal
from evo.logs.command import main as logs_main
from evo.logs.reading import LogError, log_files

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_head_keeps_every_line_in_its_file_whatever_the_terminal_shows(tmp_path):
    terminal = io.StringIO()
    configure("console", "warning", stream=terminal, role="search")
    stop = keep_logs(tmp_path / "logs")
    log = structlog.get_logger("t")
    log.info("task.dispatched", task_id="t1")
    log.debug("too.fine")
    log.warning("task.gave_up", task_id="t1")
    stop()
    log.warning("after.stop")
    kept = _json_lines(tmp_path / "logs" / "head.log")
    assert [(r["event"], r["level"], r["role"]) for r in kept] == [("task.dispatched", "info", "search"),
                                                                    ("task.gave_up", "warning", "search")]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$", r["timestamp"]) for r in kept)
    shown = terminal.getvalue().splitlines()
    assert len(shown) == 2 and "task.gave_up" in shown[0] and "after.stop" in shown[1]  # console format
    assert not shown[0].startswith("{")


def test_a_live_display_quiets_the_terminal_to_warnings_and_errors(tmp_path):
    terminal = io.StringIO()
    configure("json", "info", stream=terminal, role="search")
    stop = keep_logs(tmp_path)
    log = structlog.get_logger("t")
    with quiet_terminal():
        log.info("quiet.info")
        log.error("loud.error")
    log.info("again.info")
    stop()
    assert [json.loads(line)["event"] for line in terminal.getvalue().splitlines()] == ["loud.error", "again.info"]
    assert [r["event"] for r in _json_lines(tmp_path / "head.log")] == ["quiet.info", "loud.error", "again.info"]


def test_a_log_file_is_rotated_and_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(log_setup, "LOG_FILE_BYTES", 4000)
    monkeypatch.setattr(log_setup, "LOG_FILE_BACKUPS", 2)
    configure("json", "info", stream=io.StringIO(), role="search")
    stop = keep_logs(tmp_path / "logs")
    log = structlog.get_logger("t")
    for n in range(300):
        log.info("task.dispatched", task_id=f"task{n:04d}", genotype="50|10|50")
    stop()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["head.log", "head.log.1", "head.log.2"]
    assert all((tmp_path / "logs" / name).stat().st_size <= 4000 for name in files)
    kept = [r["task_id"] for name in ("head.log.2", "head.log.1", "head.log")
            for r in _json_lines(tmp_path / "logs" / name)]
    assert kept == [f"task{n:04d}" for n in range(300 - len(kept), 300)]  # the newest lines, in order
    # the log tools read a run directory's logs, the rotated files (oldest first) included
    assert log_files(tmp_path) == [str(tmp_path / "logs" / name) for name in ("head.log.2", "head.log.1", "head.log")]
    out = io.StringIO()
    assert logs_main(["summarize", "--json", str(tmp_path)], stdout=out) == 0
    assert json.loads(out.getvalue())["records"] == len(kept)


def test_a_log_file_that_cannot_be_written_is_said_once_and_the_run_goes_on(tmp_path):
    terminal = io.StringIO()
    configure("json", "info", stream=terminal, role="search")
    (tmp_path / "logs").write_text("a file where the folder would go")
    stop = keep_logs(tmp_path / "logs")
    log = structlog.get_logger("t")
    for _ in range(3):
        log.info("task.dispatched")
    stop()
    events = [json.loads(line)["event"] for line in terminal.getvalue().splitlines()]
    assert events == ["log_file.unwritable", "task.dispatched", "task.dispatched", "task.dispatched"]


WORKER_LINE = json.dumps({"worker_id": "local0-1-0", "task_id": "abc", "event": "task.received", "role": "worker",
                          "level": "info", "timestamp": "2026-01-02T03:04:05.000006Z"})


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_local_workers_lines_go_to_their_file_and_to_the_terminal_in_the_heads_format(tmp_path, fmt):
    terminal = io.StringIO()
    configure(fmt, "info", stream=terminal, role="search")
    lines = WorkerLines(tmp_path)
    lines(0, WORKER_LINE + "\n")
    lines(1, WORKER_LINE.replace('"info"', '"debug"'))  # below the terminal's level: the file only
    lines(1, "evovae worker: error: the data set is missing\n")  # no JSON record: shown as it is
    lines(0, "   \n")
    lines.close()
    assert (tmp_path / "worker-local0.log").read_text() == WORKER_LINE + "\n"  # as the worker wrote it
    kept = _json_lines(tmp_path / "worker-local1.log")
    assert kept[0]["level"] == "debug"
    assert (kept[1]["event"], kept[1]["text"], kept[1]["slot"]) == ("worker.output",
                                                                    "evovae worker: error: the data set is missing", 1)
    shown = terminal.getvalue().splitlines()
    assert len(shown) == 2 and shown[1] == "evovae worker: error: the data set is missing"
    if fmt == "json":
        assert shown[0] == WORKER_LINE
    else:
        assert not shown[0].startswith("{") and "task.received" in shown[0] and "worker_id=local0-1-0" in shown[0]
        assert shown[0].startswith("2026-01-02T03:04:05.000006Z [info")


def test_log_files_of_a_run_an_experiment_and_a_search_inside_it(tmp_path):
    logs = tmp_path / "exp" / "logs"
    logs.mkdir(parents=True)
    for name in ("head.log", "head.log.1", "worker-local0.log", "worker-local1.log", "worker-local1.log.3",
                 "notes.txt"):
        (logs / name).write_text("")
    (tmp_path / "exp" / "searches" / "tpe-seed0").mkdir(parents=True)
    expected = [str(logs / n) for n in ("head.log.1", "head.log", "worker-local0.log", "worker-local1.log.3",
                                        "worker-local1.log")]
    assert log_files(tmp_path / "exp") == log_files(logs) == expected
    assert log_files(tmp_path / "exp" / "searches" / "tpe-seed0") == expected  # the experiment's logs
    (tmp_path / "old").mkdir()
    with pytest.raises(LogError, match="holds no log files"):
        log_files(tmp_path / "old")


# ---------------------------------------------------------------------------------------------- for real

def _search(run: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "evo.cli", "search", "--dataset", "synthetic", "--local-workers", "2",
                           "--worker-arg=--fake", "--worker-arg=--fake-sleep=0.1", "--population", "4", "--offspring",
                           "4", "--generations", "3", "--strategy", "evolution", "--bind", "tcp://127.0.0.1:*",
                           "--run-dir", str(run), *extra], cwd=run.parent, capture_output=True, text=True, timeout=120)


def _logs(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = logs_main(list(args), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_a_search_keeps_its_logs_and_the_log_tools_read_its_run_directory(tmp_path):
    run = tmp_path / "run"
    done = _search(run, "--log-format", "console")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["head.log", "worker-local0.log", "worker-local1.log"]
    for path in (run / "logs").iterdir():  # JSON lines, whatever the terminal's format
        assert all(isinstance(r, dict) and r["event"] for r in _json_lines(path)), path
    # the terminal had the console format, the local workers' lines included (they were JSON there)
    assert done.stderr.strip() and not any(line.startswith("{") for line in done.stderr.splitlines())
    assert "role=worker" in done.stderr
    result = json.loads((run / "result.json").read_text())
    status, out, _ = _logs("summarize", "--json", str(run))
    summary = json.loads(out)
    assert status == 0 and summary["evaluations"] == len(result["evaluations"]) == 12
    assert summary["evaluations_source"] == "head"
    assert sorted(w["worker_id"][:6] for w in summary["workers"]) == ["local0", "local1"]
    assert sum(w["evaluations"] for w in summary["workers"]) == 12
    genotype = result["best"]["genotype"]
    status, out, _ = _logs("trace", genotype, str(run))
    assert status == 0
    assert "task.dispatched" in out and "task.received" in out and "result.sent" in out and "task.completed" in out
    assert out.index("task.dispatched") < out.index("task.received") < out.index("result.sent"), out
    assert re.search(r"worker local[01]-\d+-0 +task\.received", out), out  # the worker's file, by its id
    # a resume appends to the same files
    before = len((run / "logs" / "head.log").read_text().splitlines())
    done = _search(run, "--resume", str(run), "--generations", "4")
    assert done.returncode == 0, done.stderr
    assert len((run / "logs" / "head.log").read_text().splitlines()) > before
    status, out, _ = _logs("summarize", "--json", str(run))
    assert json.loads(out)["evaluations"] == len(json.loads((run / "result.json").read_text())["evaluations"]) == 16


@pytest.mark.slow
def test_an_experiment_keeps_its_logs_and_the_log_tools_read_its_run_directory(tmp_path):
    run = tmp_path / "cmp"
    done = subprocess.run([PYTHON, "-m", "evo.cli", "experiment", "compare", "--preset", "tiny", "--dataset",
                           "synthetic", "--seeds", "1", "--arms", "random,tpe", "--fidelity-count", "3",
                           "--local-workers", "2", "--worker-arg=--fake", "--run-dir", str(run)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "fidelity study: progress 3/3 tasks" in out and "retrain: progress 2/2 tasks" in out, out
    assert re.search(r"^\[random-seed0\] gen +0 .* progress \d+/16 epochs  eta ", out, re.M), out
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["head.log", "worker-local0.log", "worker-local1.log"]
    status, text, _ = _logs("summarize", "--json", str(run))
    summary = json.loads(text)
    results = json.loads((run / "results.json").read_text())
    searched = sum(len(s["evaluations"]) for s in results["searches"])
    assert status == 0 and summary["evaluations"] >= searched + 3  # the searches', the study's and retraining's
    assert len(summary["workers"]) == 2
    status, text, _ = _logs("summarize", "--json", str(run / "searches" / "random-seed0"))
    assert status == 0 and json.loads(text)["files"] == log_files(run)
