"""CURVE on the head's sockets, the ZAP allow-list, the socket monitors that see refused
handshakes, and what each kind of refusal means (for the head and for a worker).

* :func:`make_curve_server` turns a bound socket into a CURVE server checked by ZAP;
* :class:`AllowList` is the ZAP handler: a thread that admits the allowed client keys;
* :class:`SocketWatch` reads the monitors of the head's sockets and logs the refusals,
  through one :class:`~transport.throttle.RateLimiter` per peer;
* :func:`handshake_reason` words a failed handshake for the head's log or a worker's.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import structlog
import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from transport.keys import CurveServer
from transport.throttle import RateLimiter

__all__ = ["AllowList", "HANDSHAKE_FAILED", "SocketWatch", "ZAP_DOMAIN", "handshake_reason", "make_curve_server",
           "monitor_events"]

log = structlog.get_logger(__name__)

ZAP_DOMAIN = "evovae"  # the ZAP domain of the broker's CURVE sockets
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_DRAIN_BATCH = 512  # monitor events read per socket per round
_REFUSAL_LINES_PER_S = 20  # auth.refused / auth.key_refused lines a second, in all


def handshake_reason(kind: int, value: int, *, side: str) -> str:
    """What a failed handshake most likely means, worded for the ``"head"``'s log or a
    ``"worker"``'s (which end notices a bad handshake first is a race: a plaintext client, or
    one with the wrong keys, often shows up only as a peer that hung up)."""
    head = side == "head"
    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        if head:
            return f"ZAP refused the client (status {value})"
        return f"the head refused this worker's key (ZAP status {value}): add its public key to the head's allow-list"
    if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            if head:
                return "the peer does not use CURVE (a plaintext client, or no --server-key)"
            return "security mismatch: one side uses CURVE and the other does not (--server-key/--key vs --insecure)"
        if head and value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return "CURVE handshake did not decrypt (the client has another server public key, or bad keys)"
        return f"ZMTP protocol error 0x{value:x} during the handshake"
    if head:
        return (f"the peer hung up during the handshake ({zmq.strerror(value)}): a plaintext client, a wrong key, "
                f"or a port scan")
    return (f"handshake failed ({zmq.strerror(value)}): with CURVE, most likely --server-key is not the head's "
            f"public key")


def monitor_events(monitor: zmq.Socket, limit: int = _DRAIN_BATCH) -> Iterator[tuple[int, int]]:
    """(event, value) of the events waiting on a monitor socket, without blocking."""
    for _ in range(limit):
        if not monitor.get(zmq.EVENTS) & zmq.POLLIN:
            return
        try:
            event = recv_monitor_message(monitor, zmq.NOBLOCK)
        except (zmq.ZMQError, ValueError):  # zmq.Again, or a malformed event
            return
        yield int(event["event"]), int(event["value"])


def make_curve_server(name: str, sock: zmq.Socket, curve: CurveServer) -> None:
    """Make ``sock`` (before it binds) a CURVE server whose clients the ZAP handler checks."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret_key)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public_key)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    try:  # no ZAP answer -> refuse the client (libzmq's default would admit any key)
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    except (AttributeError, zmq.ZMQError) as exc:
        log.warning("auth.enforce_unavailable", socket=name, error=str(exc),
                    note="libzmq admits any CURVE key if the ZAP handler stops; it runs until close()")


class SocketWatch:
    """The monitors of the head's bound sockets: counts and logs refused handshakes."""

    def __init__(self) -> None:
        self._watched: list[tuple[str, zmq.Socket, zmq.Socket]] = []  # (name, socket, its monitor)
        self.limiter = RateLimiter(per_key=_REFUSAL_LINES_PER_S, total=_REFUSAL_LINES_PER_S, window_s=1.0)
        self.handshake_failures = 0

    def watch(self, name: str, sock: zmq.Socket) -> zmq.Socket:
        """Monitor ``sock``'s failed handshakes; returns the monitor (for a poller)."""
        monitor = sock.get_monitor_socket(HANDSHAKE_FAILED)
        monitor.setsockopt(zmq.LINGER, 0)
        self._watched.append((name, sock, monitor))
        return monitor

    @property
    def monitors(self) -> list[zmq.Socket]:
        return [monitor for _, _, monitor in self._watched]

    def drain(self, now: float) -> None:
        """Read every monitor: count each failed handshake and log it (rate-limited)."""
        for name, _, monitor in self._watched:
            for kind, value in monitor_events(monitor):
                self.handshake_failures += 1
                if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    continue  # the ZAP handler logged it (auth.key_refused, with the key and address)
                if self.limiter.allow("auth.refused", now):
                    log.warning("auth.refused", socket=name, reason=handshake_reason(kind, value, side="head"),
                                failures=self.handshake_failures)
        self.flush(now)

    def flush(self, now: float, *, force: bool = False) -> None:
        for _, count in self.limiter.summary(now, force=force):
            log.warning("auth.refused.suppressed", count=count)

    def close(self) -> None:
        """Stop the monitors (before their sockets close, or libzmq may hang)."""
        for _, sock, monitor in self._watched:
            sock.disable_monitor()
            monitor.close(linger=0)
        self._watched = []


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


class AllowList(ThreadAuthenticator):
    """ZAP handler in a thread of its own: admits CURVE clients whose public key is allowed.

    pyzmq calls :meth:`callback` (its credentials-provider interface) with the client's
    Z85 public key; it runs in the handler's thread, one request at a time. Start it before
    the CURVE sockets bind (with ZAP_ENFORCE_DOMAIN libzmq refuses every client while no
    handler answers); stop it after they are closed.
    """

    def __init__(self, context: zmq.Context, allowed: frozenset) -> None:
        super().__init__(context=context, log=_ZapLog())
        self._allowed_keys = frozenset(allowed)  # not _allowed: pyzmq uses that for IP addresses
        self._peer = "?"
        self._limit = RateLimiter(per_key=_REFUSAL_LINES_PER_S, total=_REFUSAL_LINES_PER_S, window_s=1.0)
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
            return True
        self.refused += 1
        now = time.monotonic()
        if self._limit.allow("auth.key_refused", now):
            log.warning("auth.key_refused", client_key=client_key, address=self._peer,
                        reason="public key not on the allow-list", refused=self.refused)
        self.flush(now)
        return False

    def flush(self, now: float, *, force: bool = False) -> None:
        for _, count in self._limit.summary(now, force=force):
            log.warning("auth.key_refused.suppressed", count=count)
