"""``evovae logs``: read the JSON logs of a search back — a summary of the run, or
the story of one task across the head's and the workers' logs.

Pure: the standard library only (no zmq, no torch, no structlog), so it runs on
any machine that has the log files, e.g. a laptop with logs copied off a cluster.

Input, any mix, from files, ``.gz`` files or ``-`` (standard input):

* the JSON lines evovae writes with ``--log-format json`` (one object per line
  with ``event``, ``level``, ``timestamp`` and the bound fields);
* ``journalctl -o json``: one object per line whose ``MESSAGE`` holds our line
  (``_HOSTNAME``, ``_SYSTEMD_UNIT`` and ``__REALTIME_TIMESTAMP`` are kept);
* ``journalctl -o cat`` / ``-o short`` / ``-o short-iso``: a prefix, then our line;
* several objects glued on one line (two processes writing to one stderr);
* anything else (progress lines, console-format logs, a half-written last
  line): counted as ignored, never an error.

``evovae logs summarize FILES...`` and ``evovae logs trace TASK_ID FILES...``;
``--json`` for machine-readable output. docs/logging.md has the schema.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence, TextIO

__all__ = ["LogError", "Record", "Logs", "main", "parse_line", "read_logs", "summarize", "format_summary",
           "trace", "format_trace"]

#: Fields every line has; not repeated when a line is shown in a trace.
COMMON_FIELDS = ("event", "level", "timestamp", "role")

#: Events only a worker process writes (used when a line carries no ``role``).
WORKER_EVENTS = frozenset({
    "channel.connected", "channel.closed", "worker.started", "worker.stopped", "worker.signal", "worker.unfit",
    "task.received", "task.finished", "task.abandoned", "task.error", "result.sent", "result.unsent",
    "ready.skipped", "heartbeat.error",
})

_DECODER = json.JSONDecoder()


class LogError(Exception):
    """A log file that cannot be read: one line, exit status 2."""


@dataclass
class Record:
    """One evovae log line, with where it came from."""

    fields: dict[str, Any]
    time: float  # Unix seconds (from ``timestamp``, else journald's time, else the line before)
    source: str  # "file:line"
    order: int  # position in the input, for a stable sort
    host: str | None = None  # journald's _HOSTNAME
    unit: str | None = None  # journald's _SYSTEMD_UNIT

    @property
    def event(self) -> str:
        return self.fields.get("event", "")

    @property
    def role(self) -> str:
        """``search`` (the head), ``worker``, or whatever the line says."""
        role = self.fields.get("role")
        if isinstance(role, str) and role:
            return role
        if self.event in WORKER_EVENTS or (self.event == "frame.rejected" and "worker_id" in self.fields):
            return "worker"
        return "search"

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


@dataclass
class Logs:
    """Every record read, in time order, and what was read."""

    records: list[Record]
    files: list[str]
    lines: int = 0
    ignored: int = 0


# ---------------------------------------------------------------------------------- reading

def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _is_record(obj: Any) -> bool:
    return (isinstance(obj, dict) and isinstance(obj.get("event"), str)
            and ("timestamp" in obj or "level" in obj))


def _journal_message(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", errors="replace")  # journald's form of non-UTF-8 text
    return None


def parse_line(text: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The evovae records in one line of text: ``[(fields, envelope), ...]``.

    ``envelope`` holds journald's metadata when the line was a ``journalctl -o json``
    entry (``_HOSTNAME``, ``_SYSTEMD_UNIT``, ``__REALTIME_TIMESTAMP``), else is empty.
    Text before the first ``{`` (a journal or syslog prefix) is skipped; several objects
    on one line are all read; a line with none gives ``[]``.
    """
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = _DECODER.raw_decode(text, pos)
        except ValueError:  # not JSON here (console text, a cut line): try the next brace
            pos = text.find("{", pos + 1)
            continue
        if _is_record(obj):
            out.append((obj, {}))
        elif isinstance(obj, dict) and "MESSAGE" in obj:
            message = _journal_message(obj["MESSAGE"])
            if message is not None:
                envelope = {k: obj[k] for k in ("_HOSTNAME", "_SYSTEMD_UNIT", "__REALTIME_TIMESTAMP", "_PID")
                            if k in obj}
                out.extend((fields, envelope) for fields, _ in parse_line(message))
        pos = text.find("{", end)
    return out


