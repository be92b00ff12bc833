"""What an operator sees of a running broker: periodic counters, bad frames summed up per
socket and sender, the cap on connections per peer address. Real sockets on loopback."""

from __future__ import annotations

import socket
import time

import pytest
import structlog
import zmq

from transport.broker import Broker
from transport.codec import encode
from transport.protocol import Ready

ANY = "tcp://127.0.0.1:*"


@pytest.fixture
def logs():
    with structlog.testing.capture_logs() as captured:
        yield captured


def events(captured: list, name: str) -> list[dict]:
    return [e for e in captured if e["event"] == name]


def until(broker: Broker, cond, pump=lambda: None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"condition not met in {timeout} s: {broker.stats}"
        pump()
        broker.poll(0.02)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def test_counters_are_logged_periodically_and_when_asked(ctx, logs):
    with Broker(ANY, ANY, heartbeat_s=0.1, counters_every_s=0.2) as broker:
        # DEALER, connect, ventilator endpoint (an idle worker)
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(broker.ventilator_endpoint)
        broker.submit("c1", "850|20|1000", {"epochs": 1})
        until(broker, lambda: len(events(logs, "broker.counters")) >= 2, lambda: dealer.send(encode(Ready("w1"))))
        asked = broker.log_counters()
        dealer.close()
    closed = events(logs, "broker.closed")[-1]
    last = events(logs, "broker.counters")[-1]
    assert {k: v for k, v in last.items() if k not in ("event", "log_level")} == asked
    assert set(asked) == (set(closed) - {"event", "log_level"}) | {"workers_alive", "connections"}
    assert asked["workers_alive"] == 1 and asked["dispatched"] >= 1 and asked["pending"] == 1


def test_a_burst_of_bad_frames_is_summed_up_per_socket_and_sender(ctx, logs):
    with Broker(ANY, ANY, heartbeat_s=0.1) as broker:
        # PUSH, connect, sink endpoint (sends garbage)
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(broker.sink_endpoint)
        for _ in range(50):
            push.send(b"\xc1 not msgpack")
        until(broker, lambda: broker.stats.bad_frames == 50)
        push.close()
        assert broker.workers() == {} and broker.stats.workers_seen == 0  # garbage is not a worker
    logged = events(logs, "frame.rejected")
    assert len(logged) == 5 and {(e["socket"], e["sender"]) for e in logged} == {("sink", "127.0.0.1")}
    (summary,) = events(logs, "frame.rejected.suppressed")
    assert (summary["socket"], summary["sender"], summary["count"]) == ("sink", "127.0.0.1", 45)


def test_connections_over_the_cap_per_address_are_closed_at_once(logs):
    with Broker(ANY, ANY, heartbeat_s=0.1, max_connections_per_address=4) as broker:
        port = int(broker.ventilator_endpoint.rsplit(":", 1)[1])
        flood = []
        try:
            for _ in range(10):  # idle TCP connections from 127.0.0.2: no bytes, no handshake
                s = socket.socket()
                s.bind(("127.0.0.2", 0))
                s.connect(("127.0.0.1", port))
                flood.append(s)
            until(broker, lambda: broker.stats.connections_refused == 6)
            until(broker, lambda: broker.connections() == 4)
            # a worker from another address still gets in
            ctx = zmq.Context()
            try:
                # DEALER, connect, ventilator endpoint (a worker from 127.0.0.1)
                dealer = ctx.socket(zmq.DEALER)
                dealer.setsockopt(zmq.LINGER, 0)
                dealer.connect(broker.ventilator_endpoint)
                until(broker, lambda: "w1" in broker.workers(), lambda: dealer.send(encode(Ready("w1"))))
            finally:
                ctx.destroy(linger=0)
        finally:
            for s in flood:
                s.close()
    (refused,) = events(logs, "connection.refused")  # one line per address per 10 s
    assert refused["address"].startswith("127.0.0.2:") and refused["cap"] == 4
