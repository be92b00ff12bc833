"""Connections a worker has replaced, and connections whose peer went silent (issue 18.6).

After a network partition the kernel may deliver, long after the worker reconnected, what it
still held for the worker's old connection: a ``ready`` there must change nothing (the running
task is neither orphaned nor re-sent, no task goes to the dead connection). And the head closes
a connection whose peer stays silent (ZMTP heartbeats on its bound sockets), so such leftovers
are not even read. Real sockets on 127.0.0.1: raw pyzmq DEALER/PUSH sockets standing in for the
worker's old and new connections, and a raw TCP socket that completes the ZMTP handshake and
then says nothing (a partitioned peer, as the head sees it).
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest
import structlog
import zmq

from transport.broker import Broker, Done, zmtp_heartbeat_ms
from transport.codec import decode, encode
from transport.keys import CurveServer
from transport.protocol import Heartbeat, Ready, Result, Task

HB = 0.1  # the head's heartbeat_s; liveness 3: the silence limit is 0.3 s, the grace period 0.1 s
ANY = "tcp://127.0.0.1:*"
TASK = ("conn-1", "850|20|1000", {"epochs": 1})


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def logs():
    with structlog.testing.capture_logs() as captured:
        yield captured


def events(captured: list, name: str) -> list[dict]:
    return [e for e in captured if e["event"] == name]


def until(broker: Broker, cond, pump=lambda: None, timeout: float = 10.0) -> list:
    outcomes: list = []
    deadline = time.monotonic() + timeout
    while not cond(outcomes):
        assert time.monotonic() < deadline, f"condition not met in {timeout} s: {broker.stats}"
        pump()
        outcomes += broker.poll(0.02)
    return outcomes


class Keys:
    """A head key pair and one worker key pair (the worker's connections all use it)."""

    def __init__(self) -> None:
        self.head_public, head_secret = zmq.curve_keypair()
        self.worker = zmq.curve_keypair()
        self.server = CurveServer(self.head_public, head_secret, frozenset([self.worker[0]]))


def connect(ctx: zmq.Context, kind: int, endpoint: str, keys: Keys | None) -> zmq.Socket:
    """A raw worker socket (DEALER or PUSH, connect), CURVE when ``keys`` are given."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys.head_public, *keys.worker
    sock.connect(endpoint)
    return sock


@pytest.mark.parametrize("mode", ["plain", "curve"])
def test_messages_on_a_replaced_connection_do_not_orphan_the_running_task(ctx, logs, mode):
    keys = Keys() if mode == "curve" else None
    with Broker(ANY, ANY, heartbeat_s=HB, curve=None if keys is None else keys.server) as broker:
        vent, sink = broker.ventilator_endpoint, broker.sink_endpoint
        # the worker's first connections, which the test keeps open (as the kernel did through the partition)
        old, old_push = connect(ctx, zmq.DEALER, vent, keys), connect(ctx, zmq.PUSH, sink, keys)
        until(broker, lambda _: "w-1" in broker.workers(), lambda: old.send(encode(Ready("w-1"))))
        # the worker reconnects: new sockets, so new connections and a new routing id
        new, push = connect(ctx, zmq.DEALER, vent, keys), connect(ctx, zmq.PUSH, sink, keys)
        until(broker, lambda _: events(logs, "worker.reconnected"), lambda: new.send(encode(Ready("w-1"))))
        broker.submit(*TASK)
        got: list[Task] = []
        until(broker, lambda _: got, lambda: new.poll(0) and got.append(decode(new.recv())))
        (task,) = got
        dispatched = time.monotonic()

        def busy() -> None:  # the worker trains on its new connections: heartbeats, no ready
            push.send(encode(Heartbeat("w-1", task.task_id, task.attempt, 0.5)), zmq.NOBLOCK)
            time.sleep(HB / 4)

        until(broker, lambda _: time.monotonic() - dispatched > 2 * HB, busy)  # past the crossed-ready grace
        # what the old connections deliver now: idle readies, a heartbeat of an earlier attempt
        for _ in range(5):
            old.send(encode(Ready("w-1")))
        old_push.send(encode(Heartbeat("w-1", "earlier-task", 1, 0.9)))
        until(broker, lambda _: broker.stats.stale_readies == 5, busy)
        replayed = time.monotonic()
        until(broker, lambda _: time.monotonic() - replayed > 4 * HB, busy)  # past any orphan deadline
        assert events(logs, "task.orphaned") == [] and broker.stats.resends == 0
        assert broker.workers()["w-1"]["state"] == "busy" and broker.workers()["w-1"]["task_id"] == TASK[0]
        assert not old.poll(0), "a task went to the replaced connection"
        assert broker.stats.stale_heartbeats >= 1 and broker.stats.identity_mismatches == 0
        (stale,) = events(logs, "ready.stale")  # one line per worker every 10 s; the rest summed up later
        assert stale["log_level"] == "warning" and stale["worker_id"] == "w-1"

        done = Result("w-1", task.task_id, task.attempt, True, {"loss": 240.0})
        push.send(encode(done))
        outcomes = until(broker, lambda out: out)
        assert [(o.task_id, o.result) for o in outcomes if isinstance(o, Done)] == [(TASK[0], done)]
        assert (broker.stats.dispatched, broker.stats.completed, broker.stats.resends) == (1, 1, 0)
        # the next task goes to the current connection too
        broker.submit("conn-2", "50|10|50", {"epochs": 1})
        got.clear()
        until(broker, lambda _: got, lambda: (new.send(encode(Ready("w-1"))),
                                             new.poll(0) and got.append(decode(new.recv()))))
        assert got[0].task_id == "conn-2" and not old.poll(0)
        for sock in (old, old_push, new, push):
            sock.close()


# ---------------------------------------------------------------------- silent peers


def zmtp_null_handshake(endpoint: str, socket_type: bytes = b"DEALER") -> socket.socket:
    """A TCP connection that completes the ZMTP 3.1 NULL handshake with ``endpoint``, then is never
    read or written again: it answers no PING, as a peer behind a partition would."""
    where = urlsplit(endpoint)
    conn = socket.create_connection((where.hostname, where.port), timeout=5)
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x01" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31
    conn.sendall(greeting)
    body = b"\x05READY" + b"\x0bSocket-Type" + len(socket_type).to_bytes(4, "big") + socket_type
    conn.sendall(b"\x04" + bytes([len(body)]) + body)
    received = b""
    while len(received) < 64 + 2:  # the head's greeting and the start of its READY
        chunk = conn.recv(4096)
        assert chunk, "the head closed the connection during the handshake"
        received += chunk
    assert received[:1] == b"\xff" and received[10:12] == b"\x03\x01", received[:12]
    return conn


def test_the_head_closes_a_connection_whose_peer_is_silent(ctx):
    assert zmtp_heartbeat_ms(1.0, 3) == (1000, 3000)  # a PING every heartbeat, closed after the silence limit
    assert zmtp_heartbeat_ms(0.05, 3) == (100, 1000)  # never under 1 s: a loaded machine does not cut live peers
    with Broker(ANY, ANY, heartbeat_s=0.2, liveness=3) as broker:
        timeout_s = broker.connection_timeout_s
        assert timeout_s == 1.0
        alive = connect(ctx, zmq.DEALER, broker.ventilator_endpoint, None)  # libzmq answers every PING
        silent = zmtp_null_handshake(broker.ventilator_endpoint)
        silent_sink = zmtp_null_handshake(broker.sink_endpoint, b"PUSH")
        until(broker, lambda _: broker.connections() == 3)
        opened = time.monotonic()
        closed: dict[str, float] = {}

        def watch() -> None:
            for name, conn in (("ventilator", silent), ("sink", silent_sink)):
                if name in closed:
                    continue
                conn.setblocking(False)
                try:
                    while True:  # the head's PINGs, until its end of the connection closes
                        if conn.recv(4096) == b"":
                            closed[name] = time.monotonic() - opened
                            break
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    closed[name] = time.monotonic() - opened

        until(broker, lambda _: len(closed) == 2, watch, timeout=10 * timeout_s)
        assert all(0.5 * timeout_s <= t <= 5 * timeout_s for t in closed.values()), closed
        until(broker, lambda _: broker.connections() == 1)
        # the live peer, just as quiet at the message level, keeps its connection and still gets work
        until(broker, lambda _: time.monotonic() - opened > 2 * timeout_s, lambda: time.sleep(0.02))
        assert broker.connections() == 1
        broker.submit(*TASK)
        got: list = []
        until(broker, lambda _: got, lambda: (alive.send(encode(Ready("alive-1")), zmq.NOBLOCK),
                                             alive.poll(0) and got.append(decode(alive.recv()))))
        assert got[0].task_id == TASK[0]
        silent.close()
        silent_sink.close()
        alive.close()
