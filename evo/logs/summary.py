"""``evovae logs summarize``: what a run did, as one JSON-ready dict (docs/logging.md lists every field)."""
from __future__ import annotations

import math
from typing import Any

from .accounting import Accounting, BrokerRun, PeerTally
from .reading import Logs, iso
from .workers import WorkerTally

__all__ = ["summarize"]

#: Reasons listed per rejected sender (the most frequent first).
TOP_REASONS = 3


def summarize(logs: Logs, bucket_s: float = 60.0) -> dict[str, Any]:
    """What the run did, from its records: see docs/logging.md for every field."""
    if not (math.isfinite(bucket_s) and bucket_s > 0):
        raise ValueError(f"bucket must be a number of seconds > 0, got {bucket_s!r}")
    acc = Accounting()
    for record in logs.records:
        acc.add(record)
    acc.finish()
    times = [r.time for r in logs.records if math.isfinite(r.time)]
    start: float | None = min(times) if times else None
    end: float | None = max(times) if times else None
    duration = (end - start) if start is not None and end is not None else 0.0
    have_head = bool(acc.head_evaluations) or acc.counters["dispatched"] > 0
    finish_times = acc.head_evaluations if have_head else acc.worker_finishes
    evaluations = len(finish_times)
    owners = acc.identity_owners()
    workers = [w for w in acc.workers.values() if w.is_worker]
    return {
        "files": list(logs.files),
        "lines": logs.lines,
        "records": len(logs.records),
        "ignored_lines": logs.ignored,
        "start": iso(start),
        "end": iso(end),
        "duration_s": round(duration, 3),
        "evaluations": evaluations,
        "evaluation_failures": acc.head_eval_failures if have_head else sum(w.failures for w in workers),
        "evaluations_source": "head" if have_head else "workers",
        "evaluations_per_minute": round(evaluations * 60.0 / duration, 3) if duration > 0 else None,
        "head": {**acc.counters, **_broker_stats(acc)},
        "broker_runs": [_broker_run(run) for run in acc.broker_runs],
        "workers": [_worker_row(w, _frames_of(acc, w)) for w in sorted(workers, key=lambda w: w.worker_id)],
        "worker_bad_frames": acc.worker_bad_frames,
        "bad_frames": _bad_frames(acc, owners),
        "rejected_senders": _rejected_senders(acc, owners),
        "throughput": {"bucket_s": bucket_s, "buckets": _buckets(finish_times, start, bucket_s)},
        "generations": [{**g, "time": iso(g["time"])} for g in acc.generations],
        "levels": dict(sorted(acc.levels.items())),
        "events": dict(sorted(acc.events.items())),
    }


