"""CURVE on the head's sockets, the ZAP allow-list, the socket monitors that see every
connection and refused handshake, and what each kind of refusal means.

* :func:`make_curve_server` turns a bound socket into a CURVE server checked by ZAP;
* :class:`AllowList` is the ZAP handler: a thread that admits the allowed client keys (the
  set can be swapped while it runs: :meth:`AllowList.set_allowed`);
* :class:`SocketWatch` reads the monitors of the head's sockets: it tracks each connection
  and its peer address, closes connections over the cap per address or of a revoked key,
  says when the head is out of file descriptors, and logs refusals with the peer's address,
  through one :class:`~transport.throttle.RateLimiter` per peer;
* :func:`handshake_reason` words a failed handshake for the head's log or a worker's.

Closing one connection of a bound socket is not something ZeroMQ offers; the watch does it
with ``shutdown(2)`` on the connection's descriptor (from the monitor's ACCEPTED event, or
the ``SRCFD`` of a message), after checking that the descriptor still has the same peer.
libzmq then sees the peer hang up and closes the connection itself.
"""

from __future__ import annotations

import collections
import errno
import socket
from collections.abc import Iterator
from typing import Any

import structlog
import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from transport.keys import CurveServer
from transport.throttle import RateLimiter

__all__ = ["AllowList", "HANDSHAKE_FAILED", "SocketWatch", "ZAP_DOMAIN", "default_connection_cap", "fd_limits",
           "handshake_reason", "make_curve_server", "monitor_events"]

log = structlog.get_logger(__name__)

ZAP_DOMAIN = "evovae"  # the ZAP domain of the broker's CURVE sockets
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_CONNECTIONS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_ACCEPT_FAILED
_DRAIN_BATCH = 512  # monitor events read per socket per round
_PEER_WINDOW_S = 10.0  # refusals: at most one line per peer address this often, the rest summed up
_PEER_LINES = 20  # ... and at most this many lines a window, in all


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


def monitor_events(monitor: zmq.Socket[bytes], limit: int = _DRAIN_BATCH) -> Iterator[tuple[int, int]]:
    """(event, value) of the events waiting on a monitor socket, without blocking."""
    for _ in range(limit):
        if not int(monitor.get(zmq.EVENTS)) & zmq.POLLIN:
            return
        try:
            event = recv_monitor_message(monitor, zmq.NOBLOCK)
        except (zmq.ZMQError, ValueError):  # zmq.Again, or a malformed event
            return
        yield int(event["event"]), int(event["value"])


def make_curve_server(name: str, sock: zmq.Socket[bytes], curve: CurveServer) -> None:
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


