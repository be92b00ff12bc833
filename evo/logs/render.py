"""Text for people: a summary (from :func:`evo.logs.summary.summarize`) and a trace, one line per record."""
from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from typing import Any

from .reading import COMMON_FIELDS, Record, iso

__all__ = ["format_summary", "format_trace"]

#: Rows of the per-socket-and-sender bad-frame table shown in text (the JSON has them all).
BAD_FRAME_ROWS = 10


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
    for section in (_overview, _head, _broker, _workers, _rejected, _throughput, _generations):
        out.extend(section(s))
    return "\n".join(out + _warnings(s))


def _overview(s: dict[str, Any]) -> list[str]:
    h = s["head"]
    resumed = f" ({h['resumed']} resumed from a journal)" if h["resumed"] else ""
    source = "the head's log" if s["evaluations_source"] == "head" else "the workers' logs (no head lines)"
    return [f"time {s['start']} .. {s['end']} ({_duration(s['duration_s'])}), {h['runs']} head run(s){resumed}",
            f"evaluations {s['evaluations']} (failed {s['evaluation_failures']}), "
            f"{_num(s['evaluations_per_minute'], '.1f')} per minute  [counted from {source}]"]


def _head(s: dict[str, Any]) -> list[str]:
    h = s["head"]
    rows = [("tasks dispatched", f"{h['dispatched']} ({h['tasks']} distinct tasks)"),
            ("resends", h["resends"]), ("orphaned attempts", h["orphaned"]),
            ("results accepted", f"{h['results_accepted']} ({h['result_errors']} reported a failed training)"),
            ("duplicate results", h["duplicates"]), ("late results", h["late_results"]),
            ("unknown results", h["unknown_results"]), ("gave up (failed tasks)", h["gave_up"]),
            ("bad frames", h["bad_frames"]), ("refused handshakes", h["auth_refused"]),
            ("refused connections", h["connections_refused"]), ("forged ids (CURVE)", h["identity_mismatches"]),
            ("forged results (CURVE)", h["forged_results"]),
            ("revoked-key messages", h["revoked_messages"]), ("out of descriptors", h["fd_exhausted"]),
            ("stale readies", h["stale_readies"]), ("workers seen", h["workers_seen"]),
            ("workers lost", h["workers_lost"]), ("local worker restarts", h["local_worker_restarts"])]
    return ["", "head"] + [f"  {name:<24}{value}" for name, value in rows]


