"""The per-event accounting behind ``evovae logs summarize``: each record adds to a tally.

Table-driven: :data:`HEAD_HANDLERS` maps an event of the head's log to what it adds, and
``evo.logs.workers.OWN_LINE_HANDLERS`` an event of a worker's own log to what it adds to that worker.
An event in neither table is only counted (``events``, ``levels``).

Who is a worker: an id with lines of its own (a worker process's log), or one the head saw complete a
handshake or send a valid message (an event of :data:`MEMBER_EVENTS`). Any other id or peer the head
names (only ``frame.rejected``, ``result.unknown``, refused handshakes, ...) is a *rejected sender*.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .reading import COMMON_FIELDS, Record
from .workers import WorkerTally

__all__ = ["Accounting", "BrokerRun", "CLAIMED_ID_EVENTS", "HEAD_COUNTERS", "HEAD_HANDLERS", "MEMBER_EVENTS",
           "PeerTally"]

#: The head's counters, in the order the summary lists them.
HEAD_COUNTERS = ("dispatched", "tasks", "resends", "orphaned", "results_accepted", "result_errors", "duplicates",
                 "late_results", "unknown_results", "gave_up", "bad_frames", "auth_refused", "connections_refused",
                 "identity_mismatches", "forged_results", "revoked_messages", "fd_exhausted", "stale_readies",
                 "workers_seen", "workers_lost", "local_worker_restarts", "runs", "resumed")

#: Head events that make the worker id they name a worker: it completed the handshake (asked for work)
#: or sent a result for a task it was handed.
MEMBER_EVENTS = frozenset({
    "worker.seen", "task.dispatched", "task.resent", "task.failed", "task.orphaned", "task.completed",
    "result.accepted", "result.duplicate", "result.late", "worker.lost",
})

#: Head events whose ``worker_id`` is the id a sender claimed, not its own (a forged result names the
#: worker it impersonates): they say nothing about that worker.
CLAIMED_ID_EVENTS = frozenset({"security.identity_mismatch"})


def _count(value: Any) -> int:
    """A ``count`` field as a number of lines (0 if it is not a non-negative int)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass
class PeerTally:
    """What the head refused from one sender: a routing id or peer address (frames, handshakes,
    connections) or a CURVE key (messages from a revoked key or under another worker's id)."""

    sender: str | None
    sockets: set = field(default_factory=set)
    logged: int = 0  # frame.rejected lines
    suppressed: int = 0  # frames counted by frame.rejected.suppressed lines
    refused: int = 0  # refused handshakes and connections (suppressed ones included)
    dropped: int = 0  # messages dropped for their key: another worker's id, a revoked key (suppressed included)
    reasons: Counter = field(default_factory=Counter)
    keys: set = field(default_factory=set)  # CURVE public keys it offered (auth.key_refused)
    addresses: set = field(default_factory=set)  # where a key's messages came from
    first: float | None = None
    last: float | None = None

    def seen(self, r: Record) -> None:
        socket = r.get("socket")
        if isinstance(socket, str) and socket:
            self.sockets.add(socket)
        reason = r.get("reason")
        if isinstance(reason, str) and reason:
            self.reasons[reason] += 1
        self.first = r.time if self.first is None else self.first
        self.last = r.time


@dataclass
class BrokerRun:
    """One broker's life (``broker.started`` to ``broker.closed``) and its last counters."""

    started: float | None
    stats: dict[str, Any] | None = None
    source: str | None = None  # "broker.closed" or "broker.counters"
    at: float | None = None  # the time of that line
    closed: bool = False


