"""``evovae logs``: summaries and traces of real distributed searches.

A real head (``python -m evo.cli search``) with real local worker processes
(fake training) writes its JSON log; the summary read back from it must agree
with the search's own --output file and with the broker's counters, whether
the log is read as written, split per process, through journald's output
forms or from standard input. Nothing is mocked.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from distributed_helpers import free_port_pair
from evo.logs import parse_line, read_logs, summarize, trace

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_search(directory: Path, name: str, *extra: str) -> tuple[Path, dict]:
    """The brief's small distributed search; returns (its stderr log, its --output)."""
    directory.mkdir(parents=True, exist_ok=True)
    log, output = directory / f"{name}.log", directory / f"{name}.json"
    for _ in range(5):
        port = free_port_pair()
        with open(log, "wb") as err:
            proc = subprocess.run(
                # generational (each genotype trained once, generation 0 first): the counts below are its
                [PYTHON, "-m", "evo.cli", "search", "--mode", "generational", "--local-workers", "2",
                 "--worker-arg=--fake", "--worker-arg=--fake-sleep=0.05", "--population", "4", "--offspring", "4",
                 "--generations", "3",
                 "--bind", f"tcp://127.0.0.1:{port}", "--log-format", "json", "--output", str(output), *extra],
                cwd=directory, env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, timeout=120)
        if proc.returncode == 2 and "cannot bind" in log.read_text(errors="replace"):
            continue  # someone took the port between the check and the bind
        assert proc.returncode == 0, \
            f"search failed ({proc.returncode})\n{proc.stdout.decode()}\n{log.read_text()[-3000:]}"
        return log, json.loads(output.read_text())
    raise AssertionError("could not bind a search after 5 port pairs")


def logs_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "evo.logs", *args], cwd=REPO, env=ENV, input=stdin, capture_output=True,
                          text=True, timeout=60)


def summary_of(*paths: Path | str) -> dict:
    return summarize(read_logs([str(p) for p in paths]))


def comparable(summary: dict) -> dict:
    """A summary without what names the input files."""
    return {k: v for k, v in summary.items() if k != "files"}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    return run_search(tmp_path_factory.mktemp("clean"), "search")


@pytest.fixture(scope="module")
def poisoned_run(tmp_path_factory, clean_run):
    """The same search where one generation-0 genotype kills every worker that trains it."""
    poison = clean_run[1]["evaluations"][0]["genotype"]
    log, out = run_search(tmp_path_factory.mktemp("poison"), "search", f"--worker-arg=--poison={poison}",
                          "--max-attempts", "2", "--heartbeat", "0.2", "--liveness", "3")
    return log, out, poison


def records(path: Path) -> list[dict]:
    return [fields for line in path.read_text().splitlines() for fields, _ in parse_line(line)]


# ------------------------------------------------------------------ the summary agrees with the search

@pytest.mark.slow
def test_summary_counts_match_the_search_output(clean_run):
    log, out = clean_run
    s = summary_of(log)
    assert s["evaluations"] == len(out["evaluations"]) == 12
    assert s["evaluation_failures"] == sum(bool(e["error"]) for e in out["evaluations"]) == 0
    assert s["evaluations_source"] == "head"
    assert sum(b["evaluations"] for b in s["throughput"]["buckets"]) == s["evaluations"]
    assert s["ignored_lines"] == 0 and s["records"] > 0
    head = s["head"]
    assert head["dispatched"] == head["tasks"] == head["results_accepted"] == 12
    assert (head["resends"], head["duplicates"], head["gave_up"], head["bad_frames"]) == (0, 0, 0, 0)
    assert head["workers_seen"] == 2 and head["runs"] == 1
    stats = head["broker_stats"]  # the broker's own counters, logged at broker.closed
    assert stats is not None
    assert (head["dispatched"], head["resends"], head["duplicates"], head["gave_up"], head["bad_frames"]) == (
        stats["dispatched"], stats["resends"], stats["duplicates"], stats["failures"], stats["bad_frames"])


@pytest.mark.slow
def test_best_loss_per_generation_matches_the_search_output(clean_run):
    log, out = clean_run
    s = summary_of(log)
    assert [g["generation"] for g in s["generations"]] == [g["generation"] for g in out["generations"]], (
        "the head logs one generation.done line per generation")
    assert [g["best_loss"] for g in s["generations"]] == [g["best_loss"] for g in out["generations"]]
    assert [g["median_loss"] for g in s["generations"]] == [g["median_loss"] for g in out["generations"]]


