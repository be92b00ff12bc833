"""Results bound to the CURVE key that was handed the task, allow-list reload (a removed key
is cut off), refusals logged with the peer's address. Real CURVE sockets on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from types import SimpleNamespace

import pytest
import structlog
import zmq

from transport import keyfiles
from transport.broker import Broker, Done
from transport.codec import decode, encode
from transport.keys import CurveServer
from transport.protocol import Heartbeat, Ready, Result, Task

HB = 0.1
ANY = "tcp://127.0.0.1:*"
TASK = ("bound-1", "850|20|1000", {"epochs": 1})


@pytest.fixture
def ring(tmp_path):
    """head; w1 and w2 both on the allow-list (a directory), w3 not yet."""
    d, allow = tmp_path / "keys", tmp_path / "allow"
    head_public, head_secret = keyfiles.generate(d, "head")
    allow.mkdir()
    out = SimpleNamespace(allow=allow, head_key=keyfiles.load_public(head_public))
    for name in ("w1", "w2", "w3"):
        public, secret = keyfiles.generate(d, name)
        if name != "w3":
            (allow / f"{name}.key").write_bytes(public.read_bytes())
        setattr(out, name, keyfiles.load_secret(secret))
        setattr(out, f"{name}_file", public)
    out.server = CurveServer.from_files(head_secret, allow)
    return out


@pytest.fixture
def logs():
    with structlog.testing.capture_logs() as captured:
        yield captured


def events(captured: list, name: str) -> list[dict]:
    return [e for e in captured if e["event"] == name]


class RawWorker:
    """A CURVE worker written with raw pyzmq (DEALER + PUSH), driven by the test."""

    def __init__(self, ctx: zmq.Context, broker: Broker, pair: tuple, server_key: bytes, worker_id: str) -> None:
        self.worker_id = worker_id
        self.socks = []
        for kind, endpoint in ((zmq.DEALER, broker.ventilator_endpoint), (zmq.PUSH, broker.sink_endpoint)):
            # DEALER / PUSH, connect, ventilator / sink endpoint, CURVE client
            sock = ctx.socket(kind)
            sock.setsockopt(zmq.LINGER, 0)
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_key, *pair
            sock.setsockopt(zmq.RECONNECT_IVL, 50)
            sock.connect(endpoint)
            self.socks.append(sock)
        self.dealer, self.push = self.socks

    def ready(self) -> None:
        self.dealer.send(encode(Ready(self.worker_id)), zmq.NOBLOCK)

    def send(self, message) -> None:
        self.push.send(encode(message), zmq.NOBLOCK)

    def task(self) -> Task | None:
        return decode(self.dealer.recv()) if self.dealer.poll(0) else None

    def close(self) -> None:
        for sock in self.socks:
            sock.close(linger=0)


def until(broker: Broker, cond, pump=lambda: None, timeout: float = 10.0) -> list:
    outcomes: list = []
    deadline = time.monotonic() + timeout
    while not cond(outcomes):
        assert time.monotonic() < deadline, f"condition not met in {timeout} s: {broker.stats}"
        pump()
        outcomes += broker.poll(0.02)
    return outcomes


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def test_an_allowed_key_forging_another_workers_result_is_refused(ring, ctx, logs):
    with Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server) as broker:
        honest = RawWorker(ctx, broker, ring.w1, ring.head_key, "honest-1")
        forger = RawWorker(ctx, broker, ring.w2, ring.head_key, "forger-1")
        broker.submit(*TASK)
        got: list[Task] = []
        until(broker, lambda _: got, lambda: (honest.ready(), got.extend(filter(None, [honest.task()]))))
        task = got[0]
        # the forger is on the allow-list too, but was never handed this task
        forged = Result("honest-1", task.task_id, task.attempt, True, {"loss": 0.001})
        forger.send(forged)
        forger.send(Heartbeat("honest-1", task.task_id, task.attempt, 0.99))
        until(broker, lambda _: broker.stats.identity_mismatches == 2)
        assert broker.pending == 1 and broker.stats.completed == 0 and broker.stats.heartbeats == 0
        (first, _) = events(logs, "security.identity_mismatch")
        assert first["key"] == ring.w2[0].decode() and first["worker_id"] == "honest-1"
        assert first["address"] == "127.0.0.1" and first["task_id"] == task.task_id
        assert first["reason"] == "task handed to another key" and first["log_level"] == "warning"
        # the real holder's result completes the task, and says whose key sent it
        genuine = Result("honest-1", task.task_id, task.attempt, True, {"loss": 250.0})
        honest.send(genuine)
        outcomes = until(broker, lambda out: out)
        assert outcomes == [Done(task.task_id, genuine, peer_key=ring.w1[0].decode())]
        honest.close()
        forger.close()


def test_reload_admits_an_added_key_and_cuts_off_a_removed_one(ring, ctx, logs):
    with Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server) as broker:
        w2 = RawWorker(ctx, broker, ring.w2, ring.head_key, "w2-1")
        broker.submit(*TASK)
        got: list[Task] = []
        until(broker, lambda _: got, lambda: (w2.ready(), got.extend(filter(None, [w2.task()]))))
        until(broker, lambda _: broker.connections() == 2)
        w2.send(Heartbeat("w2-1", got[0].task_id, 1, 0.1))  # its PUSH speaks, so the head knows that connection
        until(broker, lambda _: broker.stats.heartbeats == 1)

        (ring.allow / "w2.key").unlink()  # the operator revokes w2 and admits w3
        (ring.allow / "w3.key").write_bytes(ring.w3_file.read_bytes())
        assert broker.reload_allow() is True
        (reloaded,) = events(logs, "auth.reloaded")
        assert reloaded["removed"] == [ring.w2[0].decode()] and reloaded["added"] == [ring.w3[0].decode()]
        assert reloaded["connections_closed"] == 2
        assert broker.workers() == {} and broker.stats.resends == 1  # its task goes to someone else
        # its late result is refused, and its connections stay shut (new handshakes are refused)
        w2.send(Result("w2-1", got[0].task_id, 1, True, {"loss": 1.0}))
        until(broker, lambda _: broker.stats.handshake_failures >= 1, lambda: w2.ready())
        assert broker.stats.completed == 0 and broker.pending == 1

        w3 = RawWorker(ctx, broker, ring.w3, ring.head_key, "w3-1")
        taken: list[Task] = []
        until(broker, lambda _: taken, lambda: (w3.ready(), taken.extend(filter(None, [w3.task()]))))
        assert (taken[0].task_id, taken[0].attempt) == (TASK[0], 2)
        w3.send(Result("w3-1", taken[0].task_id, 2, True, {"loss": 3.0}))
        assert [o.peer_key for o in until(broker, lambda out: out)] == [ring.w3[0].decode()]
        for w in (w2, w3):
            w.close()


def test_a_failed_reload_keeps_the_list_in_force(ring, logs):
    with Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server) as broker:
        ring.allow.chmod(0o777)
        assert broker.reload_allow() is False
        (failed,) = events(logs, "auth.reload_failed")
        assert "writable by group/others" in failed["reason"] and failed["allowed_keys"] == 2
    with Broker(ANY, ANY, heartbeat_s=HB) as plain:
        assert plain.reload_allow() is False
        assert "plain mode" in events(logs, "auth.reload_failed")[-1]["reason"]


def test_a_reload_asked_for_by_a_signal_happens_in_the_next_poll_round(ring, logs):
    with Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server) as broker:
        previous = signal.signal(signal.SIGHUP, lambda *_: broker.request_reload())
        try:
            os.kill(os.getpid(), signal.SIGHUP)  # delivered to this (the main) thread before kill returns
            assert not events(logs, "auth.reloaded")  # the handler only marked it
            broker.poll(0)
        finally:
            signal.signal(signal.SIGHUP, previous)
        assert len(events(logs, "auth.reloaded")) == 1


def test_refusals_are_logged_with_the_peer_address_once_per_peer(ring, ctx, logs):
    impostor_public, _ = zmq.curve_keypair()  # a worker that trusts the wrong head
    started = time.monotonic()
    with Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server) as broker:
        wrong = RawWorker(ctx, broker, ring.w1, impostor_public, "confused-1")
        until(broker, lambda _: broker.stats.handshake_failures >= 10, lambda: None)
        wrong.close()
        failures = broker.stats.handshake_failures
    windows = 1 + int((time.monotonic() - started) // 10)  # a loaded machine may take more than one window
    refused = events(logs, "auth.refused")
    # one line per peer address per 10 s, not ~20 a second; a connection that closed before the head could read
    # its address is logged under "?" (one more line at most per window)
    known = [r for r in refused if r["address"] != "?"]
    assert 1 <= len(known) <= windows and len(refused) - len(known) <= windows
    assert all(r["address"].startswith("127.0.0.1:") for r in known)
    summaries = events(logs, "auth.refused.suppressed")  # what was held back, per peer
    assert summaries and all(s["address"] in ("127.0.0.1", "?") for s in summaries)
    assert sum(s["count"] for s in summaries) >= failures - len(refused) - 1


def test_a_forged_result_for_a_completed_task_is_a_security_event_and_summarized_as_forged(ring, ctx, tmp_path):
    """Issue 18.4: an allowed key sending a result for a task another key already completed was logged as
    ``result.duplicate`` under the claimed worker id, without the key or the address."""
    from evo.cmdline.log_setup import configure
    from evo.logs import format_summary, read_logs, summarize

    stream = io.StringIO()
    configure("json", "info", stream=stream, role="search")  # as the head logs: what `evovae logs` reads
    try:
        with Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server) as broker:
            honest = RawWorker(ctx, broker, ring.w1, ring.head_key, "honest-1")
            forger = RawWorker(ctx, broker, ring.w2, ring.head_key, "forger-1")
            broker.submit(*TASK)
            got: list[Task] = []
            until(broker, lambda _: got, lambda: (honest.ready(), got.extend(filter(None, [honest.task()]))))
            task = got[0]
            genuine = Result("honest-1", task.task_id, task.attempt, True, {"loss": 250.0})
            honest.send(genuine)
            assert [o.result for o in until(broker, lambda out: out)] == [genuine]
            # the forger (allowed, never handed the task) replays it as the honest worker's, with a better loss
            forger.send(Result("honest-1", task.task_id, task.attempt, True, {"loss": 0.001}))
            forger.send(Result("forger-1", task.task_id, task.attempt, True, {"loss": 0.001}))
            honest.send(genuine)  # the holder's second copy: a duplicate, not a forgery
            until(broker, lambda _: broker.stats.identity_mismatches == 2 and broker.stats.duplicates == 1)
            assert broker.stats.completed == 1
            honest.close()
            forger.close()
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    forged = [r for r in lines if r["event"] == "security.identity_mismatch"]
    assert len(forged) == 2
    for r in forged:
        assert (r["key"], r["message"], r["task_id"], r["task_state"]) == (ring.w2[0].decode(), "result",
                                                                          task.task_id, "completed")
        assert r["address"] == "127.0.0.1" and r["level"] == "warning" and "already completed" in r["reason"]
    assert [r["worker_id"] for r in forged] == ["honest-1", "forger-1"]
    (duplicate,) = [r for r in lines if r["event"] == "result.duplicate"]
    assert (duplicate["key"], duplicate["address"], duplicate["worker_id"]) == (ring.w1[0].decode(), "127.0.0.1",
                                                                                 "honest-1")

    log_file = tmp_path / "head.log"
    log_file.write_text(stream.getvalue())
    s = summarize(read_logs([str(log_file)]))
    assert (s["head"]["forged_results"], s["head"]["identity_mismatches"], s["head"]["duplicates"]) == (2, 2, 1)
    assert [w["worker_id"] for w in s["workers"]] == ["honest-1"]  # the forger's claim makes no worker of anyone
    (row,) = [r for r in s["rejected_senders"] if r["kind"] == "key"]
    assert (row["sender"], row["dropped"], row["addresses"]) == (ring.w2[0].decode(), 2, ["127.0.0.1"])
    assert "forged results (CURVE)  2" in format_summary(s)
