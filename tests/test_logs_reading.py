"""Reading log lines back, and the command's errors: fast, no processes (``evovae logs`` runs in-process)."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

from evo.logs import parse_line
from evo.logs.command import main as logs_main

REPO = Path(__file__).resolve().parents[1]
LINE = '{"event": "task.received", "level": "info", "timestamp": "2026-01-01T00:00:00Z", "task_id": "a"}'


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = logs_main(list(args), stdout=out, stderr=err, stdin=None if stdin is None else io.StringIO(stdin))
    return status, out.getvalue(), err.getvalue()


def test_parse_line_reads_glued_objects_prefixes_and_journal_envelopes():
    a = LINE
    b = '{"event": "result.sent", "level": "info", "timestamp": "2026-01-01T00:00:01Z", "task_id": "a"}'
    assert [f["event"] for f, _ in parse_line(a + b)] == ["task.received", "result.sent"]
    assert [f["event"] for f, _ in parse_line(f"Jan 01 00:00:00 node7 evovae-worker-0[99]: {a}")] == ["task.received"]
    envelope = json.dumps({"MESSAGE": a, "_HOSTNAME": "node7", "_SYSTEMD_UNIT": "evovae-worker@0.service",
                           "__REALTIME_TIMESTAMP": "1767225600000000", "PRIORITY": "6"})
    (fields, meta), = parse_line(envelope)
    assert fields["task_id"] == "a" and meta["_HOSTNAME"] == "node7"
    assert meta["_SYSTEMD_UNIT"] == "evovae-worker@0.service"
    bytes_envelope = json.dumps({"MESSAGE": list(b.encode()), "_HOSTNAME": "node7"})
    assert [f["event"] for f, _ in parse_line(bytes_envelope)] == ["result.sent"]
    assert parse_line("gen   0  best   122.00 650|10|200") == []
    assert parse_line('{"event": "x"') == []  # cut
    assert parse_line('{"spec": {"event": "inner"}}') == []  # not a log line
    assert parse_line("") == []


def test_missing_file_is_one_line_and_exit_2(tmp_path):
    log = tmp_path / "search.log"
    log.write_text(LINE + "\n")
    missing = tmp_path / "nope.log"
    for args in (["summarize", str(missing)], ["summarize", str(log), str(missing)], ["trace", "abc", str(missing)]):
        status, out, err = run(*args)
        assert (status, out) == (2, ""), args
        assert err == f"evovae logs: error: no such file: {missing}\n"
    empty = tmp_path / "run"
    empty.mkdir()
    status, _, err = run("summarize", str(empty))  # a directory without log files (a run from before they were kept)
    assert status == 2 and err.startswith(f"evovae logs: error: {empty} holds no log files") and err.count("\n") == 1
    status, out, _ = run("summarize", str(tmp_path))  # a folder of log files (RUN_DIR/logs given) is read
    assert status == 0 and "1 file(s)" in out


def test_a_file_without_evovae_lines_says_so(tmp_path):
    plain = tmp_path / "console.log"
    plain.write_text("2026-11-28 04:14:28 [info] broker.started\n")
    status, out, _ = run("summarize", str(plain))
    assert status == 1
    assert "no evovae JSON log lines found" in out and "1 other lines ignored" in out


def test_standard_input_is_read(tmp_path):
    status, out, _ = run("summarize", "--json", "-", stdin=LINE + "\nnot a log line\n")
    summary = json.loads(out)
    assert status == 0 and (summary["records"], summary["ignored_lines"], summary["files"]) == (1, 1, ["-"])


def test_every_logged_event_is_documented():
    """docs/logging.md names every event the code logs, in every module of every package (a new event
    needs a line there)."""
    doc = (REPO / "docs" / "logging.md").read_text()
    pattern = re.compile(r"\.(?:debug|info|warning|error|exception|critical|emit)\(\s*(?:log, [^,]+, )?"
                         r"\"([a-z_]+(?:\.[a-z_]+)+)\"|_RateLimitedLog\(\"([a-z_.]+)\"\)")
    found = {}
    for package in ("evo", "gpuworker", "transport"):
        for path in sorted((REPO / package).rglob("*.py")):
            for groups in pattern.findall(path.read_text()):
                for event in filter(None, groups):
                    found.setdefault(event, path.relative_to(REPO))
    assert len(found) > 30
    missing = {event: str(path) for event, path in found.items() if f"`{event}`" not in doc}
    assert not missing, f"events missing from docs/logging.md: {missing}"


def test_trace_shows_a_worker_record_after_the_dispatch_it_answers(tmp_path):
    # the head logs task.dispatched once the send went through; the worker may log task.received first
    lines = [
        {"event": "task.received", "role": "worker", "worker_id": "w1", "task_id": "abcdef01", "attempt": 1,
         "timestamp": "2026-01-01T00:00:00.693Z", "level": "info"},
        {"event": "task.dispatched", "task_id": "abcdef01", "attempt": 1, "worker_id": "w1",
         "timestamp": "2026-01-01T00:00:00.694Z", "level": "info"},
        {"event": "task.resent", "task_id": "abcdef01", "attempt": 1, "next_attempt": 2,
         "timestamp": "2026-01-01T00:00:01.000Z", "level": "warning"},
        {"event": "task.dispatched", "task_id": "abcdef01", "attempt": 2, "worker_id": "w2",
         "timestamp": "2026-01-01T00:00:01.001Z", "level": "info"},
        {"event": "task.received", "role": "worker", "worker_id": "w2", "task_id": "abcdef01", "attempt": 2,
         "timestamp": "2026-01-01T00:00:01.002Z", "level": "info"},
        # a late line of the first worker (its clock behind) stays in its own time order
        {"event": "result.sent", "role": "worker", "worker_id": "w1", "task_id": "abcdef01", "attempt": 1,
         "timestamp": "2026-01-01T00:00:00.900Z", "level": "info"},
    ]
    log = tmp_path / "run.log"
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    status, out, err = run("trace", "abcdef01", str(log))
    assert status == 0, err
    events = [line.split()[2] if line.split()[1] == "head" else line.split()[3] for line in out.splitlines()]
    assert events == ["task.dispatched", "task.received", "result.sent", "task.resent", "task.dispatched",
                      "task.received"], out
