"""A search from Python keeps its logs with its run, as ``evovae search`` does: the head's lines in
RUN_DIR/logs/head.log and each local worker's in worker-localN.log (JSON, rotated, a resume appends), so
``evovae logs summarize|trace RUN_DIR`` and ``evovae report RUN_DIR`` read any run - while the caller's terminal
shows no more than before, and nothing stays installed on structlog or logging once the call returns (a notebook
searches several times in one process)."""
from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import structlog

import evovae
from evo.cmdline.log_setup import LOG_FILE_BACKUPS, LOG_FILE_BYTES
from evo.logs.command import main as logs_main
from evo.space import SearchSpace
from evovae._quiet import library_logging, run_logs

SMALL = SearchSpace(max_layers=1, width_max=100)
SETTINGS = dict(budget_epochs=2, epochs=1, strategy="random", population=2, offspring=2, space=SMALL)


def binary_rows(n: int = 200, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    prototypes = rng.random((4, d)) < 0.5
    return (prototypes[rng.integers(0, 4, n)] ^ (rng.random((n, d)) < 0.05)).astype(np.float32)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def events(path: Path) -> list[str]:
    return [r["event"] for r in records(path)]


def summary_of(run_dir: Path) -> dict:
    out = io.StringIO()
    assert logs_main(["summarize", "--json", str(run_dir)], stdout=out, stderr=io.StringIO()) == 0
    return json.loads(out.getvalue())


def nothing_installed(root_handlers: list[logging.Handler]) -> None:
    assert not structlog.is_configured()  # structlog back to its defaults
    assert logging.getLogger().handlers == root_handlers and not logging.getLogger("evo").handlers


# ---------------------------------------------------------------------------------------------- the plumbing

WORKER_LINE = json.dumps({"worker_id": "local0-1-0", "task_id": "abc", "event": "task.received", "role": "worker",
                          "level": "info", "timestamp": "2026-01-02T03:04:05.000006Z"})


def test_a_callers_own_structlog_is_left_as_it_was_and_the_file_gets_a_copy_of_its_lines(tmp_path, capfd):
    seen: list[dict] = []

    def capture(logger, method, event_dict):
        seen.append(dict(event_dict))
        raise structlog.DropEvent

    chain = [structlog.processors.add_log_level, capture]
    structlog.configure(processors=chain, wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    log = structlog.get_logger("caller")
    with library_logging(verbose=False):  # the caller's configuration holds
        logs = run_logs(tmp_path)
        log.info("search.step", n=1)
        log.debug("too.fine")  # the caller's level: their chain never sees it, nor the file
        logs.workers(0, WORKER_LINE)  # info: the file only
        logs.workers(1, WORKER_LINE.replace('"info"', '"warning"'))  # a warning: stderr too, as written
        logs.close()
    log.info("after.the.call")
    assert structlog.get_config()["processors"] is chain and chain == [structlog.processors.add_log_level, capture]
    assert [e["event"] for e in seen] == ["search.step", "after.the.call"]
    kept = records(tmp_path / "logs" / "head.log")
    assert [(r["event"], r["level"], r["n"]) for r in kept] == [("search.step", "info", 1)]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$", kept[0]["timestamp"])
    assert (tmp_path / "logs" / "worker-local0.log").read_text() == WORKER_LINE + "\n"
    assert capfd.readouterr().err.splitlines() == [WORKER_LINE.replace('"info"', '"warning"')]


def test_the_files_rotate_as_the_commands_do_and_close_with_the_call(tmp_path, capfd):
    assert LOG_FILE_BYTES == 16 * 2**20 and LOG_FILE_BACKUPS == 4  # the same handler as evovae search's files
    root = list(logging.getLogger().handlers)
    log = structlog.get_logger("api")
    with library_logging(verbose=False):
        logs = run_logs(tmp_path / "a")
        log.info("first.call")
        log.warning("a.warning")
        logs.workers(0, WORKER_LINE)
        logs.close()
    nothing_installed(root)
    with library_logging(verbose=True):
        logs = run_logs(tmp_path / "b")
        log.info("second.call")
        logs.workers(0, WORKER_LINE)
        logs.close()
    nothing_installed(root)
    assert events(tmp_path / "a" / "logs" / "head.log") == ["first.call", "a.warning"]
    assert events(tmp_path / "b" / "logs" / "head.log") == ["second.call"]
    err = capfd.readouterr().err.splitlines()
    # quiet: the warning; verbose: every line, the worker's in the same console format
    assert ["a.warning" in err[0], "second.call" in err[1], "task.received" in err[2]] == [True] * 3, err
    assert len(err) == 3 and not err[2].startswith("{") and "worker_id=local0-1-0" in err[2]


# ---------------------------------------------------------------------------------------------- for real

def test_a_search_in_this_process_keeps_its_events_and_a_second_search_its_own(tmp_path, capsys):
    root = list(logging.getLogger().handlers)
    rows = binary_rows()
    first = evovae.search(rows, run_dir=tmp_path / "a", **SETTINGS)
    assert capsys.readouterr() == ("", "")  # as quiet as before: no line on stdout or stderr
    nothing_installed(root)
    head = tmp_path / "a" / "logs" / "head.log"
    assert sorted(p.name for p in head.parent.iterdir()) == ["head.log"]
    kept = records(head)
    assert {"run.replayed", "generation.done", "search.stopped"} <= {r["event"] for r in kept}
    stopped = next(r for r in kept if r["event"] == "search.stopped")
    assert stopped["reason"] == first.stop_reason == "budget"
    assert summary_of(tmp_path / "a")["generations"][-1]["generation"] == first.history[-1].generation

    lines = head.read_text()
    evovae.search(rows, run_dir=tmp_path / "b", seed=1, **SETTINGS)  # a second search, in the same process
    assert head.read_text() == lines  # the first run's file got nothing of it
    assert "search.stopped" in events(tmp_path / "b" / "logs" / "head.log")

    again = evovae.search(rows, run_dir=tmp_path / "a", **SETTINGS)  # resumed (finished: at once): appended
    assert again.summary["evaluated_now"] == 0
    assert head.read_text().startswith(lines) and events(head).count("run.replayed") == 2
    assert capsys.readouterr() == ("", "")
    nothing_installed(root)


@pytest.mark.slow  # starts local worker processes
def test_a_search_on_local_workers_keeps_their_logs_and_the_log_tools_read_its_run_directory(tmp_path, capfd):
    run = tmp_path / "run"
    root = list(logging.getLogger().handlers)
    result = evovae.search(binary_rows(300, 16), run_dir=run, workers=2, **{**SETTINGS, "budget_epochs": 4})
    assert capfd.readouterr() == ("", "")  # the workers' info lines went to their files only
    nothing_installed(root)
    assert result.stop_reason == "budget" and len(result.evaluations) == 4
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["head.log", "worker-local0.log", "worker-local1.log"]
    for path in (run / "logs").iterdir():
        assert all(isinstance(r, dict) and r["event"] for r in records(path)), path
    summary = summary_of(run)
    assert summary["evaluations"] == len(result.evaluations) and summary["evaluations_source"] == "head"
    assert sorted(w["worker_id"][:6] for w in summary["workers"]) == ["local0", "local1"]
    assert sum(w["evaluations"] for w in summary["workers"]) == len(result.evaluations)
    out = io.StringIO()
    assert logs_main(["trace", str(result.best.genotype), str(run)], stdout=out) == 0
    trace = out.getvalue()
    assert trace.index("task.dispatched") < trace.index("task.received") < trace.index("result.sent"), trace

    before = (run / "logs" / "head.log").read_text()
    again = evovae.search(binary_rows(300, 16), run_dir=run, workers=1, **{**SETTINGS, "budget_epochs": 4})
    assert again.summary["evaluated_now"] == 0
    now = (run / "logs" / "head.log").read_text()  # a resume appends
    assert now.startswith(before) and "run.replayed" in now[len(before):]
    assert summary_of(run)["evaluations"] == len(result.evaluations)  # nothing evaluated twice

    loud = evovae.search(binary_rows(300, 16), run_dir=tmp_path / "loud", workers=1, verbose=True, **SETTINGS)
    out, err = capfd.readouterr()
    assert loud.stop_reason == "budget" and "gen   0" in out  # the progress lines, as before
    assert "search.stopped" in err and "task.received" in err and "role=worker" in err  # every line, one format
    assert not any(line.startswith("{") for line in err.splitlines())
    nothing_installed(root)
