"""The broker's bookkeeping as a pure state machine: tasks and their attempts, workers and
their credit, leases, liveness, resends, give-ups and exactly-once completion.

No sockets and no clock: every method that depends on time takes ``now`` (seconds, any
monotonic origin), so the rules below are unit-tested with a fake clock value. The
:class:`~transport.broker.Broker` feeds it what its sockets read and sends what it says::

    leases.submit("t1", "850|20|1000", spec, now)
    leases.ready("gpu0", slots=1, identity=b"...", now=now)       # a Ready from the ventilator
    while (d := leases.next_dispatch()) is not None:               # credit: idle worker + queued task
        send(d.identity, d.wire()) and leases.dispatched(d, now) or leases.undeliverable(d, why)
    done = leases.result(result_message, now)                      # Done, or None (duplicate, late...)
    failed = leases.expire(now)                                    # lost attempts: resent, or Failed

The rules (docs/protocol.md, "Timing rules" and "Exactly-once semantics"):

* credit: a task goes only to a worker that said it is idle; a worker holds at most one;
* liveness and lease: a running attempt is lost when its worker was silent for
  ``liveness * heartbeat_s`` or its ``lease_s`` ran out; it is re-queued first in line,
  and after ``max_attempts`` lost attempts the task is :class:`Failed`;
* a Ready from the worker that holds a running attempt, ``heartbeat_s`` or more after the
  hand-out, means it lost the task: the attempt is orphaned and lost unless its Result
  arrives within ``heartbeat_s`` (the two travel on different sockets);
* a Ready counts only on the worker's current ventilator connection (routing id): once a
  worker id has spoken on a new connection, a Ready that still comes on one it replaced (the
  kernel delivering what it held through a network partition) changes nothing
  (``ready.stale``);
* exactly-once: the first Result for a pending task (from any attempt) completes it;
  every later one is dropped and counted;
* identity (with CURVE, ``bind_keys=True``): see :mod:`transport.identity`; a key removed
  from the allow-list loses its workers and its running attempts (:meth:`Leases.revoke`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, overload

import structlog

from transport.identity import Identities
from transport.outcomes import PLAIN, BrokerStats, Dispatch, Done, Failed, Sender
from transport.protocol import Heartbeat, Result, Task
from transport.throttle import RateLimiter

__all__ = ["BrokerStats", "Dispatch", "Done", "Failed", "Leases"]

log = structlog.get_logger(__name__)

_QUEUED = "queued"
_RUNNING = "running"
_ORPHANED = "orphaned"  # its worker asked for new work without a result; lost after a grace period
_COMPLETED = "completed"  # no longer pending: a result completed it (the state named in security events)
_FAILED = "failed"  # no longer pending: given up after max_attempts lost attempts
_RETIRED_ROUTES = 16  # replaced connections remembered per worker id
_STALE_LOG_EVERY_S = 10.0  # ready.stale: at most one line per worker id this often; the rest summed up


@dataclass
class _TaskState:
    task_id: str
    genotype: str
    spec: dict[str, Any]
    lease_s: float
    submitted_at: float
    attempt: int = 1
    state: str = _QUEUED
    worker_id: str | None = None
    worker_key: str | None = None  # the key of the worker running this attempt
    holders: set[str | None] = dataclasses.field(default_factory=set)  # keys handed any attempt of this task
    dispatched_at: float = 0.0
    last_heartbeat: float = 0.0
    lease_deadline: float = 0.0
    orphan_deadline: float = 0.0
    progress: float = 0.0
    history: list[str] = dataclasses.field(default_factory=list)


@dataclass
class _WorkerState:
    worker_id: str
    identity: bytes
    last_seen: float
    key: str | None = None  # the CURVE key of its first Ready (None in plain mode)
    slots: int = 1
    task: tuple[str, int] | None = None  # (task_id, attempt) last handed to it, until its result or Ready


@dataclass
class _Route:
    """The ventilator connections a worker id has spoken on: the current one (where its tasks go)
    and those it replaced, which a reconnecting worker never uses again."""

    current: bytes
    retired: collections.deque[bytes] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=_RETIRED_ROUTES))


def _check_settings(heartbeat_s: float, liveness: int, lease_s: float, max_attempts: int) -> None:
    if not (math.isfinite(heartbeat_s) and heartbeat_s > 0):
        raise ValueError(f"heartbeat_s must be a finite number > 0, got {heartbeat_s!r}")
    if isinstance(liveness, bool) or not isinstance(liveness, int) or liveness < 1:
        raise ValueError(f"liveness must be an int >= 1, got {liveness!r}")
    if not (math.isfinite(lease_s) and lease_s > 0):
        raise ValueError(f"lease_s must be a finite number > 0, got {lease_s!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 1000:
        raise ValueError(f"max_attempts must be an int in [1, 1000], got {max_attempts!r}")


class Leases:
    """Tasks, attempts, workers and credit; driven by messages and a clock value."""

    def __init__(self, *, heartbeat_s: float = 1.0, liveness: int = 3, lease_s: float = 3600.0,
                 max_attempts: int = 3, stats: BrokerStats | None = None, bind_keys: bool = False) -> None:
        _check_settings(heartbeat_s, liveness, lease_s, max_attempts)
        self.heartbeat_s = float(heartbeat_s)
        self.liveness = liveness
        self.lease_s = float(lease_s)
        self.max_attempts = max_attempts
        self.stats = BrokerStats() if stats is None else stats
        self.silence_s = liveness * self.heartbeat_s
        # a Ready this soon after a dispatch probably crossed the Task on the wire, and a
        # Result this late after its worker's Ready is still in time: see ready()
        self.grace_s = self.heartbeat_s
        self._tasks: dict[str, _TaskState] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._inflight: dict[str, _TaskState] = {}  # running or orphaned
        # finished task ids -> the keys that were handed one of its attempts (results bound to identity)
        self._done: dict[str, frozenset[str | None]] = {}
        self._failed: dict[str, frozenset[str | None]] = {}
        self._routes: dict[str, _Route] = {}  # worker id -> its connections; kept when the worker is dropped
        self._stale_log = RateLimiter(per_key=1, total=20, window_s=_STALE_LOG_EVERY_S)
        self._workers: dict[str, _WorkerState] = {}
        self._idle: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._ever_seen: set[str] = set()
        self.identities = Identities(bind_keys, self.stats)

    @property
    def pending(self) -> int:
        """Tasks queued or in flight (not yet Done or Failed)."""
        return len(self._tasks)

    @property
    def queued(self) -> int:
        """Tasks waiting for an idle worker."""
        return len(self._queue)

    # ------------------------------------------------------------------ tasks

    def submit(self, task_id: str, genotype: str, spec: dict[str, Any], now: float, *,
               lease_s: float | None = None) -> None:
        """Queue a task (at the back). Queued or in flight: a no-op. Done or Failed earlier:
        queued again with fresh attempts (the caller needs its result again). ProtocolError
        (a ValueError) when the task could not go on the wire."""
        lease = self.lease_s if lease_s is None else lease_s
        checked = Task(task_id=task_id, attempt=1, genotype=genotype, spec=spec, lease_s=lease)
        if task_id in self._tasks:
            log.debug("task.submit_ignored", task_id=task_id, reason="already pending")
            return
        if task_id in self._done or task_id in self._failed:
            self._done.pop(task_id, None)
            self._failed.pop(task_id, None)
            log.info("task.resubmitted", task_id=task_id)
        self._tasks[task_id] = _TaskState(task_id=task_id, genotype=checked.genotype, spec=checked.spec,
                                          lease_s=checked.lease_s, submitted_at=now)
        self._queue.append(task_id)
        self.stats.submitted += 1
        log.debug("task.queued", task_id=task_id, genotype=genotype, queued=len(self._queue))

    # ------------------------------------------------------------------ messages

    def ready(self, worker_id: str, slots: int, identity: bytes, now: float, sender: Sender = PLAIN) -> None:
        """A Ready from ``worker_id`` on the ventilator connection ``identity``: it is idle. On a
        connection the worker has replaced: ignored (``ready.stale``)."""
        known = self._workers.get(worker_id)
        if known is not None and not self.identities.may_claim(worker_id, known.key, sender, now):
            return
        if self._stale_route(worker_id, identity, now):
            return
        w = self._touch(worker_id, identity, now, sender)
        w.slots = slots
        t = self._running_task(w)
        if t is not None:
            if now - t.dispatched_at < self.grace_s:  # sent before the Task reached it: crossed on the wire
                log.debug("ready.crossed", worker_id=w.worker_id, task_id=t.task_id, attempt=t.attempt)
                return
            # it asks for work without a result: it lost the task (or the Result is a moment
            # behind on the other socket): lost unless the Result comes within the grace period
            t.state = _ORPHANED
            t.orphan_deadline = now + self.grace_s
            log.warning("task.orphaned", task_id=t.task_id, attempt=t.attempt, worker_id=w.worker_id,
                        grace_s=self.grace_s)
        w.task = None
        if w.worker_id not in self._idle:
            self._idle[w.worker_id] = None

    def heartbeat(self, msg: Heartbeat, now: float, sender: Sender = PLAIN) -> None:
        """A Heartbeat: keeps its attempt alive if that attempt runs on that worker (and key)."""
        t = self._tasks.get(msg.task_id)
        if not self._may_report(t, msg.task_id, sender, msg.worker_id, "heartbeat", now):
            return
        self._touch(msg.worker_id, None, now, sender)
        if (t is None or t.state != _RUNNING or t.attempt != msg.attempt or t.worker_id != msg.worker_id
                or t.worker_key != sender.key):
            self.stats.stale_heartbeats += 1
            log.debug("heartbeat.ignored", task_id=msg.task_id, attempt=msg.attempt, worker_id=msg.worker_id,
                      reason="attempt not running on this worker")
            return
        self.stats.heartbeats += 1
        t.last_heartbeat = now
        t.progress = msg.progress

    def result(self, msg: Result, now: float, sender: Sender = PLAIN) -> Done | None:
        """A Result: Done for the first one of a pending task, None for any other. With keys, one
        from a key that was never handed the task is forged, in flight or finished
        (``security.identity_mismatch``), not a duplicate."""
        t = self._tasks.get(msg.task_id)
        if not self._may_report(t, msg.task_id, sender, msg.worker_id, "result", now):
            return None
        w = self._touch(msg.worker_id, None, now, sender)
        if w is not None and w.task is not None and w.task[0] == msg.task_id:
            w.task = None  # it is done with it; it gets credit again with its next Ready
        fields = {"task_id": msg.task_id, "attempt": msg.attempt, "worker_id": msg.worker_id}
        if t is None:
            fields.update(key=sender.key, address=sender.address)
            if msg.task_id in self._done:
                self.stats.duplicates += 1
                log.info("result.duplicate", **fields)
            elif msg.task_id in self._failed:
                self.stats.late_results += 1
                log.info("result.late", reason="task already failed", **fields)
            else:
                self.stats.unknown_results += 1
                log.warning("result.unknown", **fields)
            return None
        if t.state == _QUEUED:  # a lost attempt came back after all
            self._queue.remove(t.task_id)
        del self._tasks[t.task_id]
        self._inflight.pop(t.task_id, None)
        self._done[t.task_id] = frozenset(t.holders | {sender.key})
        self.stats.completed += 1
        if not msg.ok:
            self.stats.task_errors += 1
        log.info("result.accepted", ok=msg.ok, error=msg.error or None, current_attempt=t.attempt,
                 total_s=round(now - t.submitted_at, 3), **fields)
        return Done(task_id=t.task_id, result=msg, peer_key=sender.key)

    # ------------------------------------------------------------------ hand-out

    def next_dispatch(self) -> Dispatch | None:
        """The next hand-out to make (the idle worker waiting longest, the task at the front
        of the queue), or None. Nothing changes until :meth:`dispatched` or
        :meth:`undeliverable` says how the send went."""
        if not self._queue or not self._idle:
            return None
        w = self._workers[next(iter(self._idle))]
        t = self._tasks[self._queue[0]]
        return Dispatch(task_id=t.task_id, attempt=t.attempt, genotype=t.genotype, spec=t.spec,
                        lease_s=t.lease_s, worker_id=w.worker_id, identity=w.identity)

    def dispatched(self, d: Dispatch, now: float) -> None:
        """The task of ``d`` reached the sockets: its attempt runs on that worker from ``now``."""
        self._idle.pop(d.worker_id)
        self._queue.popleft()
        t = self._tasks[d.task_id]
        t.state = _RUNNING
        self._inflight[d.task_id] = t
        t.worker_id = d.worker_id
        t.worker_key = self._workers[d.worker_id].key
        t.holders.add(t.worker_key)
        t.dispatched_at = t.last_heartbeat = now
        t.lease_deadline = now + t.lease_s
        t.progress = 0.0
        self._workers[d.worker_id].task = (d.task_id, t.attempt)
        self.stats.dispatched += 1
        log.info("task.dispatched", task_id=d.task_id, attempt=t.attempt, worker_id=d.worker_id,
                 genotype=t.genotype, lease_s=t.lease_s)

    def undeliverable(self, d: Dispatch, reason: str) -> None:
        """The send failed (the worker's connection is gone, or it does not read): the
        worker is dropped and the task stays first in line with the same attempt."""
        self._drop_worker(d.worker_id, reason)

    # ------------------------------------------------------------------ timers

    def expire(self, now: float) -> list[Failed]:
        """Lose the attempts whose lease ran out, whose worker went silent or that were
        orphaned past their grace period; drop idle workers that went silent."""
        outcomes: list[Failed] = []
        for t in list(self._inflight.values()):
            if t.state == _RUNNING:
                if now >= t.lease_deadline:
                    reason = f"lease of {t.lease_s:g} s ran out"
                elif now - t.last_heartbeat >= self.silence_s:
                    reason = f"no heartbeat for {now - t.last_heartbeat:.2f} s"
                    self._drop_worker(t.worker_id, f"silent for {now - t.last_heartbeat:.2f} s while running a task")
                else:
                    continue
            elif t.state == _ORPHANED and now >= t.orphan_deadline:
                reason = "worker asked for new work without returning a result"
            else:
                continue
            self._retry(t, reason, outcomes)
        for w in list(self._workers.values()):
            if self._running_task(w) is None and now - w.last_seen >= self.silence_s:
                self._drop_worker(w.worker_id, f"not heard from for {now - w.last_seen:.2f} s")
        return outcomes

    def next_deadline(self) -> float:
        """When the next lease, liveness or grace deadline falls (inf if none)."""
        soonest = math.inf
        for t in self._inflight.values():
            if t.state == _RUNNING:
                soonest = min(soonest, t.lease_deadline, t.last_heartbeat + self.silence_s)
            elif t.state == _ORPHANED:
                soonest = min(soonest, t.orphan_deadline)
        for w in self._workers.values():
            if self._running_task(w) is None:  # a busy worker is timed by its task
                soonest = min(soonest, w.last_seen + self.silence_s)
        return soonest

    # ------------------------------------------------------------------ the operator's view

    def workers(self, now: float) -> dict[str, dict[str, Any]]:
        """worker_id -> {"state": "idle"|"busy"|"unknown", "task_id", "attempt", "progress",
        "seen_s_ago"} for the workers alive now: they sent a valid Ready and were heard from
        within the silence limit ("unknown": neither idle nor running a task, e.g. it sent a
        result and its next Ready is due)."""
        out: dict[str, dict[str, Any]] = {}
        for wid, w in self._workers.items():
            if now - w.last_seen >= self.silence_s:
                continue  # its liveness expired: no longer counted, dropped at the next expire()
            task = self._running_task(w)
            if task is not None:
                state, tid, attempt, progress = "busy", task.task_id, task.attempt, task.progress
            else:
                state = "idle" if wid in self._idle else "unknown"
                tid, attempt, progress = None, None, None
            out[wid] = {"state": state, "task_id": tid, "attempt": attempt, "progress": progress,
                        "seen_s_ago": round(now - w.last_seen, 3)}
        return out

    def revoke(self, key: str, now: float) -> list[Failed]:
        """``key`` was removed from the allow-list: drop its workers, lose the attempts they
        run (resent, or Failed at the last attempt) and forget it as a holder of any task."""
        outcomes: list[Failed] = []
        for t in [t for t in self._inflight.values() if t.worker_key == key]:
            self._retry(t, "the worker's key was removed from the allow-list", outcomes)
        for t in self._tasks.values():
            t.holders.discard(key)
        for finished in (self._done, self._failed):
            for task_id in [tid for tid, holders in finished.items() if key in holders]:
                finished[task_id] = finished[task_id] - {key}
        for w in [w for w in self._workers.values() if w.key == key]:
            self._drop_worker(w.worker_id, "its key was removed from the allow-list")
        return outcomes

    def flush_logs(self, now: float, *, force: bool = False) -> None:
        """Log what the rate limits held back (security events, stale Ready messages)."""
        self.identities.flush(now, force=force)
        for worker_id, count in self._stale_log.summary(now, force=force):
            log.warning("ready.stale.suppressed", worker_id=worker_id, count=count)

    def next_log_flush(self) -> float:
        """When :meth:`flush_logs` next has something to say (inf: nothing held back)."""
        return min(self.identities.next_flush(), self._stale_log.next_summary())

    # ------------------------------------------------------------------ internals

    def _may_report(self, t: _TaskState | None, task_id: str, sender: Sender, worker_id: str, message: str,
                    now: float) -> bool:
        """The identity rule for a Result or Heartbeat about ``task_id`` (pending as ``t``, or finished)."""
        if t is not None:
            return self.identities.may_report(t.holders, sender, worker_id, task_id, message, now, task_state=t.state)
        for state, finished in ((_COMPLETED, self._done), (_FAILED, self._failed)):
            holders = finished.get(task_id)
            if holders is not None:
                return self.identities.may_report(set(holders), sender, worker_id, task_id, message, now,
                                                  task_state=state)
        return True  # an id this broker never had: result.unknown / heartbeat.ignored say so

    def _stale_route(self, worker_id: str, identity: bytes, now: float) -> bool:
        """Is ``identity`` a ventilator connection ``worker_id`` has replaced? A new one becomes its
        current connection (a reconnected DEALER gets a new routing id and never uses the old one
        again), so what the old one still delivers later is stale."""
        route = self._routes.get(worker_id)
        if route is None:
            self._routes[worker_id] = _Route(identity)
            return False
        if identity == route.current:
            return False
        if identity not in route.retired:
            if worker_id in self._workers:
                log.info("worker.reconnected", worker_id=worker_id, identity=identity.hex(),
                         replaced=route.current.hex())
            route.retired.append(route.current)
            route.current = identity
            return False
        self.stats.stale_readies += 1
        if self._stale_log.allow(worker_id, now):
            log.warning("ready.stale", worker_id=worker_id, identity=identity.hex(), current=route.current.hex(),
                        stale_readies=self.stats.stale_readies,
                        reason="a ready on a connection this worker has replaced: ignored")
        return True

    @overload
    def _touch(self, worker_id: str, identity: bytes, now: float, sender: Sender) -> _WorkerState: ...
    @overload
    def _touch(self, worker_id: str, identity: None, now: float, sender: Sender) -> _WorkerState | None: ...

    def _touch(self, worker_id: str, identity: bytes | None, now: float, sender: Sender) -> _WorkerState | None:
        """The worker, seen now; None for a sink message (no ``identity``) that does not count
        for a tracked worker. With the ventilator ``identity`` of a Ready, always the worker."""
        w = self._workers.get(worker_id)
        if w is not None and identity is None and not self.identities.speaks_for(w.key, sender):
            return None  # a sink message from another key does not keep this worker alive
        if w is None:
            if identity is None:  # heard of on the sink only: not routable, not tracked
                return None
            w = _WorkerState(worker_id=worker_id, identity=identity, last_seen=now, key=sender.key)
            self._workers[worker_id] = w
            returning = worker_id in self._ever_seen
            if not returning:
                self._ever_seen.add(worker_id)
                self.stats.workers_seen += 1
            log.info("worker.seen", worker_id=worker_id, identity=identity.hex(), returning=returning)
        if identity is not None:
            w.identity = identity  # a reconnected DEALER gets a new routing id
        w.last_seen = now
        return w

    def _running_task(self, w: _WorkerState) -> _TaskState | None:
        """The task attempt this worker is running, as far as the broker knows."""
        if w.task is None:
            return None
        t = self._tasks.get(w.task[0])
        if t is None or t.state != _RUNNING or t.worker_id != w.worker_id or t.attempt != w.task[1]:
            return None
        return t

    def _retry(self, t: _TaskState, reason: str, outcomes: list[Failed]) -> None:
        t.history.append(f"attempt {t.attempt} on {t.worker_id}: {reason}")
        fields = {"task_id": t.task_id, "attempt": t.attempt, "worker_id": t.worker_id, "reason": reason}
        del self._inflight[t.task_id]
        if t.attempt >= self.max_attempts:
            del self._tasks[t.task_id]
            self._failed[t.task_id] = frozenset(t.holders)
            self.stats.failures += 1
            lost = f"{t.attempt} attempt{'s' if t.attempt != 1 else ''} lost"
            summary = f"{lost}: " + "; ".join(t.history)
            log.error("task.failed", genotype=t.genotype, **fields)
            outcomes.append(Failed(task_id=t.task_id, attempts=t.attempt, reason=summary))
            return
        t.attempt += 1
        t.state = _QUEUED
        t.worker_id = t.worker_key = None
        t.progress = 0.0
        self._queue.appendleft(t.task_id)  # resends go first
        self.stats.resends += 1
        log.warning("task.resent", next_attempt=t.attempt, **fields)

    def _drop_worker(self, worker_id: str | None, reason: str) -> None:
        if worker_id is None:
            return
        w = self._workers.pop(worker_id, None)
        if w is None:
            return
        was_idle = worker_id in self._idle
        self._idle.pop(worker_id, None)
        self.stats.workers_lost += 1
        log.warning("worker.lost", worker_id=worker_id, reason=reason, was_idle=was_idle)
