"""Head side of the transport: the ventilator and sink sockets and the poll loop.

One :class:`Broker` owns two bound sockets and is driven by :meth:`Broker.poll` from a
single thread (the head's main loop)::

    with Broker("tcp://*:5557", "tcp://*:5558") as broker:
        for task_id, genotype, spec in work:
            broker.submit(task_id, genotype, spec)
        while broker.pending:
            for outcome in broker.poll(1.0):      # never blocks longer than 1 s
                if isinstance(outcome, Done): ...   # outcome.result.ok may be False
                else: ...                          # Failed: gave up after max_attempts

What the broker decides (credit, leases, liveness, resends, exactly-once, which key may
report on which task) is the pure state machine :class:`~transport.leases.Leases`; this
module reads the sockets, has :class:`~transport.inbox.Inbox` check each frame, hands the
messages to the state machine and sends the tasks it hands out. CURVE, the ZAP allow-list
and the socket monitors are in :mod:`transport.auth`. A bad frame is logged
(``frame.rejected``), counted and dropped; ``poll`` goes on. The counters are logged every
``counters_every_s`` (``broker.counters``). docs/protocol.md has the rules in full.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import structlog
import zmq

from transport.auth import ZAP_DOMAIN, AllowList, SocketWatch, default_connection_cap, fd_limits, make_curve_server
from transport.codec import pack_checked
from transport.endpoints import is_loopback_endpoint
from transport.inbox import Inbox
from transport.keyfiles import KeyFileError
from transport.keys import CurveServer
from transport.leases import BrokerStats, Done, Failed, Leases
from transport.protocol import Result

__all__ = ["BindError", "Broker", "BrokerStats", "Done", "Failed"]  # the outcomes poll() returns

log = structlog.get_logger(__name__)

_DRAIN_BATCH = 512  # messages read per socket per round, so timers stay on time under a flood
_POLLIN = int(zmq.POLLIN)  # a plain int: IntFlag arithmetic costs microseconds per call on the hot path


class BindError(zmq.ZMQError):
    """The broker's sockets could not be set up or bound (address in use, a bad endpoint): ZeroMQ's error,
    same errno and message, under a name of the transport's, so the head handles it without importing zmq."""