def _broker(s: dict[str, Any]) -> list[str]:
    h = s["head"]
    stats, source, at = h["broker_stats"], h["broker_stats_from"], h["broker_stats_at"]
    if stats is None:
        why = ("no broker.closed or broker.counters line in its run" if s["broker_runs"]
               else "no broker lines")
        return ["", f"broker's own counters: none ({why})"]
    if source == "broker.closed":
        title = f"broker's own counters (last run, from broker.closed at {at})"
    else:
        title = (f"broker's own counters (last run, from its last broker.counters line at {at}: no broker.closed, "
                 "the head did not stop cleanly, e.g. kill -9)")
    pairs = "  ".join(f"{k}={v}" for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    return ["", title, *textwrap.wrap(pairs, width=110, initial_indent="  ", subsequent_indent="  ",
                                         break_on_hyphens=False)]


def _workers(s: dict[str, Any]) -> list[str]:
    workers = s["workers"]
    out = ["", f"workers ({len(workers)}; * = seen in the head's log only: busy = dispatch to result)"]
    if workers:
        out.append(f"  {'worker':<32}{'evals':>6}{'failed':>7}{'busy':>10}{'idle':>10}{'util':>6}"
                   f"{'dispatched':>11}{'lost':>5}")
    for w in workers:
        name = w["worker_id"] + ("*" if w["source"] == "head" else "")
        util = "-" if w["utilisation"] is None else f"{100 * w['utilisation']:.0f}%"
        out.append(f"  {name:<32}{w['evaluations']:>6}{_num(w['failures'], 'd'):>7}"
                   f"{_duration(w['busy_s']):>10}{_duration(w['idle_s']):>10}{util:>6}"
                   f"{w['dispatched']:>11}{w['lost_attempts']:>5}")
    bad = [f"{w['worker_id']} {w['bad_frames']}" for w in workers if w["bad_frames"]]
    if bad:
        out.append(f"  bad frames the head rejected from workers: {', '.join(bad)}")
    if s["worker_bad_frames"]:
        out.append(f"  bad frames seen by workers: {s['worker_bad_frames']}")
    return out


def _rejected(s: dict[str, Any]) -> list[str]:
    rows, frames = s["rejected_senders"], s["bad_frames"]
    out: list[str] = []
    if rows:
        out += ["", f"rejected senders ({len(rows)}; no handshake and no valid message: not counted as workers)",
                f"  {'sender':<42}{'kind':<11}{'sockets':<16}{'frames':>7}{'suppressed':>11}{'refused':>8}"
                f"{'dropped':>8}  other"]
    for r in rows:
        other = ", ".join(f"{k} {v}" for k, v in r["other"].items()) or "-"
        out.append(f"  {r['sender'] or '?':<42}{r['kind']:<11}{','.join(r['sockets']) or '-':<16}"
                   f"{r['bad_frames']:>7}{r['suppressed']:>11}{r['refused']:>8}{r['dropped']:>8}  {other}")
        if r["reasons"]:
            reason, n = next(iter(r["reasons"].items()))
            out.append(f"    most often ({n}x): {reason}")
        if r["keys"]:
            out.append(f"    keys offered: {', '.join(r['keys'])}")
        if r["addresses"]:
            out.append(f"    from: {', '.join(r['addresses'])}")
    if frames:
        out += ["", "bad frames by socket and sender (logged one by one + suppressed)"]
        for f in frames[:BAD_FRAME_ROWS]:
            who = f" (worker {f['worker_id']})" if f["worker_id"] else ""
            out.append(f"  {f['socket'] or '?':<12}{(f['sender'] or '?') + who:<48}{f['logged']:>7} +"
                       f"{f['suppressed']:>8} = {f['total']}")
        if len(frames) > BAD_FRAME_ROWS:
            out.append(f"  ... {len(frames) - BAD_FRAME_ROWS} more (--json lists them all)")
    return out


def _throughput(s: dict[str, Any]) -> list[str]:
    tp = s["throughput"]
    out = ["", f"throughput (evaluations per {tp['bucket_s']:g} s, from the start of the log at {s['start']})"]
    out += [f"  +{_clock(b['offset_s']):<9}{b['evaluations']:>6}  {b['per_minute']:>9.1f}/min" for b in tp["buckets"]]
    return out if tp["buckets"] else [*out, "  (no evaluations)"]


def _generations(s: dict[str, Any]) -> list[str]:
    out = ["", "best loss per generation"]
    if not s["generations"]:
        return [*out, "  (no generation.done lines)"]
    out.append(f"  {'gen':>4}{'best':>11}{'median':>11}{'evaluated':>10}{'failed':>7}  best genotype")
    for g in s["generations"]:
        out.append(f"  {_num(g['generation'], 'd'):>4}{_num(g['best_loss']):>11}{_num(g['median_loss']):>11}"
                   f"{_num(g['evaluated'], 'd'):>10}{_num(g['failed'], 'd'):>7}  {g['best'] or '-'}")
    return out


def _warnings(s: dict[str, Any]) -> list[str]:
    warnings = {k: v for k, v in s["levels"].items() if k in ("warning", "error", "critical")}
    if not warnings:
        return []
    return ["", "warnings and errors: " + ", ".join(f"{v} {k}" for k, v in warnings.items())
            + "  (evovae logs trace TASK_ID ... shows one task's lines)"]


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
        out.append(f"{iso(r.time) or '?':<25} {who:<28} {event:<22} {rest}".rstrip())
    return "\n".join(out)
