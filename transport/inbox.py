"""What the head's sockets read, checked before the bookkeeping sees it: the frame shape,
the codec's schema, the message type for the socket, and (with CURVE) the key the
connection authenticated with, which must still be on the allow-list.

A bad frame is counted (``bad_frames``) and logged (``frame.rejected``, with the socket and
the sender); a message from a key removed from the allow-list is counted
(``revoked_messages``), logged (``auth.revoked_message``) and its connection closed. Both
are rate-limited per socket and sender; what is held back is summed up once a second per
socket and sender (``frame.rejected.suppressed``, ``auth.revoked_message.suppressed``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog
import zmq

from transport.auth import SocketWatch
from transport.codec import decode
from transport.outcomes import PLAIN, BrokerStats, Sender
from transport.protocol import Heartbeat, Message, ProtocolError, Ready, Result
from transport.throttle import RateLimiter

__all__ = ["Inbox"]

log = structlog.get_logger(__name__)

_SRCFD = int(zmq.SRCFD)


def _peer_address(frame: zmq.Frame) -> str:
    try:
        return str(frame.get("Peer-Address"))
    except Exception:  # not every transport / libzmq build has it
        return "?"


class Inbox:
    """Turns frames into (message, sender) or a logged, counted rejection."""

    def __init__(self, stats: BrokerStats, watch: SocketWatch, *, max_message_bytes: int,
                 allowed: Iterable[bytes | str] | None) -> None:
        """``allowed``: the CURVE keys (Z85 bytes) admitted now; None in plain mode."""
        self.stats = stats
        self.watch = watch
        self.max_message_bytes = max_message_bytes
        self.allowed: frozenset[str] | None = None
        if allowed is not None:
            self.set_allowed(allowed)
        self.limiter = RateLimiter(per_key=5, total=20, window_s=1.0)

    def set_allowed(self, allowed: Iterable[bytes | str]) -> None:
        self.allowed = frozenset(k.decode("ascii") if isinstance(k, bytes) else k for k in allowed)

    def ventilator(self, frames: list[zmq.Frame], now: float) -> tuple[Ready, bytes, Sender] | None:
        """A Ready with the routing id and sender, from the ROUTER's ``[identity, payload]``."""
        sender = frames[0].bytes.hex() if frames else "?"
        if len(frames) != 2:
            hint = " (no empty delimiter frame is used)" if len(frames) == 3 and not frames[1].bytes else ""
            self.reject("ventilator", sender, f"expected 2 frames [identity, payload], got {len(frames)}{hint}", now)
            return None
        msg = self._decode("ventilator", sender, frames[1], now)
        if msg is None:
            return None
        if not isinstance(msg, Ready):
            self.reject("ventilator", sender, f"a {msg.TYPE} message on the ventilator socket (only ready goes there)",
                        now)
            return None
        who = self._sender("ventilator", frames[1], "?", now)
        return None if who is None else (msg, frames[0].bytes, who)

    def sink(self, frame: zmq.Frame, pull: zmq.Socket[bytes], now: float) -> tuple[Heartbeat | Result, Sender] | None:
        """A Heartbeat or Result with its sender, from one PULL frame (and any parts after it)."""
        address = _peer_address(frame)
        parts, more = 1, frame.more
        while more:  # the rest of a multi-part message has arrived already
            more = pull.recv(zmq.NOBLOCK, copy=False).more
            parts += 1
        if parts != 1:
            self.reject("sink", address, f"expected 1 frame, got {parts}", now)
            return None
        msg = self._decode("sink", address, frame, now)
        if msg is None:
            return None
        if not isinstance(msg, (Heartbeat, Result)):
            self.reject("sink", address, f"a {msg.TYPE} message on the sink socket (only heartbeat and result go "
                                         f"there)", now)
            return None
        who = self._sender("sink", frame, address, now)
        return None if who is None else (msg, who)

    def reject(self, socket: str, sender: str, reason: str, now: float) -> None:
        self.stats.bad_frames += 1
        if self.limiter.allow(("frame.rejected", socket, sender), now):
            log.warning("frame.rejected", socket=socket, sender=sender, reason=reason)

    def flush(self, now: float, *, force: bool = False) -> None:
        for key, count in self.limiter.summary(now, force=force):
            event, socket, sender = key if isinstance(key, tuple) else ("frame.rejected", "*", key)
            log.warning(f"{event}.suppressed", socket=socket, sender=sender, count=count,
                        bad_frames=self.stats.bad_frames)

    def _decode(self, socket: str, sender: str, frame: zmq.Frame, now: float) -> Message | None:
        try:
            return decode(frame.buffer, max_bytes=self.max_message_bytes)
        except ProtocolError as exc:
            self.reject(socket, sender, str(exc), now)
            return None

    def _sender(self, socket: str, frame: zmq.Frame, address: str, now: float) -> Sender | None:
        """Who sent ``frame``; None (counted, logged, its connection closed) for a revoked key."""
        if self.allowed is None:
            return PLAIN if address == "?" else Sender(None, address)
        key: Any = frame.get("User-Id")  # the ZAP handler's user id: the client's Z85 public key
        fd = frame.get(_SRCFD)
        if key in self.allowed:
            self.watch.note(fd, key)
            return Sender(key, address if address != "?" else _peer_address(frame))
        self.stats.revoked_messages += 1
        self.watch.cut_fd(fd)
        if self.limiter.allow(("auth.revoked_message", socket, key), now):
            log.warning("auth.revoked_message", socket=socket, key=key, address=_peer_address(frame),
                        reason="its key was removed from the allow-list: message dropped, connection closed")
        return None