def fd_limits() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of this process; (-1, -1) where it cannot be read."""
    try:
        import resource

        return resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return -1, -1


def default_connection_cap() -> int:
    """Connections one peer address may hold: a quarter of the descriptor limit (at least 16), so
    that one address cannot take them all (256 under the common default of 1024; a host runs 3
    per worker process)."""
    soft = fd_limits()[0]
    return 256 if soft <= 0 else max(16, soft // 4)


def _peer_of(fd: int) -> str | None:
    """``ip:port`` of the TCP peer of descriptor ``fd`` (``local`` for ipc), None if none."""
    try:
        sock = socket.socket(fileno=fd)  # borrowed, not duplicated: it works when out of descriptors too
    except OSError:
        return None
    try:
        family, peer = sock.family, sock.getpeername()
    except OSError:
        return None
    finally:
        sock.detach()  # never close it: the descriptor is libzmq's
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}" if family == socket.AF_INET else f"[{peer[0]}]:{peer[1]}"
    return "local"


def _shutdown(fd: int, peer: str) -> bool:
    """shutdown(2) the connection on ``fd`` if its peer is still ``peer``; libzmq closes it then."""
    if _peer_of(fd) != peer:
        return False  # closed meanwhile, and maybe the number was reused: leave it alone
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        sock.detach()


def _host(peer: str) -> str:
    return peer.rsplit(":", 1)[0] if peer != "local" else peer


class SocketWatch:
    """The monitors of the head's bound sockets: connections, refusals, descriptor shortage."""

    def __init__(self, stats: Any, *, curve: bool, max_per_address: int) -> None:
        self.stats = stats
        self.curve = curve
        self.max_per_address = max_per_address
        self._watched: list[tuple[str, zmq.Socket[bytes], zmq.Socket[bytes]]] = []  # (name, socket, its monitor)
        self._peers: dict[int, str] = {}  # open connection: descriptor -> peer "ip:port"
        self._per_host: collections.Counter[str] = collections.Counter()
        self._keys: dict[int, str] = {}  # descriptor -> the CURVE key its messages came with
        # failed handshakes waiting for the end of their connection, which names the peer: per
        # socket, (round, kind, value); one left over from the round before is logged without it
        self._failed: dict[str, collections.deque[tuple[int, int, int]]] = {}
        self._round = 0
        self.limiter = RateLimiter(per_key=1, total=_PEER_LINES, window_s=_PEER_WINDOW_S)

    def watch(self, name: str, sock: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
        """Monitor ``sock``; returns the monitor (for a poller)."""
        monitor = sock.get_monitor_socket(_CONNECTIONS | (HANDSHAKE_FAILED if self.curve else 0))
        monitor.setsockopt(zmq.LINGER, 0)
        self._watched.append((name, sock, monitor))
        self._failed[name] = collections.deque()
        return monitor

    @property
    def monitors(self) -> list[zmq.Socket[bytes]]:
        return [monitor for _, _, monitor in self._watched]

    @property
    def connections(self) -> int:
        """Peer connections open now, on both sockets (handshake done or not)."""
        return len(self._peers)

    def drain(self, now: float, zap: AllowList | None = None) -> None:
        """Read every monitor (and the ZAP handler's decisions) and act on what happened."""
        self._round += 1
        for name, _, monitor in self._watched:
            failed = self._failed[name]
            for kind, value in monitor_events(monitor):
                if kind == zmq.EVENT_ACCEPTED:
                    self._accepted(name, value, now)
                elif kind == zmq.EVENT_DISCONNECTED:
                    self._disconnected(name, value, now)
                elif kind == zmq.EVENT_ACCEPT_FAILED:
                    self._accept_failed(name, value, now)
                else:
                    self.stats.handshake_failures += 1
                    failed.append((self._round, kind, value))  # its DISCONNECTED names the peer
            while failed and failed[0][0] < self._round - 1:  # its connection's end came in neither round: peer unknown
                self._refused(name, *failed.popleft()[1:], "?", now)
        while zap is not None and zap.decisions:
            self._zap_decision(*zap.decisions.popleft(), now)

    def note(self, fd: int, key: str) -> None:
        """A message with CURVE key ``key`` came in on descriptor ``fd`` (its SRCFD)."""
        self._keys[fd] = key

    def cut(self, key: str) -> int:
        """Close every connection that ``key``'s messages came on; returns how many."""
        cut = 0
        for fd in [fd for fd, k in self._keys.items() if k == key]:
            del self._keys[fd]
            if fd in self._peers and _shutdown(fd, self._peers[fd]):
                cut += 1
        self.stats.connections_refused += cut
        return cut

    def cut_fd(self, fd: int) -> None:
        """Close the connection on ``fd`` (a message from a revoked key just came on it)."""
        if fd in self._peers and _shutdown(fd, self._peers[fd]):
            self.stats.connections_refused += 1

    def _accepted(self, name: str, fd: int, now: float) -> None:
        peer = _peer_of(fd)
        if peer is None:
            return  # gone already; its DISCONNECTED follows
        self._peers[fd] = peer
        host = _host(peer)
        self._per_host[host] += 1
        if host == "local" or self._per_host[host] <= self.max_per_address:
            return
        if _shutdown(fd, peer):
            self.stats.connections_refused += 1
            if self.limiter.allow(("connection.refused", host), now):
                log.warning("connection.refused", socket=name, address=peer, connections=self._per_host[host],
                            cap=self.max_per_address, reason="too many connections from this address")

    def _disconnected(self, name: str, fd: int, now: float) -> None:
        peer = self._peers.pop(fd, None)
        self._keys.pop(fd, None)
        if peer is not None:
            host = _host(peer)
            self._per_host[host] -= 1
            if self._per_host[host] <= 0:
                del self._per_host[host]
        if self._failed[name]:  # a failed handshake is followed by the end of its connection
            self._refused(name, *self._failed[name].popleft()[1:], peer or "?", now)

    def _refused(self, name: str, kind: int, value: int, peer: str, now: float) -> None:
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return  # the ZAP handler's decision names the key and the address (auth.key_refused)
        if self.limiter.allow(("auth.refused", _host(peer)), now):
            log.warning("auth.refused", socket=name, address=peer, reason=handshake_reason(kind, value, side="head"),
                        failures=self.stats.handshake_failures)

    def _zap_decision(self, admitted: bool, client_key: str, address: str, now: float) -> None:
        if admitted:
            log.info("auth.admitted", client_key=client_key, address=address)
        elif self.limiter.allow(("auth.key_refused", address), now):
            log.warning("auth.key_refused", client_key=client_key, address=address,
                        reason="public key not on the allow-list", failures=self.stats.handshake_failures)

    def _accept_failed(self, name: str, err: int, now: float) -> None:
        self.stats.accept_failures += 1
        if err not in (errno.EMFILE, errno.ENFILE) or not self.limiter.allow(("broker.fd_exhausted", ""), now):
            return
        soft, hard = fd_limits()
        busiest = [f"{host}={n}" for host, n in self._per_host.most_common(3)]
        log.error("broker.fd_exhausted", socket=name, error=errno.errorcode.get(err, str(err)), soft_limit=soft,
                  hard_limit=hard, connections=len(self._peers), busiest=busiest,
                  reason="out of file descriptors: new connections (workers too) wait until some close; "
                         "raise the limit (LimitNOFILE= in the unit, ulimit -n) or lower the cap per address")

    def flush(self, now: float, *, force: bool = False) -> None:
        """Sum up, per event and peer, the lines the limit held back."""
        for key, count in self.limiter.summary(now, force=force):
            event, peer = key if isinstance(key, tuple) else ("auth.refused", key)
            log.warning(f"{event}.suppressed", address=peer, count=count)

    def next_flush(self) -> float:
        return self.limiter.next_summary()

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
    Z85 public key; it runs in the handler's thread, one request at a time, and only
    records its decision in :attr:`decisions` for the broker's thread to log. Start it
    before the CURVE sockets bind (with ZAP_ENFORCE_DOMAIN libzmq refuses every client
    while no handler answers); stop it after they are closed.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], allowed: frozenset[bytes]) -> None:
        super().__init__(context=context, log=_ZapLog())
        self._allowed_keys = frozenset(allowed)  # not _allowed: pyzmq uses that for IP addresses
        self._peer = "?"
        self.decisions: collections.deque[tuple[bool, str, str]] = collections.deque(maxlen=10_000)
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

    @property
    def allowed(self) -> frozenset[bytes]:
        return self._allowed_keys

    def set_allowed(self, allowed: frozenset[bytes]) -> None:
        """Admit these keys from the next handshake on (one reference swap: thread-safe)."""
        self._allowed_keys = frozenset(allowed)

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
        else:
            self.refused += 1
        self.decisions.append((ok, client_key, self._peer))
        return ok