class Broker:
    """Ventilator (ROUTER) + sink (PULL) with credit hand-out, leases and resends.

    ``curve``: make both sockets CURVE servers that admit only ``curve.allowed`` client keys
    (a ZAP handler runs on the broker's context; one CURVE broker per context), and accept
    results and heartbeats only from the key handed the task. None: plain TCP, logged
    (``auth.disabled``). ``handshake_s``: a connection that has not finished its ZMTP
    handshake by then is closed (``ZMQ_HANDSHAKE_IVL``). ``max_connections_per_address``:
    more connections from one peer address are closed at once (default: a quarter of the
    file descriptor limit, at least 16). ``counters_every_s``: how often ``broker.counters``
    is logged (``math.inf``: only when asked, :meth:`log_counters`). Sockets that cannot be set up or
    bound raise :class:`BindError` (a ``zmq.ZMQError``), the broker closed.
    """

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
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        curve: CurveServer | None = None,
        handshake_s: float = 5.0,
        max_connections_per_address: int | None = None,
        counters_every_s: float = 30.0,
    ) -> None:
        if curve is not None and not isinstance(curve, CurveServer):
            raise TypeError(f"curve must be a CurveServer or None, got {type(curve).__name__}")
        _check_settings(max_message_bytes, handshake_s, max_connections_per_address, counters_every_s)
        self.stats = BrokerStats()
        self._leases = Leases(heartbeat_s=heartbeat_s, liveness=liveness, lease_s=lease_s,
                              max_attempts=max_attempts, stats=self.stats, bind_keys=curve is not None)
        self.heartbeat_s = self._leases.heartbeat_s
        self.liveness = liveness
        self.lease_s = self._leases.lease_s
        self.max_attempts = max_attempts
        self.max_message_bytes = max_message_bytes
        self.handshake_s = float(handshake_s)
        self.max_connections_per_address = max_connections_per_address or default_connection_cap()
        self.counters_every_s = float(counters_every_s)
        self._zmtp_heartbeat_ms = zmtp_heartbeat_ms(self.heartbeat_s, liveness)
        self.connection_timeout_s = self._zmtp_heartbeat_ms[1] / 1000
        self._clock = clock
        self._next_counters = clock() + self.counters_every_s
        self._closed = False
        self._polling = False
        self._reload_due = False
        self._held: list[Done | Failed] = []  # outcomes made outside poll(), returned by the next one
        self._own_context = context is None
        self._ctx = zmq.Context() if context is None else context
        self._router: zmq.Socket[bytes]  # both set by _bind()
        self._pull: zmq.Socket[bytes]
        self._sockets: list[zmq.Socket[bytes]] = []  # those opened so far, for close()
        self._curve = curve
        self._auth: AllowList | None = None
        self._watch = SocketWatch(self.stats, curve=curve is not None, max_per_address=self.max_connections_per_address)
        self._inbox = Inbox(self.stats, self._watch, max_message_bytes=max_message_bytes,
                            allowed=None if curve is None else curve.allowed)
        try:
            self._bind(ventilator, sink)
        except zmq.ZMQError as exc:
            self.close()
            raise BindError(exc.errno, exc.strerror) from exc
        except BaseException:
            self.close()
            raise
        self._poller = zmq.Poller()
        for sock in (self._pull, self._router, *self._watch.monitors):
            self._poller.register(sock, zmq.POLLIN)
        self._log_started()

    def _bind(self, ventilator: str, sink: str) -> None:
        if self._curve is not None:  # the ZAP handler must run before a CURVE socket binds
            self._auth = AllowList(self._ctx, self._curve.allowed)
        # ROUTER, bind, ventilator endpoint: workers' DEALERs connect; frames [identity, payload]
        self._router = self._ctx.socket(zmq.ROUTER)
        self._sockets.append(self._router)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to a vanished worker raises
        self._secure("ventilator", self._router)
        self._router.bind(ventilator)
        self.ventilator_endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        # PULL, bind, sink endpoint: workers' PUSH sockets connect; one frame per message
        self._pull = self._ctx.socket(zmq.PULL)
        self._sockets.append(self._pull)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._secure("sink", self._pull)
        self._pull.bind(sink)
        self.sink_endpoint: str = self._pull.getsockopt_string(zmq.LAST_ENDPOINT)

    def _secure(self, name: str, sock: zmq.Socket[bytes]) -> None:
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        sock.setsockopt(zmq.HANDSHAKE_IVL, max(1, round(self.handshake_s * 1000)))
        # ZMTP heartbeats: a PING every heartbeat interval on every connection; one whose peer has sent
        # nothing (data or PONG) within the timeout is closed, so what a partitioned peer's kernel still
        # holds is never read after the worker has moved on to a new connection. TTL: the peer closes
        # its end after as long without a word from the head.
        sock.setsockopt(zmq.HEARTBEAT_IVL, self._zmtp_heartbeat_ms[0])
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, self._zmtp_heartbeat_ms[1])
        sock.setsockopt(zmq.HEARTBEAT_TTL, self._zmtp_heartbeat_ms[1])
        if self._curve is not None:
            make_curve_server(name, sock, self._curve)
        self._watch.watch(name, sock)

    def _log_started(self) -> None:
        log.info("broker.started", ventilator=self.ventilator_endpoint, sink=self.sink_endpoint,
                 heartbeat_s=self.heartbeat_s, liveness=self.liveness, lease_s=self.lease_s,
                 max_attempts=self.max_attempts, max_message_bytes=self.max_message_bytes,
                 handshake_s=self.handshake_s, max_connections_per_address=self.max_connections_per_address,
                 connection_timeout_s=self.connection_timeout_s, counters_every_s=self.counters_every_s,
                 fd_limit=fd_limits()[0])
        if self._curve is not None:
            log.info("auth.enabled", mechanism="CURVE", allowed_keys=len(self._curve.allowed),
                     server_key=self._curve.public_key.decode("ascii"), zap_domain=ZAP_DOMAIN)
            return
        # a warning where other machines can reach the ports; on loopback, plain is the design
        local = is_loopback_endpoint(self.ventilator_endpoint) and is_loopback_endpoint(self.sink_endpoint)
        (log.info if local else log.warning)(
            "auth.disabled", mechanism="NULL", loopback=local,
            reason="no CURVE keys: traffic is plaintext, and any peer that reaches the ports can "
                   "take tasks and send results")

    # ------------------------------------------------------------------ public API

    def submit(self, task_id: str, genotype: str, spec: dict[str, Any], *, lease_s: float | None = None) -> None:
        """Queue a task for hand-out (at the back of the queue).

        A task id that is queued or in flight is a no-op. A task id that completed or
        Failed earlier is queued again with fresh attempts: the broker keeps no results,
        and a caller that submits an id again needs its result again (e.g. a second
        search through the same broker).
        Raises ProtocolError (a ValueError) when the id, genotype or spec would not
        pass the wire checks.  ``lease_s`` overrides the broker's lease for this task.
        """
        self._check_open()
        self._leases.submit(task_id, genotype, spec, self._clock(), lease_s=lease_s)

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
        outcomes, self._held = self._held, []
        self._polling = True
        try:
            while True:
                self._round(outcomes)
                now = self._clock()
                if outcomes or now >= deadline:
                    return outcomes
                wait = min(deadline - now, max(0.0, self._next_timer() - now))
                self._poller.poll(max(1, math.ceil(wait * 1000)))
        finally:
            self._polling = False

    def _round(self, outcomes: list[Done | Failed]) -> None:
        self._drain(outcomes)
        now = self._clock()
        if self._reload_due:  # asked for by a signal handler while poll() ran
            self._reload_due = False
            self._reload(now, outcomes)
        outcomes += self._leases.expire(now)
        self._flush_logs(now)
        if now >= self._next_counters:
            self.log_counters()
        self._dispatch(now)

    def reload_allow(self) -> bool:
        """Read the allow-list again (CURVE only; from the directory or files it came from)
        and apply it: a new key is admitted from its next handshake; a removed key is cut
        off: its connections closed, its workers dropped, the attempts they ran resent, and
        its messages refused from then on. Logged (``auth.reloaded``, or
        ``auth.reload_failed`` with the reason, keeping the old list). True when the new
        list is in force on return; called while :meth:`poll` runs, it is left to the end
        of that poll round (False)."""
        if self._polling:
            self.request_reload()
            return False
        self._check_open()
        return self._reload(self._clock(), self._held)

    def request_reload(self) -> None:
        """Have the next poll round do :meth:`reload_allow`. Safe in a signal handler (e.g.
        ``signal.signal(signal.SIGHUP, lambda *_: broker.request_reload())``): it only sets a
        flag, no logging, no locks."""
        self._reload_due = True

    def log_counters(self) -> dict[str, int]:
        """Log ``broker.counters`` now (the fields of ``broker.closed``, plus ``workers_alive``
        and ``connections``) and return them; poll() does it every ``counters_every_s``."""
        now = self._clock()
        self._next_counters = now + self.counters_every_s
        counters = {"pending": self._leases.pending, "workers_alive": len(self._leases.workers(now)),
                    "connections": self._watch.connections, **self.stats.as_dict()}
        log.info("broker.counters", **counters)
        return counters

    def connections(self) -> int:
        """Peer connections open now on both sockets (handshake done or not)."""
        return self._watch.connections

    @property
    def pending(self) -> int:
        """Tasks queued or in flight (not yet Done or Failed)."""
        return self._leases.pending

    @property
    def queued(self) -> int:
        """Tasks waiting for an idle worker."""
        return self._leases.queued

    def workers(self) -> dict[str, dict[str, Any]]:
        """worker_id -> {"state": "idle"|"busy"|"unknown", "task_id", "attempt",
        "progress", "seen_s_ago"} for the workers alive now: they completed a handshake,
        sent a valid Ready, and were heard from within ``liveness * heartbeat_s``.

        "idle": the worker holds credit (waits for a task); "busy": it runs the task
        shown; "unknown": neither (e.g. it sent a result and its next Ready is due).
        """
        return self._leases.workers(self._clock())

    def close(self) -> None:
        """Close both sockets (LINGER 0) and, if the broker made it, its context.

        Idempotent.  Once close returns, the ports are free for a new Broker.
        """
        if self._closed:
            return
        self._closed = True
        self._watch.drain(self._clock(), self._auth)  # count what the last round missed
        self._flush_logs(math.inf, force=True)
        self._watch.close()
        for sock in self._sockets:
            sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()  # after the CURVE sockets are gone: nothing is left to admit
        if self._own_context:
            self._ctx.term()
        log.info("broker.closed", pending=self._leases.pending, **self.stats.as_dict())

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the loop

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("broker is closed")

    def _next_timer(self) -> float:
        return min(self._leases.next_deadline(), self._next_counters, self._inbox.limiter.next_summary(),
                   self._watch.next_flush(), self._leases.next_log_flush())

    def _flush_logs(self, now: float, *, force: bool = False) -> None:
        self._inbox.flush(now, force=force)
        self._watch.flush(now, force=force)
        self._leases.flush_logs(now, force=force)

    def _reload(self, now: float, outcomes: list[Done | Failed]) -> bool:
        if self._curve is None or self._auth is None:
            log.warning("auth.reload_failed", reason="plain mode: there is no allow-list to reload")
            return False
        try:
            new = self._curve.reloaded()
        except KeyFileError as exc:
            log.error("auth.reload_failed", reason=str(exc), allowed_keys=len(self._curve.allowed),
                      note="the allow-list in force is unchanged")
            return False
        old = self._curve.allowed
        removed = sorted(k.decode("ascii") for k in old - new.allowed)
        self._curve = new
        self._auth.set_allowed(new.allowed)
        self._inbox.set_allowed(new.allowed)
        closed = 0
        for key in removed:
            outcomes += self._leases.revoke(key, now)
            closed += self._watch.cut(key)
        log.info("auth.reloaded", allowed_keys=len(new.allowed), removed=removed,
                 added=sorted(k.decode("ascii") for k in new.allowed - old), connections_closed=closed)
        return True

    def _drain(self, outcomes: list[Done | Failed]) -> None:
        # the sink first: a Result and the Ready that follows it travel on different
        # sockets, and reading results first keeps the common order
        # (checking EVENTS first is cheaper than a recv that raises zmq.Again; POLLIN is a
        # hint, not a promise: with CURVE and ZMTP heartbeats libzmq 4.3 can report it with
        # nothing to read, hence the zmq.Again)
        self._watch.drain(self._clock(), self._auth)  # connections first: a revoked key's, an over-cap one
        pull, router = self._pull, self._router
        for _ in range(_DRAIN_BATCH):
            if not int(pull.get(zmq.EVENTS)) & _POLLIN:
                break
            try:
                frame = pull.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._guarded(self._on_sink_frame, frame, outcomes)
        for _ in range(_DRAIN_BATCH):
            if not int(router.get(zmq.EVENTS)) & _POLLIN:
                break
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._guarded(self._on_ventilator_frames, frames)

    def _dispatch(self, now: float) -> None:
        leases = self._leases
        while (d := leases.next_dispatch()) is not None:
            try:
                self._router.send_multipart([d.identity, pack_checked("task", d.wire())], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                # EHOSTUNREACH: its connection is gone; EAGAIN: it does not read.  The
                # task was not handed out, so this costs no attempt.
                leases.undeliverable(d, f"task send failed: {exc.strerror}")
                continue
            leases.dispatched(d, now)

    # ------------------------------------------------------------------ frames

    def _guarded(self, handler: Callable[..., None], *args: Any) -> None:
        """Run a frame handler; nothing raised by one frame may escape poll()."""
        try:
            handler(*args)
        except Exception as exc:  # a bug or an unforeseen input: log it, count it, go on
            self.stats.bad_frames += 1
            log.exception("frame.rejected", reason=f"internal error: {type(exc).__name__}: {exc}")

    def _on_ventilator_frames(self, frames: list[zmq.Frame]) -> None:
        now = self._clock()
        got = self._inbox.ventilator(frames, now)
        if got is not None:
            msg, identity, sender = got
            self._leases.ready(msg.worker_id, msg.slots, identity, now, sender)

    def _on_sink_frame(self, frame: zmq.Frame, outcomes: list[Done | Failed]) -> None:
        now = self._clock()
        got = self._inbox.sink(frame, self._pull, now)
        if got is None:
            return
        msg, sender = got
        if isinstance(msg, Result):
            done = self._leases.result(msg, now, sender)
            if done is not None:
                outcomes.append(done)
        else:
            self._leases.heartbeat(msg, now, sender)


def zmtp_heartbeat_ms(heartbeat_s: float, liveness: int) -> tuple[int, int]:
    """(interval, timeout) in ms of the ZMTP heartbeats on the head's sockets: a PING every
    heartbeat interval (at least 100 ms); a connection silent for the silence limit
    (``liveness x heartbeat_s``, at least 1 s so a loaded machine does not cut live peers, and at
    most libzmq's TTL limit of 6553.5 s) is closed."""
    interval = min(max(100, round(heartbeat_s * 1000)), 6_553_500)
    timeout = min(max(1000, interval, round(liveness * heartbeat_s * 1000)), 6_553_500)
    return interval, timeout


def _check_settings(max_message_bytes: int, handshake_s: float, max_per_address: int | None,
                    counters_every_s: float) -> None:
    if isinstance(max_message_bytes, bool) or not isinstance(max_message_bytes, int) or max_message_bytes < 1024:
        raise ValueError(f"max_message_bytes must be an int >= 1024, got {max_message_bytes!r}")
    if not (math.isfinite(handshake_s) and handshake_s > 0):
        raise ValueError(f"handshake_s must be a finite number > 0, got {handshake_s!r}")
    if max_per_address is not None and (isinstance(max_per_address, bool) or not isinstance(max_per_address, int)
                                        or max_per_address < 1):
        raise ValueError(f"max_connections_per_address must be an int >= 1, got {max_per_address!r}")
    if math.isnan(counters_every_s) or counters_every_s <= 0:
        raise ValueError(f"counters_every_s must be > 0 (inf: only when asked), got {counters_every_s!r}")