def _open(path: str, stdin: TextIO | None) -> tuple[Iterable[str], Any]:
    if path == "-":
        return (stdin if stdin is not None else sys.stdin), None
    try:
        if path.endswith(".gz"):
            handle = io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
        else:
            handle = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise LogError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise LogError(f"{path} is a directory (give the log files in it)") from None
    except OSError as exc:
        raise LogError(f"cannot read {path}: {exc.strerror or exc}") from None
    return handle, handle


def read_logs(paths: Sequence[str], stdin: TextIO | None = None) -> Logs:
    """Read and merge the records of ``paths`` (``-`` is standard input) in time order.

    Raises LogError naming the first file that is missing or unreadable, before
    reading any.
    """
    for path in paths:
        if path != "-":
            _, handle = _open(path, stdin)  # fail fast, before reading anything
            handle.close()
    logs = Logs(records=[], files=list(paths))
    order = 0
    for path in paths:
        lines, handle = _open(path, stdin)
        last_time = -math.inf
        try:
            for number, line in enumerate(lines, 1):
                logs.lines += 1
                found = parse_line(line)
                if not found:
                    if line.strip():
                        logs.ignored += 1
                    continue
                for fields, envelope in found:
                    moment = _parse_time(fields.get("timestamp"))
                    if moment is None and "__REALTIME_TIMESTAMP" in envelope:
                        try:
                            moment = int(envelope["__REALTIME_TIMESTAMP"]) / 1e6
                        except (TypeError, ValueError):
                            moment = None
                    if moment is None:
                        moment = last_time
                    last_time = moment
                    logs.records.append(Record(fields, moment, f"{path}:{number}", order,
                                               envelope.get("_HOSTNAME"), envelope.get("_SYSTEMD_UNIT")))
                    order += 1
        except (OSError, EOFError) as exc:  # a truncated .gz, an I/O error mid-file
            raise LogError(f"cannot read {path}: {exc}") from None
        finally:
            if handle is not None:
                handle.close()
    logs.records.sort(key=lambda r: (r.time, r.order))
    return logs


# ---------------------------------------------------------------------------------- summary

@dataclass
class _Worker:
    worker_id: str
    # from the worker's own log
    evaluations: int = 0
    failures: int = 0
    abandoned: int = 0
    busy_s: float = 0.0
    span_s: float = 0.0
    sessions: int = 0
    own_lines: int = 0
    session_start: float | None = None
    session_last: float | None = None
    running: tuple | None = None  # (task_id, attempt, started)
    result_sent_at: float | None = None
    # from the head's log
    dispatched: int = 0
    results: int = 0  # results the head received from it (accepted, duplicate or late)
    accepted: int = 0
    lost_attempts: int = 0  # attempts on it the head re-sent or gave up on
    lost: int = 0  # worker.lost
    head_busy_s: float = 0.0
    head_first: float | None = None
    head_last: float | None = None
    head_running: dict = field(default_factory=dict)  # (task_id, attempt) -> dispatched at

    def head_seen(self, t: float) -> None:
        self.head_first = t if self.head_first is None else self.head_first
        self.head_last = t

    def close_session(self) -> None:
        if self.session_start is not None and self.session_last is not None:
            self.span_s += max(0.0, self.session_last - self.session_start)
        if self.running is not None:  # killed mid-task: busy until its last line
            self._end_task(self.session_last if self.session_last is not None else self.running[2])
            self.abandoned += 1
        self.session_start = self.session_last = None

    def _end_task(self, t: float) -> None:
        self.busy_s += max(0.0, t - self.running[2])
        self.running = None
        self.result_sent_at = None

    def worker_line(self, record: Record) -> None:
        t, event = record.time, record.event
        if event == "channel.connected" and self.session_start is not None:
            self.close_session()  # a new process with the same id (a restart)
        if self.session_start is None:
            self.session_start = t
            self.sessions += 1
        self.session_last = t
        self.own_lines += 1
        key = (record.get("task_id"), record.get("attempt"))
        if event == "task.received":
            if self.running is not None:  # its end was not logged
                self._end_task(self.result_sent_at if self.result_sent_at is not None else t)
            self.running = (*key, t)
        elif event == "result.sent" and self.running is not None and self.running[:2] == key:
            self.result_sent_at = t
        elif event == "task.finished":
            self.evaluations += 1
            self.failures += record.get("ok") is False
            if self.running is not None and self.running[:2] == key:
                self._end_task(t)
        elif event == "task.abandoned":
            self.abandoned += 1
            if self.running is not None:
                self._end_task(t)

    def head_close(self, key: tuple, t: float) -> None:
        started = self.head_running.pop(key, None)
        if started is not None:
            self.head_busy_s += max(0.0, t - started)

    def as_dict(self) -> dict[str, Any]:
        from_worker = self.own_lines > 0
        if from_worker:
            evaluations, failures, busy, span = self.evaluations, self.failures, self.busy_s, self.span_s
        else:  # only the head's view: dispatch -> result (or loss) of each attempt
            evaluations, failures, busy = self.results, None, self.head_busy_s
            span = (self.head_last - self.head_first) if self.head_first is not None else 0.0
        idle = max(0.0, span - busy)
        return {
            "worker_id": self.worker_id,
            "source": "worker" if from_worker else "head",
            "evaluations": evaluations,
            "failures": failures,
            "abandoned": self.abandoned if from_worker else None,
            "busy_s": round(busy, 3),
            "idle_s": round(idle, 3),
            "span_s": round(span, 3),
            "utilisation": round(busy / span, 4) if span > 0 else None,
            "sessions": self.sessions if from_worker else None,
            "dispatched": self.dispatched,
            "results": self.results,
            "accepted": self.accepted,
            "lost_attempts": self.lost_attempts,
            "lost": self.lost,
        }


