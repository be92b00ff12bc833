"""Worker side of the transport: ask for a task, heartbeat while training, send the result.

A worker process loop (no torch here; gpuworker/ supplies ``train``)::

    with WorkerChannel("tcp://head:5557", "tcp://head:5558") as channel:
        while not stopping:
            task = channel.next_task(timeout_s=1.0)      # None: nothing yet, ask again
            if task is None:
                continue
            with channel.working(task) as job:         # heartbeats in the background
                ok, metrics, error = train(task, on_progress=job.progress)
            channel.send_result(Result(channel.worker_id, task.task_id, task.attempt,
                                       ok, metrics, error))

The channel survives a restart of the head: its sockets reconnect with backoff
(``reconnect_ivl_ms`` doubling up to ``reconnect_ivl_max_ms``), ``next_task`` keeps
re-sending ``Ready`` every heartbeat interval so a new head learns of the worker, and
results pushed while the head is away are queued and delivered when it returns.

With ``curve=CurveClient(...)`` all three sockets (DEALER, result PUSH, heartbeat PUSH)
are CURVE clients of the head.  A handshake the head refuses (plaintext against a CURVE
head, a wrong server key, a key not on the head's allow-list) is logged by the channel as
``auth.handshake_failed`` while it waits for a task.  libzmq gives up on a connection the
head refused outright (a key not allowed, a CURVE/plain mismatch), so the channel connects
that socket again every ``reconnect_ivl_max_ms``: a worker started before its key was
added to the allow-list joins once the head admits it, and so does a worker whose key was
removed and put back (the heartbeat thread's socket included).

A result that cannot be delivered (the head refuses this worker's key, e.g. it was removed
from the allow-list while the worker trained; or 1000 results already wait for the head) is
not queued: :meth:`WorkerChannel.send_result` logs one ``result.unsent`` line with the reason
and raises :class:`ResultUnsent` (a ``TimeoutError``). The head counts that attempt as lost
and sends the task again; the worker may go on asking for work.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import NoReturn

import structlog
import zmq

from transport.auth import HANDSHAKE_FAILED, handshake_reason, monitor_events
from transport.codec import decode, encode, pack_checked
from transport.keys import CurveClient
from transport.protocol import Heartbeat, ProtocolError, Ready, Result, Task
from transport.throttle import RateLimiter

__all__ = ["ResultUnsent", "WorkerChannel", "TaskProgress", "default_worker_id"]

log = structlog.get_logger(__name__)

_READY_HWM = 4  # Ready messages queued while the head is unreachable (they are idempotent)
_HEARTBEAT_HWM = 4
_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(Result))
_RESULT_LINGER_MS = 2000  # on close, how long a queued result may still try to leave
_RESULT_SEND_TIMEOUT_MS = 10000
_HANDSHAKE_LOG_EVERY_S = 10.0  # auth.handshake_failed: at most one line per reason this often
_HANDSHAKE_EVENTS = HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED
_SEND_POLL_MS = 100  # while a result waits for room: how often the refusals are looked at


class ResultUnsent(TimeoutError):
    """A result could not be handed to ZeroMQ: the head refuses this worker (``reason`` says why),
    or the send queue stayed full for 10 s. The head counts the attempt as lost and re-sends it."""

    def __init__(self, task_id: str, attempt: int, reason: str) -> None:
        super().__init__(f"could not deliver the result of {task_id} (attempt {attempt}): {reason}")
        self.task_id = task_id
        self.attempt = attempt
        self.reason = reason


class _Watched:
    """A connecting socket whose handshakes are watched: the head refusing it outright (libzmq
    never retries that) is remembered until a handshake succeeds, and the socket is connected
    again ``reconnect_ivl_max_ms`` after each refusal, or at once when a task came from the head
    (which admits this worker's key again, then)."""

    def __init__(self, name: str, sock: zmq.Socket[bytes], endpoint: str) -> None:
        self.name = name
        self.sock = sock
        self.endpoint = endpoint
        self.monitor = sock.get_monitor_socket(_HANDSHAKE_EVENTS)
        self.monitor.setsockopt(zmq.LINGER, 0)
        self.retry_at: float | None = None  # when to connect again after a refusal (None: not waiting to)
        self.refused: str | None = None  # why the head refused the last handshake (None: none since a success)

    def close(self) -> None:
        self.sock.disable_monitor()  # before closing the monitor socket, or libzmq may hang
        self.monitor.close(linger=0)


def default_worker_id() -> str:
    """``<hostname>-<pid>-<8 hex>``, cut to the protocol's id alphabet and length."""
    host = re.sub(r"[^A-Za-z0-9_.:-]", "_", socket.gethostname())[:80] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class TaskProgress:
    """Handed out by :meth:`WorkerChannel.working`; the training loop reports progress."""

    def __init__(self) -> None:
        self._value = 0.0

    def progress(self, fraction: float) -> None:
        """Set the fraction done, clamped to [0, 1]; NaN is ignored."""
        try:
            value = float(fraction)
        except (TypeError, ValueError):
            return
        if math.isnan(value):
            return
        self._value = min(1.0, max(0.0, value))

    @property
    def value(self) -> float:
        return self._value


class WorkerChannel:
    """DEALER to the ventilator (Ready out, Task in) + PUSH to the sink (Result out).

    Heartbeats go out on a separate PUSH socket owned by a background thread while
    inside :meth:`working` (zmq sockets are not thread-safe).  Use from one thread.
    """

    def __init__(
        self,
        ventilator: str,
        sink: str,
        *,
        worker_id: str | None = None,
        heartbeat_s: float = 1.0,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        reconnect_ivl_ms: int = 100,
        reconnect_ivl_max_ms: int = 5000,
        curve: CurveClient | None = None,
    ) -> None:
        """``curve``: CURVE keys (this worker's pair and the head's public key) for every
        socket; None: plain TCP (the head must be plain too)."""
        if curve is not None and not isinstance(curve, CurveClient):
            raise TypeError(f"curve must be a CurveClient or None, got {type(curve).__name__}")
        if not (math.isfinite(heartbeat_s) and heartbeat_s > 0):
            raise ValueError(f"heartbeat_s must be a finite number > 0, got {heartbeat_s!r}")
        self.worker_id = default_worker_id() if worker_id is None else worker_id
        Ready(self.worker_id)  # validates the id (ProtocolError, a ValueError)
        self.ventilator = ventilator
        self.sink = sink
        self.heartbeat_s = float(heartbeat_s)
        self._reconnect = (int(reconnect_ivl_ms), int(reconnect_ivl_max_ms))
        self._curve = curve
        self._watched: list[_Watched] = []  # the DEALER and the result PUSH, watched for refusals
        self._handshake_log = RateLimiter(per_key=1, total=16, window_s=_HANDSHAKE_LOG_EVERY_S)
        self.handshake_failures = 0  # handshakes of the DEALER or the result PUSH that failed
        self._next_handshake_check = 0.0
        self._ready_payload = encode(Ready(self.worker_id, 1))
        self._closed = False
        self._own_context = context is None
        self._ctx = zmq.Context() if context is None else context
        self._dealer: zmq.Socket[bytes]  # both set below
        self._push: zmq.Socket[bytes]
        self._sockets: list[zmq.Socket[bytes]] = []  # those opened so far, for close()
        self._log = log.bind(worker_id=self.worker_id)
        self._context = contextvars.copy_context()  # for the heartbeat thread: no task's fields bound yet
        self._beat_thread: threading.Thread | None = None
        self._beat_lock = threading.Lock()
        self._beat_wake = threading.Event()
        self._beat_stop = threading.Event()
        self._current: tuple[Task, TaskProgress, float] | None = None  # (task, progress, next beat due)
        try:
            # DEALER, connect, ventilator endpoint: sends [Ready], receives [Task] (no delimiter frame)
            self._dealer = self._ctx.socket(zmq.DEALER)
            self._sockets.append(self._dealer)
            self._configure(self._dealer, linger_ms=0, sndhwm=_READY_HWM)
            self._watch("ventilator", self._dealer, ventilator)
            self._dealer.connect(ventilator)

            # PUSH, connect, sink endpoint: sends [Result]; queues them while the head is away
            self._push = self._ctx.socket(zmq.PUSH)
            self._sockets.append(self._push)
            self._configure(self._push, linger_ms=_RESULT_LINGER_MS, sndhwm=1000)
            self._sink_watch = self._watch("sink", self._push, sink)
            self._push.connect(sink)
        except BaseException:
            self.close()
            raise
        self._log.info("channel.connected", ventilator=ventilator, sink=sink, heartbeat_s=self.heartbeat_s,
                       curve=curve is not None, public_key=curve.public_key.decode("ascii") if curve else None)

    def _configure(self, sock: zmq.Socket[bytes], *, linger_ms: int, sndhwm: int) -> None:
        sock.setsockopt(zmq.LINGER, linger_ms)
        sock.setsockopt(zmq.SNDHWM, sndhwm)
        sock.setsockopt(zmq.RECONNECT_IVL, self._reconnect[0])
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, self._reconnect[1])
        # ZMTP heartbeats: notice a head that vanished without closing its TCP connection
        ivl_ms = max(100, int(self.heartbeat_s * 1000))
        sock.setsockopt(zmq.HEARTBEAT_IVL, ivl_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * ivl_ms)
        if self._curve is not None:  # before connect: CURVE client of the head
            sock.setsockopt(zmq.CURVE_SERVERKEY, self._curve.server_key)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self._curve.public_key)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._curve.secret_key)

    # ------------------------------------------------------------------ public API

    def next_task(self, timeout_s: float) -> Task | None:
        """Wait at most ``timeout_s`` seconds for a task; None when none came.

        Sends Ready at once and again every heartbeat interval while waiting.  A Task
        that arrived since the last call is returned without sending Ready.  Frames that
        are not a valid Task are logged (``frame.rejected``) and dropped.
        """
        self._check_open()
        timeout_s = float(timeout_s)
        if math.isnan(timeout_s) or math.isinf(timeout_s):
            raise ValueError(f"timeout_s must be finite, got {timeout_s!r}")
        task = self._receive(0)
        if task is not None:
            return task
        deadline = time.monotonic() + max(0.0, timeout_s)
        next_ready = 0.0
        while True:
            now = time.monotonic()
            if now >= next_ready:
                self._send_ready()
                if now >= self._next_handshake_check:  # once an interval, not once a task
                    self._next_handshake_check = now + self.heartbeat_s
                    self._check_handshakes(now)
                next_ready = now + self.heartbeat_s
            wait = min(deadline, next_ready) - now
            task = self._receive(max(0, math.ceil(wait * 1000)) if wait > 0 else 0)
            if task is not None:
                return task
            if time.monotonic() >= deadline:
                return None

    @contextlib.contextmanager
    def working(self, task: Task) -> Iterator[TaskProgress]:
        """Heartbeat ``task`` every heartbeat interval while the block runs.

        Yields a :class:`TaskProgress`; call ``.progress(fraction)`` to report how far
        the training is.  One heartbeat thread, with its own PUSH socket, lives as long
        as the channel (a socket per task would cost a TCP connection per task); it
        beats the current task one interval after the block starts and every interval
        after, so a task shorter than an interval costs no heartbeat at all.
        """
        self._check_open()
        job = TaskProgress()
        if self._beat_thread is None:
            # in the context the channel was made in: its log lines carry the process's bound fields (role)
            self._beat_thread = threading.Thread(target=self._context.run, args=(self._heartbeat_loop,),
                                                 name="heartbeat", daemon=True)
            self._beat_thread.start()
        with self._beat_lock:
            self._current = (task, job, time.monotonic() + self.heartbeat_s)
        self._beat_wake.set()
        try:
            yield job
        finally:
            with self._beat_lock:
                self._current = None

    def send_result(self, result: Result) -> None:
        """Push the result to the sink.  It is queued if the head is away.

        Raises :class:`ResultUnsent` (a TimeoutError), after one ``result.unsent`` line with the
        reason, when the head refuses this worker (its key is not, or no longer, on the allow-list;
        a CURVE/plain mismatch), or when the result cannot even be queued within 10 s (1000 results
        already waiting). ProtocolError if the result is invalid.
        """
        self._check_open()
        if not isinstance(result, Result):
            raise TypeError(f"send_result() takes a Result, got {type(result).__name__}")
        # a Result validated itself when it was built: pack it without checking it a second time
        payload = pack_checked("result", {name: getattr(result, name) for name in _RESULT_FIELDS})
        sink = self._sink_watch
        deadline = time.monotonic() + _RESULT_SEND_TIMEOUT_MS / 1000
        while True:
            now = time.monotonic()
            self._check(sink, now)  # does the head refuse this worker now?
            if sink.refused is not None:
                # whatever is queued for a refused connection is dropped by libzmq: do not queue it.
                # Connected again after the refusal: wait (at most the deadline) for that handshake
                if sink.retry_at is not None or now >= deadline:
                    self._unsent(result, sink.refused)
                sink.monitor.poll(_SEND_POLL_MS, zmq.POLLIN)
                continue
            try:
                self._push.send(payload, zmq.NOBLOCK)
                break
            except zmq.Again:
                if now >= deadline:
                    self._unsent(result, f"it could not be queued for the sink within "
                                         f"{_RESULT_SEND_TIMEOUT_MS / 1000:g} s (1000 results wait for the head)")
                self._push.poll(_SEND_POLL_MS, zmq.POLLOUT)
        self._log.info("result.sent", task_id=result.task_id, attempt=result.attempt, ok=result.ok)

    def _unsent(self, result: Result, reason: str) -> NoReturn:
        self._log.error("result.unsent", task_id=result.task_id, attempt=result.attempt, reason=reason,
                        note="the head counts this attempt as lost and sends the task again")
        raise ResultUnsent(result.task_id, result.attempt, reason)

    def close(self) -> None:
        """Close the sockets (a queued result gets up to 2 s to leave). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._beat_thread is not None:
            self._beat_stop.set()
            self._beat_wake.set()
            self._beat_thread.join(timeout=5.0)
        for watched in self._watched:
            watched.close()
        self._watched = []
        for sock in self._sockets:
            sock.close()  # its own LINGER: 0 for the DEALER, up to 2 s for a queued result on the PUSH
        if self._own_context:
            self._ctx.term()
        self._log.info("channel.closed")

    def __enter__(self) -> WorkerChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("channel is closed")

    def _send_ready(self) -> None:
        try:
            self._dealer.send(self._ready_payload, zmq.NOBLOCK)
        except zmq.Again:  # a few Ready are already queued for an unreachable head
            self._log.debug("ready.skipped", reason="send queue full")

    def _watch(self, name: str, sock: zmq.Socket[bytes], endpoint: str) -> _Watched:
        watched = _Watched(name, sock, endpoint)
        self._watched.append(watched)
        return watched

    def _check_handshakes(self, now: float) -> None:
        """Log (at most once per reason every 10 s) handshakes the head refused, and
        connect again the sockets whose connection libzmq gave up on."""
        for watched in self._watched:
            self._check(watched, now)

    def _check(self, watched: _Watched, now: float, *, count: bool = True) -> None:
        """Read one socket's handshake events; connect it again when a refusal's retry is due.
        ``count``: add its failures to :attr:`handshake_failures` (the DEALER's and the result PUSH's)."""
        for kind, value in monitor_events(watched.monitor):
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                watched.refused = None
                continue
            if count:
                self.handshake_failures += 1
            reason = handshake_reason(kind, value, side="worker")
            if kind != zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:  # refused outright: libzmq will not retry
                watched.retry_at = now + self._reconnect[1] / 1000
                watched.refused = reason
            if self._handshake_log.allow((kind, value), now):
                self._log.warning("auth.handshake_failed", socket=watched.name, endpoint=watched.endpoint,
                                  reason=reason, curve=self._curve is not None, failures=self.handshake_failures)
        if watched.retry_at is not None and now >= watched.retry_at:
            watched.retry_at = None
            try:
                watched.sock.disconnect(watched.endpoint)
            except zmq.ZMQError:  # the refused connection is already gone
                pass
            watched.sock.connect(watched.endpoint)
            self._log.debug("channel.reconnect", socket=watched.name, endpoint=watched.endpoint,
                            reason="refused at the handshake")

    def _admitted(self, now: float) -> None:
        """A task came from the head, so it admits this worker's key now (e.g. put back on its
        allow-list): connect again at once the result socket if the head refused it before, rather
        than at its next retry (the heartbeat thread does the same for its own socket)."""
        for watched in self._watched:
            self._check(watched, now)  # what happened before the task came
            if watched.refused is None:
                continue
            if watched.sock is self._dealer:  # the task came on it: its connection is admitted
                watched.refused = watched.retry_at = None
            elif watched.retry_at is not None:
                watched.retry_at = now
                self._check(watched, now)

    def _receive(self, timeout_ms: int) -> Task | None:
        """Wait up to timeout_ms for one Task; drop anything else."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            remaining = max(0, math.ceil((deadline - time.monotonic()) * 1000))
            if not self._dealer.poll(remaining, zmq.POLLIN):
                return None
            try:
                frames = self._dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:  # POLLIN is a hint (libzmq may report it for a ZMTP heartbeat)
                continue
            if len(frames) != 1:
                self._log.warning("frame.rejected", socket="ventilator", reason=f"expected 1 frame, got {len(frames)}")
                continue
            try:
                msg = decode(frames[0])
            except ProtocolError as exc:
                self._log.warning("frame.rejected", socket="ventilator", reason=str(exc))
                continue
            if not isinstance(msg, Task):
                self._log.warning("frame.rejected", socket="ventilator",
                                  reason=f"a {msg.TYPE} message from the ventilator")
                continue
            self._log.info("task.received", task_id=msg.task_id, attempt=msg.attempt, genotype=msg.genotype)
            self._admitted(time.monotonic())
            return msg

    def _heartbeat_loop(self) -> None:
        """Runs in the heartbeat thread; owns its own PUSH socket (and its handshake monitor, so a
        connection the head refused is made again, as the channel's own sockets are)."""
        sock = None
        watched = None
        try:
            # PUSH, connect, sink endpoint: Heartbeat messages, from this thread only
            sock = self._ctx.socket(zmq.PUSH)
            self._configure(sock, linger_ms=0, sndhwm=_HEARTBEAT_HWM)
            watched = _Watched("heartbeat", sock, self.sink)
            sock.connect(self.sink)
            seen: Task | None = None
            while not self._beat_stop.is_set():
                with self._beat_lock:
                    current = self._current
                now = time.monotonic()
                if current is not None and current[0] is not seen:  # a task came: the head admits this worker
                    seen = current[0]
                    self._check(watched, now, count=False)
                    if watched.retry_at is not None:  # refused before it came: connect again now
                        watched.retry_at = now
                self._check(watched, now, count=False)
                if current is None:
                    wait = self.heartbeat_s
                elif now < current[2]:
                    wait = current[2] - now
                else:
                    task, job, _ = current
                    beat = Heartbeat(self.worker_id, task.task_id, task.attempt, job.value)
                    try:
                        sock.send(encode(beat), zmq.NOBLOCK)
                    except zmq.Again:
                        pass  # head away; the next beat will try again
                    with self._beat_lock:
                        if self._current is current:
                            self._current = (task, job, now + self.heartbeat_s)
                    wait = self.heartbeat_s
                self._beat_wake.wait(wait)
                self._beat_wake.clear()
        except Exception:  # never kill the worker from the heartbeat thread
            self._log.exception("heartbeat.error")
        finally:
            if watched is not None:
                watched.close()
            if sock is not None:
                sock.close(linger=0)