@pytest.mark.slow
def test_per_worker_evaluations_add_up(clean_run):
    log, out = clean_run
    s = summary_of(log)
    workers = s["workers"]
    assert len(workers) == 2 and all(w["source"] == "worker" for w in workers)
    assert sum(w["evaluations"] for w in workers) == len(out["evaluations"])
    assert sum(w["dispatched"] for w in workers) == s["head"]["dispatched"]
    for w in workers:
        assert w["evaluations"] == w["accepted"] == w["dispatched"] > 0
        assert w["failures"] == 0 and w["lost_attempts"] == 0
        # every fake task sleeps 0.05 s: busy time is at least that per evaluation
        assert w["busy_s"] >= 0.05 * w["evaluations"] * 0.9
        assert w["idle_s"] >= 0 and abs(w["busy_s"] + w["idle_s"] - w["span_s"]) < 0.01
        assert 0 < w["utilisation"] <= 1


@pytest.mark.slow
def test_summary_json_cli_equals_the_library(clean_run):
    log, _ = clean_run
    out = logs_cli("summarize", "--json", str(log))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads(json.dumps(summary_of(log)))


@pytest.mark.slow
def test_text_summary_names_what_matters(clean_run):
    log, out = clean_run
    text = logs_cli("summarize", str(log))
    assert text.returncode == 0, text.stderr
    assert "evaluations 12 (failed 0)" in text.stdout
    assert "tasks dispatched        12" in text.stdout
    for w in summary_of(log)["workers"]:
        assert w["worker_id"] in text.stdout
    for g in out["generations"]:
        assert f"{g['best_loss']:.3f}" in text.stdout


# ------------------------------------------------------------------ trace