def _sender(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def host_of(address: Any) -> str | None:
    """The host of a peer address: ``10.0.0.9:40100`` -> ``10.0.0.9``, ``[::1]:40100`` -> ``::1``; an
    address without a port as it is; None for none (or ``?``, the broker's "not known")."""
    if not isinstance(address, str) or address in ("", "?"):
        return None
    if address.startswith("[") and "]" in address:
        return address[1:address.index("]")]
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return host if port.isdigit() else address
    return address


class Accounting:
    """Every tally of one summary; :meth:`add` each record in time order, then :meth:`finish`."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerTally] = {}
        self.counters: dict[str, int] = dict.fromkeys(HEAD_COUNTERS, 0)
        self.dispatched_ids: set = set()
        self.gave_up_ids: set = set()
        self.seen_ids: set = set()
        self.generations: list[dict[str, Any]] = []
        self.head_evaluations: list[float] = []  # times of task.completed and task.gave_up
        self.head_eval_failures = 0
        self.worker_finishes: list[float] = []  # times of the workers' task.finished
        self.worker_bad_frames = 0
        self.frames: dict[tuple, PeerTally] = {}  # (socket, sender) -> bad frames from it
        self.refusals: dict[str, PeerTally] = {}  # peer address -> refused handshakes and connections
        self.keys: dict[str, PeerTally] = {}  # CURVE key -> its messages dropped
        self.broker_runs: list[BrokerRun] = []
        self.levels: Counter = Counter()
        self.events: Counter = Counter()

    def worker(self, wid: Any) -> WorkerTally | None:
        if not isinstance(wid, str) or not wid:
            return None
        if wid not in self.workers:
            self.workers[wid] = WorkerTally(wid)
        return self.workers[wid]

    def frame_peer(self, r: Record) -> PeerTally:
        socket, sender = _sender(r.get("socket")), _sender(r.get("sender"))
        peer = self.frames.setdefault((socket, sender), PeerTally(sender))
        peer.seen(r)
        return peer

    def refused_peer(self, r: Record) -> PeerTally | None:
        address = host_of(r.get("address"))  # a flood of connections from one host: one row, not one per port
        if address is None:
            return None
        peer = self.refusals.setdefault(address, PeerTally(address))
        peer.seen(r)
        key = _sender(r.get("client_key"))
        if key is not None:
            peer.keys.add(key)
        return peer

    def key_peer(self, r: Record) -> PeerTally | None:
        key = _sender(r.get("key")) or _sender(r.get("sender"))  # the .suppressed lines name it sender
        if key is None:
            return None
        peer = self.keys.setdefault(key, PeerTally(key))
        peer.seen(r)
        address = host_of(r.get("address"))
        if address is not None:
            peer.addresses.add(address)
        return peer

    def broker_run(self, *, new: bool = False) -> BrokerRun:
        """The current broker run; a new one at ``broker.started`` or when the last one has closed."""
        if new or not self.broker_runs or self.broker_runs[-1].closed:
            self.broker_runs.append(BrokerRun(started=None))
        return self.broker_runs[-1]

    def add(self, r: Record) -> None:
        event = r.event
        self.levels[str(r.get("level", "?"))] += 1
        self.events[event] += 1
        if r.role == "worker":
            self._add_worker_line(r)
            return
        w = None if event in CLAIMED_ID_EVENTS else self.worker(r.get("worker_id"))
        if w is not None:
            w.head_events[event] += 1
            w.member |= event in MEMBER_EVENTS
            if event != "task.completed":  # task.completed repeats the result's worker
                w.head_seen(r.time)
        handler = HEAD_HANDLERS.get(event)
        if handler is not None:
            handler(self, r, w)

    def _add_worker_line(self, r: Record) -> None:
        w = self.worker(r.get("worker_id"))
        if w is not None:
            w.own_line(r)
        if r.event == "task.finished":
            self.worker_finishes.append(r.time)
        elif r.event == "frame.rejected":
            self.worker_bad_frames += 1

    def finish(self) -> None:
        """Close what the logs left open: worker sessions and attempts still running at the end."""
        for w in self.workers.values():
            w.close_session()
            for key in list(w.head_running):  # still running when the head's log ends
                w.head_close(key, w.head_last if w.head_last is not None else 0.0)
        self.counters["tasks"] = len(self.dispatched_ids - {None})
        self.counters["gave_up"] = len(self.gave_up_ids - {None})

    def identity_owners(self) -> dict[str, str]:
        """Ventilator routing id (hex) -> the worker that used it."""
        return {identity: w.worker_id for w in self.workers.values() if w.is_worker for identity in w.identities}


# ---------------------------------------------------------------------------------- the head's events

Handler = Callable[[Accounting, Record, "WorkerTally | None"], None]


def _dispatched(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    acc.counters["dispatched"] += 1
    acc.dispatched_ids.add(r.get("task_id"))
    if w is not None:
        w.dispatched += 1
        w.head_running[(r.get("task_id"), r.get("attempt"))] = r.time


def _attempt_lost(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    if r.event == "task.resent":
        acc.counters["resends"] += 1
    else:  # task.failed: the last attempt was lost
        acc.gave_up_ids.add(r.get("task_id"))
    if w is not None:
        w.lost_attempts += 1
        w.head_close((r.get("task_id"), r.get("attempt")), r.time)


_RESULT_COUNTERS = {"result.accepted": "results_accepted", "result.duplicate": "duplicates",
                    "result.late": "late_results", "result.unknown": "unknown_results"}


def _result(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    acc.counters[_RESULT_COUNTERS[r.event]] += 1
    if r.event == "result.accepted" and r.get("ok") is False:
        acc.counters["result_errors"] += 1
    if w is not None and r.event != "result.unknown":
        w.results += 1
        w.accepted += r.event == "result.accepted"
        w.head_close((r.get("task_id"), r.get("attempt")), r.time)


def _completed(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    acc.head_evaluations.append(r.time)
    acc.head_eval_failures += r.get("ok") is False


def _gave_up(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    acc.head_evaluations.append(r.time)
    acc.head_eval_failures += 1
    acc.gave_up_ids.add(r.get("task_id"))


def _frame_rejected(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    acc.counters["bad_frames"] += 1
    acc.frame_peer(r).logged += 1


def _frames_suppressed(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    count = _count(r.get("count"))
    acc.counters["bad_frames"] += count
    acc.frame_peer(r).suppressed += count


def _auth_refused(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    count = _count(r.get("count")) if r.event.endswith(".suppressed") else 1
    acc.counters["auth_refused"] += count
    peer = acc.refused_peer(r)
    if peer is not None:
        peer.refused += count


def _connection_refused(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    count = _count(r.get("count")) if r.event.endswith(".suppressed") else 1
    acc.counters["connections_refused"] += count
    peer = acc.refused_peer(r)
    if peer is not None:
        peer.refused += count


def _dropped_for_key(counter: str) -> Handler:
    """A message dropped for the key that sent it (and its ``.suppressed`` summary)."""
    def handler(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
        count = _count(r.get("count")) if r.event.endswith(".suppressed") else 1
        acc.counters[counter] += count
        peer = acc.key_peer(r)
        if peer is not None:
            peer.dropped += count
    return handler


_mismatch_dropped = _dropped_for_key("identity_mismatches")


def _identity_mismatch(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    """A message dropped because its key was not handed the task or does not own the worker id; a
    ``result`` among them is a forged result, whether its task was in flight or already finished."""
    _mismatch_dropped(acc, r, w)
    if r.get("message") == "result":
        acc.counters["forged_results"] += _count(r.get("count")) if r.event.endswith(".suppressed") else 1


def _worker_seen(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    wid = r.get("worker_id")
    if r.get("returning") is not True and wid not in acc.seen_ids:
        acc.counters["workers_seen"] += 1
    acc.seen_ids.add(wid)
    identity = _sender(r.get("identity"))
    if w is not None and identity is not None:
        w.identities.add(identity)


def _worker_lost(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    acc.counters["workers_lost"] += 1
    if w is not None:
        w.lost += 1
        for running in list(w.head_running):  # its attempt is re-sent later; busy ends now
            w.head_close(running, r.time)


def _simple(counter: str) -> Handler:
    """One more of ``counter`` per line (``count`` more for a ``.suppressed`` line)."""
    def handler(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
        acc.counters[counter] += _count(r.get("count")) if r.event.endswith(".suppressed") else 1
    return handler


def _broker_started(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    acc.counters["runs"] += 1
    acc.broker_run(new=True).started = r.time


def _broker_counters(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    """``broker.counters`` (periodic) and ``broker.closed`` (the last word): the run's own counters."""
    run = acc.broker_run()
    run.stats = {k: v for k, v in r.fields.items() if k not in COMMON_FIELDS}
    run.source, run.at = r.event, r.time
    run.closed = r.event == "broker.closed"


def _replayed(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    tells = r.get("tells")
    acc.counters["resumed"] += isinstance(tells, int) and tells > 0


def _generation(acc: Accounting, r: Record, w: WorkerTally | None) -> None:
    number = r.get("generation")
    if r.get("replayed") is True and any(g["generation"] == number for g in acc.generations):
        return  # a resumed head re-reports the generations of its journal: keep the first report
    acc.generations.append({
        "generation": number, "best_loss": r.get("best_loss"), "median_loss": r.get("median_loss"),
        "best": r.get("best"), "evaluated": r.get("evaluated"), "failed": r.get("failed"),
        "duplicates": r.get("duplicates"), "total": r.get("total"), "replayed": r.get("replayed") is True,
        "time": r.time,
    })


#: An event of the head's log -> what it adds.
HEAD_HANDLERS: dict[str, Handler] = {
    "task.dispatched": _dispatched,
    "task.resent": _attempt_lost,
    "task.failed": _attempt_lost,
    "task.orphaned": _simple("orphaned"),
    "result.accepted": _result,
    "result.duplicate": _result,
    "result.late": _result,
    "result.unknown": _result,
    "task.completed": _completed,
    "task.gave_up": _gave_up,
    "frame.rejected": _frame_rejected,
    "frame.rejected.suppressed": _frames_suppressed,
    "auth.refused": _auth_refused,
    "auth.key_refused": _auth_refused,
    "auth.refused.suppressed": _auth_refused,
    "auth.key_refused.suppressed": _auth_refused,
    "connection.refused": _connection_refused,
    "connection.refused.suppressed": _connection_refused,
    "security.identity_mismatch": _identity_mismatch,
    "security.identity_mismatch.suppressed": _identity_mismatch,
    "auth.revoked_message": _dropped_for_key("revoked_messages"),
    "auth.revoked_message.suppressed": _dropped_for_key("revoked_messages"),
    "broker.fd_exhausted": _simple("fd_exhausted"),
    "broker.fd_exhausted.suppressed": _simple("fd_exhausted"),
    "ready.stale": _simple("stale_readies"),
    "ready.stale.suppressed": _simple("stale_readies"),
    "worker.seen": _worker_seen,
    "worker.lost": _worker_lost,
    "local_worker.exited": _simple("local_worker_restarts"),
    "broker.started": _broker_started,
    "broker.counters": _broker_counters,
    "broker.closed": _broker_counters,
    "run.replayed": _replayed,
    "generation.done": _generation,
}