def _iso(t: float | None) -> str | None:
    if t is None or not math.isfinite(t):
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summarize(logs: Logs, bucket_s: float = 60.0) -> dict[str, Any]:
    """What the run did, from its records: see docs/logging.md for every field."""
    if not (math.isfinite(bucket_s) and bucket_s > 0):
        raise ValueError(f"bucket must be a number of seconds > 0, got {bucket_s!r}")
    workers: dict[str, _Worker] = {}

    def worker(wid: Any) -> _Worker | None:
        if not isinstance(wid, str) or not wid:
            return None
        if wid not in workers:
            workers[wid] = _Worker(wid)
        return workers[wid]

    head = dict(dispatched=0, tasks=0, resends=0, orphaned=0, results_accepted=0, result_errors=0, duplicates=0,
                late_results=0, unknown_results=0, gave_up=0, bad_frames=0, auth_refused=0, workers_seen=0,
                workers_lost=0,
                local_worker_restarts=0, runs=0, resumed=0)
    dispatched_ids: set[str] = set()
    gave_up_ids: set[str] = set()
    seen_ids: set[str] = set()
    broker_stats: dict[str, Any] | None = None
    generations: list[dict[str, Any]] = []
    head_evaluations: list[float] = []
    head_eval_failures = 0
    worker_finishes: list[float] = []
    worker_bad_frames = 0
    levels: dict[str, int] = {}
    events: dict[str, int] = {}
    times = [r.time for r in logs.records if math.isfinite(r.time)]

    for r in logs.records:
        event, t = r.event, r.time
        levels[str(r.get("level", "?"))] = levels.get(str(r.get("level", "?")), 0) + 1
        events[event] = events.get(event, 0) + 1
        if r.role == "worker":
            w = worker(r.get("worker_id"))
            if w is not None:
                w.worker_line(r)
            if event == "task.finished":
                worker_finishes.append(t)
            elif event == "frame.rejected":
                worker_bad_frames += 1
            continue
        # ---- the head (role "search") and its broker
        key = (r.get("task_id"), r.get("attempt"))
        w = worker(r.get("worker_id"))
        if w is not None and event != "task.completed":  # task.completed repeats the result's worker
            w.head_seen(t)
        if event == "task.dispatched":
            head["dispatched"] += 1
            dispatched_ids.add(r.get("task_id"))
            if w is not None:
                w.dispatched += 1
                w.head_running[key] = t
        elif event in ("task.resent", "task.failed"):
            if event == "task.resent":
                head["resends"] += 1
            else:
                gave_up_ids.add(r.get("task_id"))
            if w is not None:
                w.lost_attempts += 1
                w.head_close(key, t)
        elif event == "task.orphaned":
            head["orphaned"] += 1
        elif event in ("result.accepted", "result.duplicate", "result.late", "result.unknown"):
            name = {"result.accepted": "results_accepted", "result.duplicate": "duplicates",
                    "result.late": "late_results", "result.unknown": "unknown_results"}[event]
            head[name] += 1
            if event == "result.accepted" and r.get("ok") is False:
                head["result_errors"] += 1
            if w is not None and event != "result.unknown":
                w.results += 1
                w.accepted += event == "result.accepted"
                w.head_close(key, t)
        elif event == "task.completed":
            head_evaluations.append(t)
            head_eval_failures += r.get("ok") is False
        elif event == "task.gave_up":
            head_evaluations.append(t)
            head_eval_failures += 1
            gave_up_ids.add(r.get("task_id"))
        elif event == "frame.rejected":
            head["bad_frames"] += 1
        elif event == "frame.rejected.suppressed":
            count = r.get("count")
            head["bad_frames"] += count if isinstance(count, int) else 0
        elif event in ("auth.refused", "auth.key_refused"):
            head["auth_refused"] += 1
        elif event in ("auth.refused.suppressed", "auth.key_refused.suppressed"):
            count = r.get("count")
            head["auth_refused"] += count if isinstance(count, int) else 0
        elif event == "worker.seen":
            if r.get("returning") is not True and r.get("worker_id") not in seen_ids:
                head["workers_seen"] += 1
            seen_ids.add(r.get("worker_id"))
        elif event == "worker.lost":
            head["workers_lost"] += 1
            if w is not None:
                w.lost += 1
                for running in list(w.head_running):  # its attempt is re-sent later; busy ends now
                    w.head_close(running, t)
        elif event == "local_worker.exited":
            head["local_worker_restarts"] += 1
        elif event == "broker.started":
            head["runs"] += 1
        elif event == "broker.closed":
            broker_stats = {k: v for k, v in r.fields.items() if k not in COMMON_FIELDS}
        elif event == "run.replayed":
            head["resumed"] += isinstance(r.get("tells"), int) and r.get("tells") > 0
        elif event == "generation.done":
            if r.get("replayed") is True and any(g["generation"] == r.get("generation") for g in generations):
                continue  # a resumed head re-reports the generations of its journal: keep the first report
            generations.append({
                "generation": r.get("generation"), "best_loss": r.get("best_loss"),
                "median_loss": r.get("median_loss"), "best": r.get("best"), "evaluated": r.get("evaluated"),
                "failed": r.get("failed"), "duplicates": r.get("duplicates"), "total": r.get("total"),
                "replayed": r.get("replayed") is True, "time": _iso(t),
            })

    for w in workers.values():
        w.close_session()
        for key in list(w.head_running):  # still running when the head's log ends
            w.head_close(key, w.head_last if w.head_last is not None else 0.0)
    head["tasks"] = len(dispatched_ids - {None})
    head["gave_up"] = len(gave_up_ids - {None})
    head["broker_stats"] = broker_stats

    have_head = bool(head_evaluations) or head["dispatched"] > 0
    finish_times = head_evaluations if have_head else worker_finishes
    start, end = (min(times), max(times)) if times else (None, None)
    duration = (end - start) if times else 0.0
    buckets: list[dict[str, Any]] = []
    if finish_times and start is not None:
        counts: dict[int, int] = {}
        for t in finish_times:
            index = int((t - start) // bucket_s)
            counts[index] = counts.get(index, 0) + 1
        for index in range(max(counts) + 1):
            n = counts.get(index, 0)
            buckets.append({"start": _iso(start + index * bucket_s), "offset_s": round(index * bucket_s, 3),
                            "evaluations": n, "per_minute": round(n * 60.0 / bucket_s, 3)})
    evaluations = len(finish_times)
    failures = head_eval_failures if have_head else sum(w.failures for w in workers.values())
    return {
        "files": logs.files,
        "lines": logs.lines,
        "records": len(logs.records),
        "ignored_lines": logs.ignored,
        "start": _iso(start),
        "end": _iso(end),
        "duration_s": round(duration, 3),
        "evaluations": evaluations,
        "evaluation_failures": failures,
        "evaluations_source": "head" if have_head else "workers",
        "evaluations_per_minute": round(evaluations * 60.0 / duration, 3) if duration > 0 else None,
        "head": head,
        "workers": [workers[k].as_dict() for k in sorted(workers)],
        "worker_bad_frames": worker_bad_frames,
        "throughput": {"bucket_s": bucket_s, "buckets": buckets},
        "generations": generations,
        "levels": dict(sorted(levels.items())),
        "events": dict(sorted(events.items())),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _clock(seconds: float) -> str:
    """h:mm:ss (or m:ss under an hour)."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _num(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as text a person reads."""
    s = summary
    out = [f"evovae log summary: {len(s['files'])} file(s), {s['lines']} lines, {s['records']} records, "
           f"{s['ignored_lines']} other lines ignored"]
    if s["records"] == 0:
        out.append("no evovae JSON log lines found (run evovae with --log-format json)")
        return "\n".join(out)
    h = s["head"]
    per_minute = s["evaluations_per_minute"]
    resumed = f" ({h['resumed']} resumed from a journal)" if h["resumed"] else ""
    out.append(f"time {s['start']} .. {s['end']} ({_duration(s['duration_s'])}), {h['runs']} head run(s){resumed}")
    source = "the head's log" if s["evaluations_source"] == "head" else "the workers' logs (no head lines)"
    out.append(f"evaluations {s['evaluations']} (failed {s['evaluation_failures']}), "
               f"{_num(per_minute, '.1f')} per minute  [counted from {source}]")
    out.append("")
    out.append("head")
    rows = [("tasks dispatched", f"{h['dispatched']} ({h['tasks']} distinct tasks)"),
            ("resends", h["resends"]), ("orphaned attempts", h["orphaned"]),
            ("results accepted", f"{h['results_accepted']} ({h['result_errors']} reported a failed training)"),
            ("duplicate results", h["duplicates"]), ("late results", h["late_results"]),
            ("unknown results", h["unknown_results"]), ("gave up (failed tasks)", h["gave_up"]),
            ("bad frames", h["bad_frames"]), ("refused connections", h["auth_refused"]),
            ("workers seen", h["workers_seen"]),
            ("workers lost", h["workers_lost"]), ("local worker restarts", h["local_worker_restarts"])]
    out.extend(f"  {name:<24}{value}" for name, value in rows)
    out.append("")
    workers = s["workers"]
    out.append(f"workers ({len(workers)}; * = seen in the head's log only: busy = dispatch to result)")
    if workers:
        out.append(f"  {'worker':<32}{'evals':>6}{'failed':>7}{'busy':>10}{'idle':>10}{'util':>6}"
                   f"{'dispatched':>11}{'lost':>5}")
        for w in workers:
            name = w["worker_id"] + ("*" if w["source"] == "head" else "")
            util = "-" if w["utilisation"] is None else f"{100 * w['utilisation']:.0f}%"
            out.append(f"  {name:<32}{w['evaluations']:>6}{_num(w['failures'], 'd'):>7}"
                       f"{_duration(w['busy_s']):>10}{_duration(w['idle_s']):>10}{util:>6}"
                       f"{w['dispatched']:>11}{w['lost_attempts']:>5}")
    if s["worker_bad_frames"]:
        out.append(f"  bad frames seen by workers: {s['worker_bad_frames']}")
    out.append("")
    tp = s["throughput"]
    out.append(f"throughput (evaluations per {tp['bucket_s']:g} s, from the start of the log at {s['start']})")
    for b in tp["buckets"]:
        out.append(f"  +{_clock(b['offset_s']):<9}{b['evaluations']:>6}  {b['per_minute']:>9.1f}/min")
    if not tp["buckets"]:
        out.append("  (no evaluations)")
    out.append("")
    out.append("best loss per generation")
    if s["generations"]:
        out.append(f"  {'gen':>4}{'best':>11}{'median':>11}{'evaluated':>10}{'failed':>7}  best genotype")
        for g in s["generations"]:
            out.append(f"  {_num(g['generation'], 'd'):>4}{_num(g['best_loss']):>11}{_num(g['median_loss']):>11}"
                       f"{_num(g['evaluated'], 'd'):>10}{_num(g['failed'], 'd'):>7}  {g['best'] or '-'}")
    else:
        out.append("  (no generation.done lines)")
    warnings = {k: v for k, v in s["levels"].items() if k in ("warning", "error", "critical")}
    if warnings:
        out.append("")
        out.append("warnings and errors: " + ", ".join(f"{v} {k}" for k, v in warnings.items())
                   + "  (evovae logs trace TASK_ID ... shows one task's lines)")
    return "\n".join(out)


# ---------------------------------------------------------------------------------- trace

def trace(logs: Logs, query: str) -> list[Record]:
    """Every record about one task, in time order.

    ``query`` is a task id, a unique prefix of one (6 characters or more), or a
    genotype (``850|20|1000``: the lines of every task of that genotype).
    """
    ids = {r.get("task_id") for r in logs.records if isinstance(r.get("task_id"), str)}
    if "|" in query:
        wanted = {r.get("task_id") for r in logs.records if r.get("genotype") == query} - {None}
    elif query in ids:
        wanted = {query}
    elif len(query) >= 6:
        wanted = {tid for tid in ids if tid.startswith(query)}
    else:
        wanted = set()
    return [r for r in logs.records if r.get("task_id") in wanted]


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value if value and " " not in value and "=" not in value else json.dumps(value)
    return json.dumps(value, sort_keys=True)


def format_trace(records: Sequence[Record]) -> str:
    """One line per record: time, who, event, the other fields."""
    out = []
    for r in records:
        who = "head" if r.role == "search" else r.role
        if r.role == "worker" and r.get("worker_id"):
            who = f"worker {r.get('worker_id')}"
        if r.host:
            who = f"{who} @{r.host}"
        level = r.get("level", "info")
        event = r.event if level in ("info", "debug") else f"{r.event} [{level}]"
        skip = set(COMMON_FIELDS) | {"task_id"}
        if r.role == "worker":
            skip.add("worker_id")
        rest = "  ".join(f"{k}={_show(v)}" for k, v in r.fields.items() if k not in skip and v is not None)
        out.append(f"{_iso(r.time) or '?':<25} {who:<28} {event:<22} {rest}".rstrip())
    return "\n".join(out)


# ---------------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evovae logs", description="Read evovae's JSON logs (files, journalctl -o json/cat/short, '-' for "
                                        "standard input).")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    summary = sub.add_parser("summarize", help="per-worker busy/idle time, head counters, throughput, best loss "
                                               "per generation")
    summary.add_argument("files", nargs="+", metavar="FILE", help="log files ('-' for standard input, .gz read)")
    summary.add_argument("--json", action="store_true", help="print one JSON object")
    summary.add_argument("--bucket", type=float, default=60.0, metavar="SECONDS",
                         help="throughput bucket width (default 60)")
    tr = sub.add_parser("trace", help="every line about one task, across the head's and workers' logs, in time order")
    tr.add_argument("task", metavar="TASK_ID", help="a task id, a unique prefix of one (>= 6 characters), or a genotype")
    tr.add_argument("files", nargs="+", metavar="FILE", help="log files ('-' for standard input, .gz read)")
    tr.add_argument("--json", action="store_true", help="print the matching records as JSON lines")
    return parser


def _run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, stdin: TextIO | None) -> int:
    if args.files.count("-") > 1:
        stderr.write("evovae logs: error: '-' (standard input) may be given once\n")
        return 2
    try:
        logs = read_logs(args.files, stdin)
    except LogError as exc:
        stderr.write(f"evovae logs: error: {exc}\n")
        return 2
    if args.action == "summarize":
        if not (math.isfinite(args.bucket) and args.bucket > 0):
            stderr.write("evovae logs: error: --bucket must be a number of seconds > 0\n")
            return 2
        summary = summarize(logs, args.bucket)
        stdout.write((json.dumps(summary, indent=2) if args.json else format_summary(summary)) + "\n")
        return 0 if summary["records"] else 1
    found = trace(logs, args.task)
    if not found:
        stderr.write(f"evovae logs: no lines about task {args.task} in {len(args.files)} file(s) "
                     f"({len(logs.records)} records read)\n")
        return 1
    if args.json:
        for r in found:
            stdout.write(json.dumps({**r.fields, "_source": r.source, **({"_host": r.host} if r.host else {}),
                                     **({"_unit": r.unit} if r.unit else {})}) + "\n")
    else:
        ids = sorted({r.get("task_id") for r in found})
        if len(ids) > 1 or ids[0] != args.task:
            stdout.write(f"# tasks: {', '.join(ids)}\n")
        stdout.write(format_trace(found) + "\n")
    return 0


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
         stdin: TextIO | None = None) -> int:
    """``evovae logs summarize|trace ...``: 0 done, 1 nothing found, 2 bad usage or a missing file."""
    args = build_parser().parse_args(argv)
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        return _run(args, stdout, stderr, stdin)
    except BrokenPipeError:  # e.g. `evovae logs trace ... | head`
        try:  # so the interpreter's last flush of stdout does not complain again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