def _buckets(finish_times: list[float], start: float | None, bucket_s: float) -> list[dict[str, Any]]:
    """Evaluations per ``bucket_s`` seconds from ``start``, empty buckets included."""
    if not finish_times or start is None:
        return []
    counts: dict[int, int] = {}
    for t in finish_times:
        index = int((t - start) // bucket_s)
        counts[index] = counts.get(index, 0) + 1
    return [{"start": iso(start + index * bucket_s), "offset_s": round(index * bucket_s, 3),
             "evaluations": counts.get(index, 0), "per_minute": round(counts.get(index, 0) * 60.0 / bucket_s, 3)}
            for index in range(max(counts) + 1)]


def _broker_stats(acc: Accounting) -> dict[str, Any]:
    """The last broker run's own counters: its ``broker.closed`` line, else its last ``broker.counters``
    line (a head killed with kill -9 never logs ``broker.closed``), and which of the two it was."""
    run = acc.broker_runs[-1] if acc.broker_runs else None
    if run is None or run.stats is None:
        return {"broker_stats": None, "broker_stats_from": None, "broker_stats_at": None}
    return {"broker_stats": run.stats, "broker_stats_from": run.source, "broker_stats_at": iso(run.at)}


def _broker_run(run: BrokerRun) -> dict[str, Any]:
    return {"started": iso(run.started), "stats": run.stats, "stats_from": run.source, "stats_at": iso(run.at),
            "closed": run.closed}


def _frames_of(acc: Accounting, w: WorkerTally) -> int:
    """Frames the head rejected from one of the worker's ventilator routing ids."""
    return sum(p.logged + p.suppressed for (_, sender), p in acc.frames.items() if sender in w.identities)


def _worker_row(w: WorkerTally, bad_frames: int) -> dict[str, Any]:
    from_worker = w.own_lines > 0
    if from_worker:
        evaluations, failures, busy, span = w.evaluations, w.failures, w.busy_s, w.span_s
    else:  # only the head's view: dispatch -> result (or loss) of each attempt
        evaluations, failures, busy = w.results, None, w.head_busy_s
        span = (w.head_last - w.head_first) if w.head_first is not None and w.head_last is not None else 0.0
    return {
        "worker_id": w.worker_id,
        "source": "worker" if from_worker else "head",
        "evaluations": evaluations,
        "failures": failures,
        "abandoned": w.abandoned if from_worker else None,
        "busy_s": round(busy, 3),
        "idle_s": round(max(0.0, span - busy), 3),
        "span_s": round(span, 3),
        "utilisation": round(busy / span, 4) if span > 0 else None,
        "sessions": w.sessions if from_worker else None,
        "dispatched": w.dispatched,
        "results": w.results,
        "accepted": w.accepted,
        "lost_attempts": w.lost_attempts,
        "lost": w.lost,
        "bad_frames": bad_frames,
    }


def _bad_frames(acc: Accounting, owners: dict[str, str]) -> list[dict[str, Any]]:
    """Rejected frames per socket and sender (logged one by one, and suppressed), the most first."""
    rows = [{"socket": socket, "sender": sender, "worker_id": owners.get(sender) if sender else None,
             "logged": p.logged, "suppressed": p.suppressed, "total": p.logged + p.suppressed}
            for (socket, sender), p in acc.frames.items()]
    return sorted(rows, key=lambda row: (-row["total"], str(row["socket"]), str(row["sender"])))


def _peer_row(sender: str | None, kind: str) -> dict[str, Any]:
    return {"sender": sender, "kind": kind, "sockets": set(), "bad_frames": 0, "suppressed": 0, "refused": 0,
            "dropped": 0, "other": {}, "reasons": {}, "keys": set(), "addresses": set(), "first": None, "last": None}


def _merge_peer(row: dict[str, Any], p: PeerTally) -> None:
    row["sockets"] |= p.sockets
    row["bad_frames"] += p.logged + p.suppressed
    row["suppressed"] += p.suppressed
    row["refused"] += p.refused
    row["dropped"] += p.dropped
    row["keys"] |= p.keys
    row["addresses"] |= p.addresses
    for reason, n in p.reasons.items():
        row["reasons"][reason] = row["reasons"].get(reason, 0) + n
    row["first"] = p.first if row["first"] is None else min(row["first"], p.first)
    row["last"] = p.last if row["last"] is None else max(row["last"], p.last)


def _rejected_senders(acc: Accounting, owners: dict[str, str]) -> list[dict[str, Any]]:
    """Senders that are not workers: peers whose frames were rejected or whose handshake or connection
    was refused, CURVE keys whose messages were dropped (another worker's id, a revoked key), and worker
    ids the head only named in lines of no worker (e.g. ``result.unknown``)."""
    rows: dict[tuple, dict[str, Any]] = {}
    for (_, sender), p in acc.frames.items():
        if sender is None or sender not in owners:
            _merge_peer(rows.setdefault(("peer", sender), _peer_row(sender, "peer")), p)
    for address, p in acc.refusals.items():
        _merge_peer(rows.setdefault(("peer", address), _peer_row(address, "peer")), p)
    for key, p in acc.keys.items():
        _merge_peer(rows.setdefault(("key", key), _peer_row(key, "key")), p)
    for w in acc.workers.values():
        if not w.is_worker:
            row = rows.setdefault(("worker_id", w.worker_id), _peer_row(w.worker_id, "worker_id"))
            row.update(other=dict(sorted(w.head_events.items())), first=w.head_first, last=w.head_last)
    out = []
    for row in rows.values():
        top = sorted(row["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
        out.append({**row, "sockets": sorted(row["sockets"]), "keys": sorted(row["keys"]),
                    "addresses": sorted(row["addresses"]), "reasons": dict(top), "first": iso(row["first"]),
                    "last": iso(row["last"])})
    return sorted(out, key=lambda r: (-(r["bad_frames"] + r["refused"] + r["dropped"] + sum(r["other"].values())),
                                      r["kind"], str(r["sender"])))