def trace_events(stdout: str) -> list[tuple[str, str]]:
    """(who, event) of each trace line; who is 'head' or 'worker'."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith("#"):
            continue
        parts = line.split()
        who = parts[1]
        event = parts[3] if who == "worker" else parts[2]
        rows.append((who, event))
    return rows


@pytest.mark.slow
def test_trace_of_a_task_shows_dispatch_to_completion_in_order(clean_run):
    log, _ = clean_run
    tid = next(r["task_id"] for r in records(log) if r["event"] == "task.dispatched")
    out = logs_cli("trace", tid, str(log))
    assert out.returncode == 0, out.stderr
    assert not out.stdout.startswith("#")  # a whole id: no list of matching tasks
    events = trace_events(out.stdout)
    names = [e for _, e in events]
    order = ["task.dispatched", "task.received", "result.sent", "task.finished", "result.accepted", "task.completed"]
    assert all(name in names for name in order), names
    at = {name: names.index(name) for name in order}
    # what causality guarantees: each process's own lines in order, and the head's acceptance after the
    # worker received the task (a worker logs result.sent once the send returned, so the head may log
    # result.accepted a few microseconds before it)
    assert at["task.dispatched"] < at["task.received"] < at["result.sent"] < at["task.finished"], names
    assert at["task.received"] < at["result.accepted"] < at["task.completed"], names
    assert {who for who, _ in events} == {"head", "worker"}
    assert len(names) == len(order)  # nothing about other tasks
    # the same through --json: the records themselves, each naming its source line
    as_json = logs_cli("trace", "--json", tid, str(log))
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["event"] for r in lines] == names and all(r["task_id"] == tid for r in lines)
    assert all(r["_source"].startswith(str(log) + ":") for r in lines)


@pytest.mark.slow
def test_trace_by_prefix_and_by_genotype(clean_run):
    log, _out = clean_run
    recs = records(log)
    first = next(r for r in recs if r["event"] == "task.dispatched")
    by_prefix = logs_cli("trace", first["task_id"][:10], str(log))
    assert by_prefix.returncode == 0 and by_prefix.stdout.startswith(f"# tasks: {first['task_id']}\n")
    by_genotype = logs_cli("trace", first["genotype"], str(log))
    assert by_genotype.returncode == 0
    assert trace_events(by_genotype.stdout) == trace_events(by_prefix.stdout)


@pytest.mark.slow
def test_trace_of_an_unknown_task_exits_1(clean_run):
    log, _ = clean_run
    out = logs_cli("trace", "0123456789abcdef01234567", str(log))
    assert out.returncode == 1 and out.stdout == ""
    assert "no lines about task 0123456789abcdef01234567" in out.stderr


# ------------------------------------------------------------------ a worker-killing genotype

@pytest.mark.slow
def test_poisoned_genotype_is_summarized_as_resends_and_a_give_up(poisoned_run):
    log, out, poison = poisoned_run
    s = summary_of(log)
    head = s["head"]
    assert s["evaluations"] == len(out["evaluations"])
    failed = [e for e in out["evaluations"] if e["error"]]
    assert [e["genotype"] for e in failed] == [poison]
    assert s["evaluation_failures"] == 1 and head["gave_up"] == 1
    assert head["resends"] >= 1 and head["workers_lost"] >= 1 and head["local_worker_restarts"] >= 1
    stats = head["broker_stats"]
    assert (head["dispatched"], head["resends"], head["duplicates"], head["gave_up"]) == (
        stats["dispatched"], stats["resends"], stats["duplicates"], stats["failures"])
    workers = s["workers"]
    # every attempt the head lost was either re-sent or the last one
    assert sum(w["lost_attempts"] for w in workers) == head["resends"] + head["gave_up"]
    # every result a worker finished reached the head (accepted once, or dropped as a duplicate)
    assert sum(w["evaluations"] for w in workers) == head["results_accepted"] + head["duplicates"] + head[
        "late_results"]
    assert sum(w["abandoned"] for w in workers) >= 2  # the two killed mid-task


@pytest.mark.slow
def test_trace_of_the_poisoned_task_shows_each_attempt_then_the_give_up(poisoned_run):
    log, _, poison = poisoned_run
    tid = next(r["task_id"] for r in records(log) if r.get("genotype") == poison)
    out = logs_cli("trace", tid, str(log))
    assert out.returncode == 0, out.stderr
    names = [e for _, e in trace_events(out.stdout)]
    assert names.count("task.dispatched") == 2 and names.count("task.received") == 2, out.stdout
    first_loss = names.index("task.resent")
    assert names.index("task.dispatched") < names.index("task.received") < first_loss, out.stdout
    assert first_loss < len(names) - 1 - names[::-1].index("task.dispatched"), out.stdout  # re-sent, then again
    assert names[-2:] == ["task.failed", "task.gave_up"], out.stdout
    assert "task.finished" not in names and "result.accepted" not in names, out.stdout
    assert "[warning]" in out.stdout and "[error]" in out.stdout  # the levels of resend and failure show


# ------------------------------------------------------------------ the same log, read other ways

@pytest.mark.slow
def test_split_per_process_gives_the_same_summary(clean_run, tmp_path):
    """As on a real cluster: the head's log on one node, each worker's on its own."""
    log, _ = clean_run
    files: dict[str, list[str]] = {}
    for line in log.read_text().splitlines():
        found = parse_line(line)
        if not found or found[0][0].get("role") != "worker":
            name = "head"
        else:  # a line a worker logs before its id is known goes to a file of its own
            name = found[0][0].get("worker_id", "worker-unknown")
        files.setdefault(name, []).append(line)
    paths = []
    for name, lines in files.items():
        path = tmp_path / f"{name}.log"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    assert len([p for p in paths if p.stem not in ("head", "worker-unknown")]) == 2
    assert comparable(summary_of(*paths)) == comparable(summary_of(log))


def _journal_entry(line: str, index: int, unit: str, as_bytes: bool = False) -> str:
    """One line of `journalctl -o json`: every field a string, MESSAGE our line."""
    found = parse_line(line)
    stamp = found[0][0]["timestamp"] if found else "2026-01-01T00:00:00Z"
    micros = int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1e6)
    entry = {
        "__CURSOR": f"s=5f0c;i={index:x};b=7e1f;m={index:x};t={micros:x};x=0", "__REALTIME_TIMESTAMP": str(micros),
        "__MONOTONIC_TIMESTAMP": str(1000 + index), "_BOOT_ID": "7e1f" * 8, "PRIORITY": "6", "_UID": "998",
        "_GID": "998", "_TRANSPORT": "stdout", "_HOSTNAME": "node1", "SYSLOG_IDENTIFIER": unit.split(".")[0],
        "_PID": "4242", "_COMM": "evovae", "_SYSTEMD_UNIT": unit, "_STREAM_ID": "0a1b",
        "MESSAGE": list(line.encode()) if as_bytes else line,
    }
    return json.dumps(entry)


@pytest.mark.slow
def test_journald_json_gives_the_same_summary(clean_run, tmp_path):
    log, _ = clean_run
    lines = log.read_text().splitlines()
    journal = tmp_path / "journal.json"
    # journald stores a message with unusual bytes as an array of numbers: do that for a few
    journal.write_text("\n".join(_journal_entry(line, i, "evovae-search.service", as_bytes=i % 7 == 0)
                                 for i, line in enumerate(lines) if line.strip()) + "\n")
    assert comparable(summary_of(journal)) == comparable(summary_of(log))
    # the trace names the host journald recorded
    tid = next(r["task_id"] for r in records(log) if r["event"] == "task.dispatched")
    shown = logs_cli("trace", tid, str(journal))
    assert shown.returncode == 0 and "@node1" in shown.stdout


@pytest.mark.slow
def test_journalctl_cat_and_short_and_stdin_give_the_same_summary(clean_run, tmp_path):
    log, _ = clean_run
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    cat = tmp_path / "cat.txt"  # journalctl -o cat: the messages alone
    cat.write_text("\n".join(lines) + "\n")
    short = tmp_path / "short.txt"  # journalctl -o short-iso: time, host, identifier[pid]: message
    short.write_text("-- Journal begins at Mon 2026-01-05 10:00:00 UTC. --\n" + "\n".join(
        f"2026-11-28T04:14:28+0000 node1 evovae-search[4242]: {line}" for line in lines) + "\n")
    gz = tmp_path / "search.log.gz"
    gz.write_bytes(gzip.compress(log.read_bytes()))
    want = comparable(summary_of(log))
    assert comparable(summary_of(cat)) == want
    got = comparable(summary_of(short))
    assert got.pop("ignored_lines") == 1 and got.pop("lines") == want["lines"] + 1  # the "-- Journal" line
    assert got == {k: v for k, v in want.items() if k not in ("ignored_lines", "lines")}
    assert comparable(summary_of(gz)) == want
    piped = logs_cli("summarize", "--json", "-", stdin=log.read_text())
    assert piped.returncode == 0, piped.stderr
    assert comparable(json.loads(piped.stdout)) == json.loads(json.dumps(want))


@pytest.mark.slow
def test_other_lines_are_ignored_and_counted(clean_run, tmp_path):
    log, _ = clean_run
    lines = log.read_text().splitlines()
    noisy = tmp_path / "noisy.log"
    noisy.write_text("\n".join([
        "ventilator tcp://127.0.0.1:5557  sink tcp://127.0.0.1:5558  local workers 2",
        "2026-11-28T04:14:28.137Z [info     ] broker.started  spec={'epochs': 2}",
        "Traceback (most recent call last):",
        '{"not": "an evovae line"}',
        *lines,
        lines[-1][: len(lines[-1]) // 2],  # a half-written last line
    ]) + "\n")
    got, want = comparable(summary_of(noisy)), comparable(summary_of(log))
    assert got.pop("ignored_lines") == 5 and got.pop("lines") == want["lines"] + 5
    assert got == {k: v for k, v in want.items() if k not in ("ignored_lines", "lines")}


# ------------------------------------------------------------------ one side's logs alone

@pytest.mark.slow
@pytest.mark.slow
def test_worker_logs_alone_still_give_worker_numbers(clean_run, tmp_path):
    """Only the workers' journals at hand (no head log): evaluations come from the workers."""
    log, out = clean_run
    worker_lines = [line for line in log.read_text().splitlines()
                    if any(f.get("role") == "worker" for f, _ in parse_line(line))]
    path = tmp_path / "workers.log"
    path.write_text("\n".join(worker_lines) + "\n")
    s = summary_of(path)
    assert s["evaluations_source"] == "workers"
    assert s["evaluations"] == len(out["evaluations"]) == sum(w["evaluations"] for w in s["workers"])
    assert s["generations"] == [] and s["head"]["dispatched"] == 0


@pytest.mark.slow
def test_head_log_alone_times_workers_from_dispatch_to_result(clean_run, tmp_path):
    log, out = clean_run
    head_lines = [line for line in log.read_text().splitlines()
                  if any(f.get("role") != "worker" for f, _ in parse_line(line))]
    path = tmp_path / "head.log"
    path.write_text("\n".join(head_lines) + "\n")
    s = summary_of(path)
    assert all(w["source"] == "head" for w in s["workers"]) and len(s["workers"]) == 2
    assert sum(w["evaluations"] for w in s["workers"]) == len(out["evaluations"])
    assert all(w["busy_s"] > 0 for w in s["workers"])


@pytest.mark.slow
def test_trace_matches_only_whole_ids_or_long_prefixes(clean_run):
    logs = read_logs([str(clean_run[0])])
    tid = next(r.get("task_id") for r in logs.records if r.event == "task.dispatched")
    assert trace(logs, tid[:5]) == []
    assert {r.get("task_id") for r in trace(logs, tid[:6])} >= {tid}
