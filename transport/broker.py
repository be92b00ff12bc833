"""Head side of the transport: ventilator + sink + lease/resend bookkeeping.

One :class:`Broker` owns two bound sockets and is driven by :meth:`Broker.poll` from a
single thread (the head's main loop)::

    with Broker("tcp://*:5557", "tcp://*:5558") as broker:
        for task_id, genotype, spec in work:
            broker.submit(task_id, genotype, spec)
        while broker.pending:
            for outcome in broker.poll(1.0):      # never blocks longer than 1 s
                if isinstance(outcome, Done): ...   # outcome.result.ok may be False
                else: ...                          # Failed: gave up after max_attempts

Reliability rules (docs/protocol.md has them in full):

* credit: a task goes only to a worker that said it is idle (``Ready``); a worker holds
  at most one task;
* liveness and lease: a running attempt is re-sent when its worker has been silent for
  ``liveness * heartbeat_s`` or when its ``lease_s`` ran out; after ``max_attempts``
  attempts the task becomes :class:`Failed`;
* exactly-once: the first ``Result`` for a pending task (from any attempt) completes it;
  every later one is dropped and counted;
* a bad frame is logged (``frame.rejected``), counted and dropped; ``poll`` goes on;
* with ``curve=CurveServer(...)`` both sockets are CURVE servers and a ZAP handler admits
  only the workers whose public key is on the allow-list; refused handshakes are counted
  (``stats.handshake_failures``) and logged (``auth.refused``, ``auth.key_refused``).
  Without it the broker is plain TCP and says so (``auth.disabled``).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import structlog
import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from transport.codec import decode, pack_checked
from transport.keys import CurveServer, is_loopback_endpoint
from transport.protocol import Heartbeat, ProtocolError, Ready, Result, Task

__all__ = ["Broker", "BrokerStats", "Done", "Failed"]

log = structlog.get_logger(__name__)

_QUEUED = "queued"
_RUNNING = "running"
_ORPHANED = "orphaned"  # its worker asked for new work without a result; re-sent after a grace period

_DRAIN_BATCH = 512  # messages read per socket per round, so timers stay on time under a flood
_POLLIN = int(zmq.POLLIN)  # a plain int: IntFlag arithmetic costs microseconds per call on the hot path
_REJECT_LOG_PER_S = 20  # frame.rejected lines per second before they are summarised
_AUTH_LOG_PER_S = 20  # auth.refused / auth.key_refused lines per second before they are summarised
ZAP_DOMAIN = "evovae"  # the ZAP domain of the broker's CURVE sockets
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


@dataclass(frozen=True)
class Done:
    """A task finished: the first Result received for it (``result.ok`` may be False)."""

    task_id: str
    result: Result


@dataclass(frozen=True)
class Failed:
    """The broker gave up on a task: ``attempts`` attempts were lost (lease expired,
    worker silent, or worker asked for work without returning a result)."""

    task_id: str
    attempts: int
    reason: str


@dataclass
class BrokerStats:
    """Counters since the broker started (all ints)."""

    submitted: int = 0
    dispatched: int = 0  # Task messages sent (first attempts and resends)
    completed: int = 0  # Done outcomes (ok or not)
    task_errors: int = 0  # Done outcomes with result.ok False
    resends: int = 0  # attempts re-queued after a lost attempt
    duplicates: int = 0  # results for tasks already done (late attempt, replay, duplicate)
    late_results: int = 0  # results for tasks that had already Failed
    unknown_results: int = 0  # results for task ids this broker never had
    failures: int = 0  # Failed outcomes
    bad_frames: int = 0  # frames rejected (shape, msgpack, schema, wrong socket)
    heartbeats: int = 0  # heartbeats applied to a running attempt
    stale_heartbeats: int = 0  # heartbeats for attempts not running (ignored)
    workers_seen: int = 0  # distinct worker ids ever seen
    workers_lost: int = 0  # times a worker was dropped for silence or an unreachable socket
    handshake_failures: int = 0  # CURVE only: connections refused at the handshake (plaintext, wrong keys, not allowed)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass
class _TaskState:
    task_id: str
    genotype: str
    spec: dict
    lease_s: float
    submitted_at: float
    attempt: int = 1
    state: str = _QUEUED
    worker_id: str | None = None
    dispatched_at: float = 0.0
    last_heartbeat: float = 0.0
    lease_deadline: float = 0.0
    orphan_deadline: float = 0.0
    progress: float = 0.0
    history: list = dataclasses.field(default_factory=list)


@dataclass
class _WorkerState:
    worker_id: str
    identity: bytes
    last_seen: float
    slots: int = 1
    task: tuple | None = None  # (task_id, attempt) last handed to it, until its result or Ready


class Broker:
    """Ventilator (ROUTER) + sink (PULL) with credit hand-out, leases and resends."""

    def __init__(
        self,
        ventilator: str = "tcp://*:5557",
        sink: str = "tcp://*:5558",
        *,
        heartbeat_s: float = 1.0,
        liveness: int = 3,
        lease_s: float = 3600.0,
        max_attempts: int = 3,
        max_message_bytes: int = 1 << 20,
        context: zmq.Context | None = None,
        clock: Callable[[], float] = time.monotonic,
        curve: CurveServer | None = None,
    ) -> None:
        """``curve``: make both sockets CURVE servers that admit only ``curve.allowed``
        client keys (a ZAP handler runs on the broker's context; one CURVE broker per
        context).  None: plain TCP, logged as a warning (``auth.disabled``)."""
        if curve is not None and not isinstance(curve, CurveServer):
            raise TypeError(f"curve must be a CurveServer or None, got {type(curve).__name__}")
        if not (math.isfinite(heartbeat_s) and heartbeat_s > 0):
            raise ValueError(f"heartbeat_s must be a finite number > 0, got {heartbeat_s!r}")
        if isinstance(liveness, bool) or not isinstance(liveness, int) or liveness < 1:
            raise ValueError(f"liveness must be an int >= 1, got {liveness!r}")
        if not (math.isfinite(lease_s) and lease_s > 0):
            raise ValueError(f"lease_s must be a finite number > 0, got {lease_s!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 1000:
            raise ValueError(f"max_attempts must be an int in [1, 1000], got {max_attempts!r}")
        if isinstance(max_message_bytes, bool) or not isinstance(max_message_bytes, int) or max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be an int >= 1024, got {max_message_bytes!r}")

        self.heartbeat_s = float(heartbeat_s)
        self.liveness = liveness
        self.lease_s = float(lease_s)
        self.max_attempts = max_attempts
        self.max_message_bytes = max_message_bytes
        self.stats = BrokerStats()
        self._silence_s = liveness * self.heartbeat_s
        # a Ready this soon after a dispatch probably crossed the Task on the wire, and a
        # Result this late after its worker's Ready is still in time: see _on_ready
        self._grace_s = self.heartbeat_s
        self._clock = clock

        self._tasks: dict[str, _TaskState] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._inflight: dict[str, _TaskState] = {}  # running or orphaned
        self._done: set[str] = set()
        self._failed: set[str] = set()
        self._workers: dict[str, _WorkerState] = {}
        self._idle: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._ever_seen: set[str] = set()

        self._reject_window = 0.0
        self._reject_logged = 0
        self._reject_suppressed = 0
        self._closed = False

        self._own_context = context is None
        self._ctx = zmq.Context() if context is None else context
        self._router: zmq.Socket | None = None
        self._pull: zmq.Socket | None = None
        self._curve = curve
        self._auth: _AllowList | None = None
        self._monitors: list[tuple[str, zmq.Socket, zmq.Socket]] = []  # (name, socket, its monitor)
        self._auth_log = _RateLimitedLog("auth.refused.suppressed")
        try:
            if curve is not None:
                # the ZAP handler must run before a CURVE socket binds (with ZAP_ENFORCE_DOMAIN
                # libzmq then refuses every client while no handler answers)
                self._auth = _AllowList(self._ctx, curve.allowed)
            # ROUTER, bind, ventilator endpoint: workers' DEALERs connect; frames [identity, payload]
            self._router = self._ctx.socket(zmq.ROUTER)
            self._router.setsockopt(zmq.LINGER, 0)
            self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to a vanished worker raises
            self._router.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
            self._secure("ventilator", self._router)
            self._router.bind(ventilator)
            self.ventilator_endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)

            # PULL, bind, sink endpoint: workers' PUSH sockets connect; one frame per message
            self._pull = self._ctx.socket(zmq.PULL)
            self._pull.setsockopt(zmq.LINGER, 0)
            self._pull.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
            self._secure("sink", self._pull)
            self._pull.bind(sink)
            self.sink_endpoint: str = self._pull.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException:
            self.close()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self._pull, zmq.POLLIN)
        self._poller.register(self._router, zmq.POLLIN)
        for _, _, monitor in self._monitors:
            self._poller.register(monitor, zmq.POLLIN)
        log.info(
            "broker.started",
            ventilator=self.ventilator_endpoint,
            sink=self.sink_endpoint,
            heartbeat_s=self.heartbeat_s,
            liveness=liveness,
            lease_s=self.lease_s,
            max_attempts=max_attempts,
            max_message_bytes=max_message_bytes,
        )
        if curve is not None:
            log.info("auth.enabled", mechanism="CURVE", allowed_keys=len(curve.allowed),
                     server_key=curve.public_key.decode("ascii"), zap_domain=ZAP_DOMAIN)
        else:  # a warning where other machines can reach the ports; on loopback, plain is the design
            local = is_loopback_endpoint(self.ventilator_endpoint) and is_loopback_endpoint(self.sink_endpoint)
            (log.info if local else log.warning)(
                "auth.disabled", mechanism="NULL", loopback=local,
                reason="no CURVE keys: traffic is plaintext, and any peer that reaches the ports can "
                       "take tasks and send results")

    def _secure(self, name: str, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server checked by the ZAP handler, and watch its handshakes."""
        curve = self._curve
        if curve is None:
            return
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public_key)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        try:  # no ZAP answer -> refuse the client (libzmq's default would admit any key)
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        except (AttributeError, zmq.ZMQError) as exc:
            log.warning("auth.enforce_unavailable", socket=name, error=str(exc),
                        note="libzmq admits any CURVE key if the ZAP handler stops; it runs until close()")
        monitor = sock.get_monitor_socket(_HANDSHAKE_FAILED)
        monitor.setsockopt(zmq.LINGER, 0)
        self._monitors.append((name, sock, monitor))

    # ------------------------------------------------------------------ public API

    def submit(self, task_id: str, genotype: str, spec: dict, *, lease_s: float | None = None) -> None:
        """Queue a task for hand-out (at the back of the queue).

        A task id that is queued or in flight is a no-op. A task id that completed or
        Failed earlier is queued again with fresh attempts: the broker keeps no results,
        and a caller that submits an id again needs its result again (e.g. a second
        search through the same broker).
        Raises ProtocolError (a ValueError) when the id, genotype or spec would not
        pass the wire checks.  ``lease_s`` overrides the broker's lease for this task.
        """
        self._check_open()
        lease = self.lease_s if lease_s is None else lease_s
        checked = Task(task_id=task_id, attempt=1, genotype=genotype, spec=spec, lease_s=lease)
        if task_id in self._tasks:
            log.debug("task.submit_ignored", task_id=task_id, reason="already pending")
            return
        if task_id in self._done or task_id in self._failed:
            self._done.discard(task_id)
            self._failed.discard(task_id)
            log.info("task.resubmitted", task_id=task_id)
        self._tasks[task_id] = _TaskState(
            task_id=task_id,
            genotype=checked.genotype,
            spec=checked.spec,
            lease_s=checked.lease_s,
            submitted_at=self._clock(),
        )
        self._queue.append(task_id)
        self.stats.submitted += 1
        log.debug("task.queued", task_id=task_id, genotype=genotype, queued=len(self._queue))

    def poll(self, timeout_s: float) -> list[Done | Failed]:
        """Do the broker's work for at most ``timeout_s`` seconds.

        Reads ready/heartbeat/result frames, hands queued tasks to idle workers, expires
        leases and silent workers.  Returns as soon as at least one outcome became final
        (after reading everything already waiting), or an empty list at the timeout.
        ``timeout_s=0`` does one non-blocking round.
        """
        self._check_open()
        timeout_s = float(timeout_s)
        if math.isnan(timeout_s) or math.isinf(timeout_s):
            raise ValueError(f"timeout_s must be finite, got {timeout_s!r}")
        deadline = self._clock() + max(0.0, timeout_s)
        outcomes: list[Done | Failed] = []
        while True:
            self._drain(outcomes)
            now = self._clock()
            self._expire(now, outcomes)
            self._dispatch(now)
            if outcomes:
                return outcomes
            now = self._clock()
            remaining = deadline - now
            if remaining <= 0:
                return outcomes
            wait = min(remaining, max(0.0, self._next_timer(now) - now))
            self._poller.poll(max(1, math.ceil(wait * 1000)))

    @property
    def pending(self) -> int:
        """Tasks queued or in flight (not yet Done or Failed)."""
        return len(self._tasks)

    @property
    def queued(self) -> int:
        """Tasks waiting for an idle worker."""
        return len(self._queue)

    def workers(self) -> dict[str, dict[str, Any]]:
        """worker_id -> {"state": "idle"|"busy"|"unknown", "task_id", "attempt",
        "progress", "seen_s_ago"} for the workers the broker currently knows.

        "idle": the worker holds credit (waits for a task); "busy": it runs the task
        shown; "unknown": neither (e.g. it sent a result and its next Ready is due).
        """
        now = self._clock()
        out: dict[str, dict[str, Any]] = {}
        for wid, w in self._workers.items():
            task = self._running_task(w)
            if task is not None:
                state, tid, attempt, progress = "busy", task.task_id, task.attempt, task.progress
            else:
                state = "idle" if wid in self._idle else "unknown"
                tid, attempt, progress = None, None, None
            out[wid] = {
                "state": state,
                "task_id": tid,
                "attempt": attempt,
                "progress": progress,
                "seen_s_ago": round(now - w.last_seen, 3),
            }
        return out

    def close(self) -> None:
        """Close both sockets (LINGER 0) and, if the broker made it, its context.

        Idempotent.  Once close returns, the ports are free for a new Broker.
        """
        if self._closed:
            return
        self._closed = True
        if self._reject_suppressed:
            log.warning("frame.rejected.suppressed", count=self._reject_suppressed, bad_frames=self.stats.bad_frames)
        self._drain_monitors()  # count what the last round missed
        self._auth_log.flush(log, math.inf)
        for _, sock, monitor in self._monitors:
            sock.disable_monitor()  # before closing the monitor socket, or libzmq may hang
            monitor.close(linger=0)
        self._monitors = []
        for sock in (self._router, self._pull):
            if sock is not None:
                sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()  # after the CURVE sockets are gone: nothing is left to admit
        if self._own_context:
            self._ctx.term()
        log.info("broker.closed", pending=len(self._tasks), **self.stats.as_dict())

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("broker is closed")

    def _drain(self, outcomes: list) -> None:
        # the sink first: a Result and the Ready that follows it travel on different
        # sockets, and reading results first keeps the common order
        # (checking EVENTS first is cheaper than a recv that raises zmq.Again)
        pull, router = self._pull, self._router
        # (POLLIN is a hint, not a promise: with CURVE and the workers' ZMTP heartbeats,
        # libzmq 4.3 can report it with nothing to read, hence the zmq.Again)
        for _ in range(_DRAIN_BATCH):
            if not pull.get(zmq.EVENTS) & _POLLIN:
                break
            try:
                frame = pull.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._guarded(self._on_sink_frame, frame, outcomes)
        for _ in range(_DRAIN_BATCH):
            if not router.get(zmq.EVENTS) & _POLLIN:
                break
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._guarded(self._on_ventilator_frames, frames)
        if self._monitors:
            self._drain_monitors()

    def _drain_monitors(self) -> None:
        """Count (and log, rate-limited) the handshakes the CURVE sockets refused."""
        for name, _, monitor in self._monitors:
            for _ in range(_DRAIN_BATCH):
                if not monitor.get(zmq.EVENTS) & _POLLIN:
                    break
                try:
                    event = recv_monitor_message(monitor, zmq.NOBLOCK)
                except (zmq.ZMQError, ValueError):  # zmq.Again, or a malformed event
                    break
                self.stats.handshake_failures += 1
                kind, value = int(event["event"]), int(event["value"])
                if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    continue  # the ZAP handler logged it (auth.key_refused, with the key and address)
                self._auth_log.emit(log, self._clock(), "auth.refused", socket=name,
                                    reason=_handshake_reason(kind, value), failures=self.stats.handshake_failures)

    def _guarded(self, handler: Callable, *args: Any) -> None:
        """Run a frame handler; nothing raised by one frame may escape poll()."""
        try:
            handler(*args)
        except Exception as exc:  # a bug or an unforeseen input: log it, count it, go on
            self.stats.bad_frames += 1
            log.exception("frame.rejected", reason=f"internal error: {type(exc).__name__}: {exc}")

    def _on_ventilator_frames(self, frames: list[bytes]) -> None:
        sender = frames[0].hex() if frames else "?"
        if len(frames) != 2:
            hint = " (no empty delimiter frame is used)" if len(frames) == 3 and frames[1] == b"" else ""
            self._reject("ventilator", sender, f"expected 2 frames [identity, payload], got {len(frames)}{hint}")
            return
        identity, payload = frames
        try:
            msg = decode(payload, max_bytes=self.max_message_bytes)
        except ProtocolError as exc:
            self._reject("ventilator", sender, str(exc))
            return
        if not isinstance(msg, Ready):
            self._reject("ventilator", sender, f"a {msg.TYPE} message on the ventilator socket (only ready goes there)")
            return
        self._on_ready(identity, msg, self._clock())

    def _on_sink_frame(self, frame: zmq.Frame, outcomes: list) -> None:
        sender = _peer_address(frame)
        parts = 1
        more = frame.more
        while more:  # the rest of a multi-part message has arrived already
            extra = self._pull.recv(zmq.NOBLOCK, copy=False)
            parts += 1
            more = extra.more
        if parts != 1:
            self._reject("sink", sender, f"expected 1 frame, got {parts}")
            return
        try:
            msg = decode(frame.buffer, max_bytes=self.max_message_bytes)
        except ProtocolError as exc:
            self._reject("sink", sender, str(exc))
            return
        now = self._clock()
        if isinstance(msg, Heartbeat):
            self._on_heartbeat(msg, now)
        elif isinstance(msg, Result):
            self._on_result(msg, now, outcomes)
        else:
            self._reject("sink", sender, f"a {msg.TYPE} message on the sink socket (only heartbeat and result go there)")

    def _reject(self, socket: str, sender: str, reason: str) -> None:
        self.stats.bad_frames += 1
        now = self._clock()
        self._flush_rejects(now)
        if self._reject_logged < _REJECT_LOG_PER_S:
            self._reject_logged += 1
            log.warning("frame.rejected", socket=socket, sender=sender, reason=reason)
        else:
            self._reject_suppressed += 1

    def _flush_rejects(self, now: float) -> None:
        if now - self._reject_window < 1.0:
            return
        if self._reject_suppressed:
            log.warning("frame.rejected.suppressed", count=self._reject_suppressed, bad_frames=self.stats.bad_frames)
        self._reject_window = now
        self._reject_logged = 0
        self._reject_suppressed = 0

    # ------------------------------------------------------------------ messages

    def _touch_worker(self, worker_id: str, identity: bytes | None, now: float) -> _WorkerState | None:
        w = self._workers.get(worker_id)
        if w is None:
            if identity is None:  # heard of on the sink only: not routable, not tracked
                return None
            w = _WorkerState(worker_id=worker_id, identity=identity, last_seen=now)
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

    def _on_ready(self, identity: bytes, msg: Ready, now: float) -> None:
        w = self._touch_worker(msg.worker_id, identity, now)
        w.slots = msg.slots
        t = self._running_task(w)
        if t is not None:
            if now - t.dispatched_at < self._grace_s:
                # sent before the Task reached the worker: the two crossed on the wire
                log.debug("ready.crossed", worker_id=w.worker_id, task_id=t.task_id, attempt=t.attempt)
                return
            # The worker asks for work but has not returned a result: it lost the task
            # (or its Result is a moment behind on the other socket).  Give the result a
            # grace period to arrive, then re-send.
            t.state = _ORPHANED
            t.orphan_deadline = now + self._grace_s
            log.warning(
                "task.orphaned",
                task_id=t.task_id,
                attempt=t.attempt,
                worker_id=w.worker_id,
                grace_s=self._grace_s,
            )
        w.task = None
        if w.worker_id not in self._idle:
            self._idle[w.worker_id] = None

    def _on_heartbeat(self, msg: Heartbeat, now: float) -> None:
        self._touch_worker(msg.worker_id, None, now)
        t = self._tasks.get(msg.task_id)
        if t is None or t.state != _RUNNING or t.attempt != msg.attempt or t.worker_id != msg.worker_id:
            self.stats.stale_heartbeats += 1
            log.debug(
                "heartbeat.ignored",
                task_id=msg.task_id,
                attempt=msg.attempt,
                worker_id=msg.worker_id,
                reason="attempt not running on this worker",
            )
            return
        self.stats.heartbeats += 1
        t.last_heartbeat = now
        t.progress = msg.progress

    def _on_result(self, msg: Result, now: float, outcomes: list) -> None:
        w = self._touch_worker(msg.worker_id, None, now)
        if w is not None and w.task is not None and w.task[0] == msg.task_id:
            w.task = None  # it is done with it; it gets credit again with its next Ready
        fields = {"task_id": msg.task_id, "attempt": msg.attempt, "worker_id": msg.worker_id}
        t = self._tasks.get(msg.task_id)
        if t is None:
            if msg.task_id in self._done:
                self.stats.duplicates += 1
                log.info("result.duplicate", **fields)
            elif msg.task_id in self._failed:
                self.stats.late_results += 1
                log.info("result.late", reason="task already failed", **fields)
            else:
                self.stats.unknown_results += 1
                log.warning("result.unknown", **fields)
            return
        if t.state == _QUEUED:  # a lost attempt came back after all
            self._queue.remove(t.task_id)
        del self._tasks[t.task_id]
        self._inflight.pop(t.task_id, None)
        self._done.add(t.task_id)
        self.stats.completed += 1
        if not msg.ok:
            self.stats.task_errors += 1
        log.info(
            "result.accepted",
            ok=msg.ok,
            error=msg.error or None,
            current_attempt=t.attempt,
            total_s=round(now - t.submitted_at, 3),
            **fields,
        )
        outcomes.append(Done(task_id=t.task_id, result=msg))

    # ------------------------------------------------------------------ timers

    def _expire(self, now: float, outcomes: list) -> None:
        self._flush_rejects(now)
        for t in list(self._inflight.values()):
            if t.state == _RUNNING:
                if now >= t.lease_deadline:
                    reason = f"lease of {t.lease_s:g} s ran out"
                elif now - t.last_heartbeat >= self._silence_s:
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
            if self._running_task(w) is None and now - w.last_seen >= self._silence_s:
                self._drop_worker(w.worker_id, f"not heard from for {now - w.last_seen:.2f} s")

    def _retry(self, t: _TaskState, reason: str, outcomes: list) -> None:
        t.history.append(f"attempt {t.attempt} on {t.worker_id}: {reason}")
        fields = {"task_id": t.task_id, "attempt": t.attempt, "worker_id": t.worker_id, "reason": reason}
        del self._inflight[t.task_id]
        if t.attempt >= self.max_attempts:
            del self._tasks[t.task_id]
            self._failed.add(t.task_id)
            self.stats.failures += 1
            summary = f"lease expired {t.attempt} times: " + "; ".join(t.history)
            log.error("task.failed", genotype=t.genotype, **fields)
            outcomes.append(Failed(task_id=t.task_id, attempts=t.attempt, reason=summary))
            return
        t.attempt += 1
        t.state = _QUEUED
        t.worker_id = None
        t.progress = 0.0
        self._queue.appendleft(t.task_id)  # resends go first
        self.stats.resends += 1
        log.warning("task.resent", next_attempt=t.attempt, **fields)

    def _drop_worker(self, worker_id: str | None, reason: str) -> None:
        w = self._workers.pop(worker_id, None) if worker_id is not None else None
        if w is None:
            return
        was_idle = worker_id in self._idle
        self._idle.pop(worker_id, None)
        self.stats.workers_lost += 1
        log.warning("worker.lost", worker_id=worker_id, reason=reason, was_idle=was_idle)

    def _next_timer(self, now: float) -> float:
        """When the next lease/liveness/grace deadline falls (inf if none)."""
        soonest = math.inf
        for t in self._inflight.values():
            if t.state == _RUNNING:
                soonest = min(soonest, t.lease_deadline, t.last_heartbeat + self._silence_s)
            elif t.state == _ORPHANED:
                soonest = min(soonest, t.orphan_deadline)
        for w in self._workers.values():
            if self._running_task(w) is None:  # a busy worker is timed by its task
                soonest = min(soonest, w.last_seen + self._silence_s)
        if self._reject_suppressed:
            soonest = min(soonest, self._reject_window + 1.0)
        return soonest

    # ------------------------------------------------------------------ hand-out

    def _dispatch(self, now: float) -> None:
        while self._queue and self._idle:
            worker_id, _ = self._idle.popitem(last=False)  # idle the longest goes first
            w = self._workers[worker_id]
            task_id = self._queue.popleft()
            t = self._tasks[task_id]
            # the task's fields were validated once, at submit(): pack them without re-checking
            payload = pack_checked("task", {"task_id": t.task_id, "attempt": t.attempt, "genotype": t.genotype,
                                            "spec": t.spec, "lease_s": t.lease_s})
            try:
                self._router.send_multipart([w.identity, payload], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                # EHOSTUNREACH: its connection is gone; EAGAIN: it does not read.  The
                # task was not handed out, so this costs no attempt.
                self._queue.appendleft(task_id)
                self._drop_worker(worker_id, f"task send failed: {exc.strerror}")
                continue
            t.state = _RUNNING
            self._inflight[task_id] = t
            t.worker_id = worker_id
            t.dispatched_at = now
            t.last_heartbeat = now
            t.lease_deadline = now + t.lease_s
            t.progress = 0.0
            w.task = (task_id, t.attempt)
            self.stats.dispatched += 1
            log.info(
                "task.dispatched",
                task_id=task_id,
                attempt=t.attempt,
                worker_id=worker_id,
                genotype=t.genotype,
                lease_s=t.lease_s,
            )


def _handshake_reason(kind: int, value: int) -> str:
    if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return "the peer does not use CURVE (a plaintext client, or no --server-key)"
        if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return "CURVE handshake did not decrypt (the client has another server public key, or bad keys)"
        return f"ZMTP protocol error 0x{value:x} during the handshake"
    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"ZAP refused the client (status {value})"
    # which end notices a bad handshake first is a race: a plaintext client, or one with the
    # wrong keys, often shows up here only as a peer that hung up
    return (f"the peer hung up during the handshake ({zmq.strerror(value)}): a plaintext client, a wrong key, "
            f"or a port scan")


class _RateLimitedLog:
    """At most _AUTH_LOG_PER_S warnings a second; the rest are summed up in one line."""

    def __init__(self, suppressed_event: str) -> None:
        self._event = suppressed_event
        self._window = 0.0
        self._logged = 0
        self._suppressed = 0

    def emit(self, logger: Any, now: float, event: str, **fields: Any) -> None:
        self.flush(logger, now)
        if self._logged < _AUTH_LOG_PER_S:
            self._logged += 1
            logger.warning(event, **fields)
        else:
            self._suppressed += 1

    def flush(self, logger: Any, now: float) -> None:
        if now - self._window < 1.0:
            return
        if self._suppressed:
            logger.warning(self._event, count=self._suppressed)
        self._window = now
        self._logged = 0
        self._suppressed = 0


class _ZapLog:
    """pyzmq's authenticator logs printf-style through this into structlog (``zap`` events)."""

    def _log(self, level: str, msg: str, *args: Any) -> None:
        try:
            detail = msg % args if args else str(msg)
        except Exception:  # a bad format must not break authentication
            detail = f"{msg!r} {args!r}"
        getattr(log, level)("zap", detail=detail)

    def debug(self, msg: str, *args: Any, **_: Any) -> None:
        self._log("debug", msg, *args)

    def info(self, msg: str, *args: Any, **_: Any) -> None:
        self._log("info", msg, *args)

    def warning(self, msg: str, *args: Any, **_: Any) -> None:
        self._log("warning", msg, *args)

    def error(self, msg: str, *args: Any, **_: Any) -> None:
        self._log("error", msg, *args)

    exception = error


class _AllowList(ThreadAuthenticator):
    """ZAP handler in a thread of its own: admits CURVE clients whose public key is allowed.

    pyzmq calls :meth:`callback` (its credentials-provider interface) with the client's
    Z85 public key; it runs in the handler's thread, one request at a time.
    """

    def __init__(self, context: zmq.Context, allowed: frozenset) -> None:
        super().__init__(context=context, log=_ZapLog())
        self._allowed_keys = frozenset(allowed)  # not _allowed: pyzmq uses that for IP addresses
        self._peer = "?"
        self._limit = _RateLimitedLog("auth.key_refused.suppressed")
        self.refused = 0
        self.admitted = 0
        try:
            self.start()
        except zmq.ZMQError as exc:
            self.stop()  # closes the ZAP socket if it was made, so the context can terminate
            raise RuntimeError(
                f"cannot start the ZAP handler ({exc}): is another CURVE broker using this zmq context?"
            ) from None
        self.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # frames: version, request id, domain, address, identity, mechanism, credentials...
        self._peer = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            ok = domain == ZAP_DOMAIN and key in self._allowed_keys
            client_key = key.decode("ascii", "replace")
        except Exception:  # never raise into the ZAP thread: refuse instead
            ok, client_key = False, "?"
        if ok:
            self.admitted += 1
            log.info("auth.admitted", client_key=client_key, address=self._peer)
        else:
            self.refused += 1
            self._limit.emit(log, time.monotonic(), "auth.key_refused", client_key=client_key, address=self._peer,
                             reason="public key not on the allow-list", refused=self.refused)
        return ok


def _peer_address(frame: zmq.Frame) -> str:
    try:
        return frame.get("Peer-Address")
    except Exception:  # not every transport / libzmq build has it
        return "?"
