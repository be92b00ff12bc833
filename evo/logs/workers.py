"""One worker's tally: from its own log (sessions, busy and idle time, evaluations) and from the head's
(hand-outs, results, lost attempts). :data:`OWN_LINE_HANDLERS` maps an event of the worker's own log to
what it adds."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .reading import Record

__all__ = ["OWN_LINE_HANDLERS", "WorkerTally"]


@dataclass
class WorkerTally:
    """What one worker id did, from its own log and from the head's."""

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
    member: bool = False  # seen completing a handshake or sending a valid message
    head_events: Counter = field(default_factory=Counter)  # the head's lines about it, per event
    identities: set = field(default_factory=set)  # its ventilator routing ids (hex), from worker.seen

    @property
    def is_worker(self) -> bool:
        return self.member or self.own_lines > 0

    def head_seen(self, t: float) -> None:
        self.head_first = t if self.head_first is None else self.head_first
        self.head_last = t

    def head_close(self, key: tuple, t: float) -> None:
        started = self.head_running.pop(key, None)
        if started is not None:
            self.head_busy_s += max(0.0, t - started)

    def end_task(self, t: float) -> None:
        """The running task ended at ``t`` (every caller checks that one is running)."""
        assert self.running is not None, "end_task without a running task"
        self.busy_s += max(0.0, t - self.running[2])
        self.running = None
        self.result_sent_at = None

    def close_session(self) -> None:
        if self.session_start is not None and self.session_last is not None:
            self.span_s += max(0.0, self.session_last - self.session_start)
        if self.running is not None:  # killed mid-task: busy until its last line
            self.end_task(self.session_last if self.session_last is not None else self.running[2])
            self.abandoned += 1
        self.session_start = self.session_last = None

    def own_line(self, record: Record) -> None:
        """A line of the worker's own log: sessions, then what its event adds."""
        t, event = record.time, record.event
        if event == "channel.connected" and self.session_start is not None:
            self.close_session()  # a new process with the same id (a restart)
        if self.session_start is None:
            self.session_start = t
            self.sessions += 1
        self.session_last = t
        self.own_lines += 1
        handler = OWN_LINE_HANDLERS.get(event)
        if handler is not None:
            handler(self, (record.get("task_id"), record.get("attempt")), record)


def _own_received(w: WorkerTally, key: tuple, r: Record) -> None:
    if w.running is not None:  # its end was not logged
        w.end_task(w.result_sent_at if w.result_sent_at is not None else r.time)
    w.running = (*key, r.time)


def _own_result_sent(w: WorkerTally, key: tuple, r: Record) -> None:
    if w.running is not None and w.running[:2] == key:
        w.result_sent_at = r.time


def _own_finished(w: WorkerTally, key: tuple, r: Record) -> None:
    w.evaluations += 1
    w.failures += r.get("ok") is False
    if w.running is not None and w.running[:2] == key:
        w.end_task(r.time)


def _own_abandoned(w: WorkerTally, key: tuple, r: Record) -> None:
    w.abandoned += 1
    if w.running is not None:
        w.end_task(r.time)


#: A worker's own event -> what it adds to that worker's tally.
OWN_LINE_HANDLERS: dict[str, Callable[[WorkerTally, tuple, Record], None]] = {
    "task.received": _own_received,
    "result.sent": _own_result_sent,
    "task.finished": _own_finished,
    "task.abandoned": _own_abandoned,
}
