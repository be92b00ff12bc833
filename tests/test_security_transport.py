"""CURVE on the wire: real sockets on 127.0.0.1, real worker processes. Nothing mocked.

Only workers whose public key is on the head's allow-list get tasks or have their
heartbeats and results read; everyone else (plaintext, a wrong server key, a key not on
the list, a forged public key) is refused at the handshake and counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq

from transport import keyfiles
from transport.broker import Broker, Done
from transport.channel import WorkerChannel
from transport.codec import encode
from transport.keys import CurveClient, CurveServer
from transport.protocol import Heartbeat, Ready, Result

REPO = Path(__file__).resolve().parents[1]
HB = 0.1
ANY = "tcp://127.0.0.1:*"
TASK = ("secure-1", "850|20|1000", {"epochs": 1})


@pytest.fixture
def ring(tmp_path):
    """head (server), w1 (allowed), w2 (not allowed), impostor (another head)."""
    d = tmp_path / "keys"
    allow = tmp_path / "allow"
    head_public, head_secret = keyfiles.generate(d, "head")
    w1_public, w1_secret = keyfiles.generate(d, "w1")
    allow.mkdir()
    (allow / "w1.key").write_bytes(w1_public.read_bytes())
    keyfiles.generate(d, "w2")
    keyfiles.generate(d, "impostor")
    w1 = keyfiles.load_secret(w1_secret)
    w2 = keyfiles.load_secret(d / "w2.key_secret")
    return SimpleNamespace(
        dir=d,
        allow=allow,
        head_public=head_public,
        head_secret=head_secret,
        w1_secret=w1_secret,
        server=CurveServer.from_files(head_secret, allow),
        good=CurveClient.from_files(w1_secret, head_public),
        w1=w1,
        w2=w2,
        head_key=keyfiles.load_public(head_public),
        impostor_key=keyfiles.load_public(d / "impostor.key"),
    )


def serve(channel: WorkerChannel, stop: threading.Event, train_s: float = 0.35) -> None:
    """A worker loop: take tasks, 'train' (heartbeating), report val_loss 1.0."""
    while not stop.is_set():
        task = channel.next_task(0.05)
        if task is None:
            continue
        with channel.working(task) as job:
            deadline = time.monotonic() + train_s
            while time.monotonic() < deadline and not stop.wait(0.02):  # stands in for training
                job.progress(1 - (deadline - time.monotonic()) / train_s)
        channel.send_result(Result(channel.worker_id, task.task_id, task.attempt, True, {"val_loss": 1.0}))


def complete_with_good_worker(broker: Broker, client: CurveClient, worker_id: str = "good-1") -> Done:
    stop = threading.Event()
    with WorkerChannel(broker.ventilator_endpoint, broker.sink_endpoint, worker_id=worker_id, heartbeat_s=HB,
                       curve=client) as channel:
        thread = threading.Thread(target=serve, args=(channel, stop), daemon=True)
        thread.start()
        try:
            outcomes: list = []
            deadline = time.monotonic() + 10
            while not outcomes and time.monotonic() < deadline:
                outcomes += broker.poll(0.1)
        finally:
            stop.set()
            thread.join(timeout=5)
        assert not thread.is_alive()
    assert len(outcomes) == 1 and isinstance(outcomes[0], Done), outcomes
    return outcomes[0]


def test_allowed_worker_gets_work_and_its_result_is_accepted(ring):
    with Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server) as broker:
        broker.submit(*TASK)
        done = complete_with_good_worker(broker, ring.good)
        assert done.task_id == TASK[0]
        assert done.result.worker_id == "good-1" and done.result.metrics == {"val_loss": 1.0}
        st = broker.stats
        assert st.dispatched == 1 and st.completed == 1
        assert st.heartbeats >= 1  # the heartbeat thread's PUSH talks CURVE too
        assert st.handshake_failures == 0 and st.bad_frames == 0


def _raw(ctx: zmq.Context, kind: int, endpoint: str, creds: tuple | None) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 50)
    if creds is not None:
        public, secret, server = creds
        sock.setsockopt(zmq.CURVE_SERVERKEY, server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    sock.connect(endpoint)
    return sock


def _intruder_creds(ring, case: str) -> tuple | None:
    """(client public, client secret, server public) for each kind of intruder."""
    return {
        "plaintext": None,
        "wrong-server-key": (*ring.w1, ring.impostor_key),  # an allowed worker that trusts the wrong head
        "key-not-allowed": (*ring.w2, ring.head_key),
        "forged-public-key": (ring.w1[0], ring.w2[1], ring.head_key),  # claims w1's key without its secret
    }[case]


@pytest.mark.parametrize("case", ["plaintext", "wrong-server-key", "key-not-allowed", "forged-public-key"])
def test_intruders_get_no_task_and_cannot_inject(ring, case):
    creds = _intruder_creds(ring, case)
    ctx = zmq.Context()
    channel = None
    try:
        with Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server) as broker:
            broker.submit(*TASK)
            # raw clients: a DEALER asking for work, a PUSH forging a result and heartbeats
            dealer = _raw(ctx, zmq.DEALER, broker.ventilator_endpoint, creds)
            push = _raw(ctx, zmq.PUSH, broker.sink_endpoint, creds)
            forged = Result("intruder-1", TASK[0], 1, True, {"val_loss": 0.0})
            # and, where the keys make a valid client, a real WorkerChannel
            if creds is None:
                channel = WorkerChannel(broker.ventilator_endpoint, broker.sink_endpoint, worker_id="intruder-2",
                                        heartbeat_s=HB)
            elif case != "forged-public-key":
                channel = WorkerChannel(broker.ventilator_endpoint, broker.sink_endpoint, worker_id="intruder-2",
                                        heartbeat_s=HB, curve=CurveClient(*creds))

            def refused() -> bool:  # both raw sockets (and the channel's) were refused at the handshake
                return broker.stats.handshake_failures >= 2 and (channel is None or channel.handshake_failures >= 1)

            deadline = time.monotonic() + 10
            rounds_after = 5  # keep trying a few rounds after the refusals were seen
            while rounds_after:
                assert time.monotonic() < deadline, f"refusals not seen: {broker.stats}"
                rounds_after -= refused()
                for sock, message in ((dealer, Ready("intruder-1")), (push, Heartbeat("intruder-1", TASK[0], 1, 0.5)),
                                      (push, forged)):
                    try:
                        sock.send(encode(message), zmq.NOBLOCK)
                    except zmq.Again:  # refused: libzmq dropped the connection (and may not retry)
                        pass
                assert broker.poll(0.05) == []
                assert not dealer.poll(0), "a raw intruder received a task"
                if channel is not None:
                    assert channel.next_task(0.02) is None, "an intruding WorkerChannel received a task"
            st = broker.stats
            assert (st.dispatched, st.completed, st.workers_seen, st.heartbeats) == (0, 0, 0, 0)
            assert (st.bad_frames, st.unknown_results, st.stale_heartbeats) == (0, 0, 0)  # nothing was even read
            assert st.handshake_failures >= 2  # refusals are counted (and logged: auth.refused / auth.key_refused)
            assert broker.workers() == {} and broker.pending == 1
            if channel is not None:
                assert channel.handshake_failures >= 1  # the worker side sees it too (auth.handshake_failed)
                channel.close()
            # the task is still there for the real worker, and the result is its own, not the forged one
            done = complete_with_good_worker(broker, ring.good)
            assert done.result.worker_id == "good-1" and done.result.metrics == {"val_loss": 1.0}
            dealer.close()
            push.close()
    finally:
        if channel is not None:
            channel.close()
        ctx.destroy(linger=0)


def test_close_stops_the_authenticator_and_frees_the_ports(ring):
    before = set(threading.enumerate())
    broker = Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server)
    endpoints = broker.ventilator_endpoint, broker.sink_endpoint
    assert len(set(threading.enumerate()) - before) >= 1  # the ZAP handler's thread
    broker.close()
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
    with Broker(*endpoints, heartbeat_s=HB, curve=ring.server) as again:
        again.submit(*TASK)
        assert complete_with_good_worker(again, ring.good).task_id == TASK[0]


def test_one_curve_broker_per_context(ring):
    ctx = zmq.Context()
    try:
        with Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server, context=ctx), \
                pytest.raises(RuntimeError, match="ZAP handler"):
            Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server, context=ctx)
    finally:
        ctx.term()  # returns: nothing of the failed broker is left open


def test_plain_worker_cannot_reach_a_curve_broker(ring):
    with Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server) as broker:
        broker.submit(*TASK)
        with WorkerChannel(broker.ventilator_endpoint, broker.sink_endpoint, heartbeat_s=HB) as plain:
            deadline = time.monotonic() + 10
            while broker.stats.handshake_failures < 2:  # its DEALER and its result PUSH
                assert time.monotonic() < deadline, f"refusals not seen: {broker.stats}"
                broker.poll(0.02)
                assert plain.next_task(0.02) is None
        assert broker.stats.dispatched == 0


def test_curve_worker_cannot_reach_a_plain_broker(ring):
    with Broker(ANY, ANY, heartbeat_s=HB) as broker:
        broker.submit(*TASK)
        with WorkerChannel(broker.ventilator_endpoint, broker.sink_endpoint, heartbeat_s=HB, curve=ring.good) as ch:
            deadline = time.monotonic() + 10
            while ch.handshake_failures < 1:
                assert time.monotonic() < deadline, "the CURVE worker saw no failed handshake"
                broker.poll(0.02)
                assert ch.next_task(0.02) is None
        assert broker.stats.dispatched == 0


def test_refused_worker_joins_once_the_head_allows_its_key(ring):
    """libzmq never retries a connection refused by ZAP; the channel connects again itself."""
    client = CurveClient(*ring.w2, ring.head_key)
    with Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server) as broker:
        endpoints = broker.ventilator_endpoint, broker.sink_endpoint
        with WorkerChannel(*endpoints, heartbeat_s=HB, curve=client, reconnect_ivl_max_ms=300) as channel:
            deadline = time.monotonic() + 5
            while channel.handshake_failures < 2 and time.monotonic() < deadline:  # DEALER and PUSH refused
                broker.poll(0.02)
                assert channel.next_task(0.02) is None
            assert channel.handshake_failures >= 2
            broker.close()  # the operator adds the key and restarts the head on the same ports
            with Broker(*endpoints, heartbeat_s=HB, curve=ring.server.allowing(ring.w2[0])) as again:
                again.submit(*TASK)
                task = None
                deadline = time.monotonic() + 5
                while task is None and time.monotonic() < deadline:
                    again.poll(0.02)
                    task = channel.next_task(0.05)
                assert task is not None and task.task_id == TASK[0]
                channel.send_result(Result(channel.worker_id, task.task_id, task.attempt, True, {"val_loss": 2.0}))
                outcomes: list = []
                while not outcomes and time.monotonic() < deadline:
                    outcomes += again.poll(0.1)
                assert [o.result.metrics for o in outcomes] == [{"val_loss": 2.0}]  # the result PUSH reconnected too


# ---------------------------------------------------------------------- worker processes


def _worker(*args: str, log_file: Path | None = None) -> subprocess.Popen:
    """A fake-training worker process; its log goes to ``log_file`` (or a pipe)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stderr = subprocess.PIPE if log_file is None else log_file.open("w")
    try:
        return subprocess.Popen([sys.executable, "-m", "gpuworker", "--fake", "--heartbeat", str(HB),
                                 "--log-format", "json", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr, text=True)
    finally:
        if log_file is not None:
            stderr.close()


@pytest.mark.slow
def test_worker_process_with_keys_serves_a_curve_head_and_a_plain_one_cannot(ring, tmp_path):
    plain_log = tmp_path / "plain.log"
    with Broker(ANY, ANY, heartbeat_s=HB, curve=ring.server) as broker:
        ends = ["--connect", broker.ventilator_endpoint, "--sink", broker.sink_endpoint]
        keyed = _worker(*ends, "--server-key", str(ring.head_public), "--key", str(ring.w1_secret),
                        "--worker-id", "keyed-1", "--max-tasks", "1")
        plain = _worker(*ends, "--worker-id", "plain-1", log_file=plain_log)
        try:
            started = time.monotonic()
            broker.submit(*TASK)
            outcomes: list = []
            while not outcomes and time.monotonic() - started < 15 and keyed.poll() is None:
                outcomes += broker.poll(0.1)
            assert len(outcomes) == 1 and outcomes[0].result.worker_id == "keyed-1", keyed.stderr.read()
            assert keyed.wait(timeout=10) == 0
            deadline = time.monotonic() + 10  # the plain worker tries (both its sockets are refused) ...
            while broker.stats.handshake_failures < 2 and time.monotonic() < deadline:
                broker.poll(0.1)
            while '"auth.handshake_failed"' not in plain_log.read_text():  # ... and logs it, at its next tick
                assert time.monotonic() < deadline and plain.poll() is None, plain_log.read_text()
                broker.poll(0.1)
            assert set(broker.workers()) <= {"keyed-1"} and broker.stats.dispatched == 1
            assert broker.stats.handshake_failures >= 2
        finally:
            plain.terminate()
            plain.wait(timeout=10)
            keyed.kill()
            keyed_err = keyed.communicate(timeout=10)[1]
    assert '"auth.enabled"' in keyed_err
    assert '"auth.disabled"' in plain_log.read_text()


@pytest.mark.slow
def test_worker_process_refuses_bad_key_options(ring, tmp_path):
    loose = tmp_path / "loose.key_secret"
    loose.write_bytes(ring.w1_secret.read_bytes())
    loose.chmod(0o644)
    connect = ["--connect", "tcp://127.0.0.1:1"]
    cases = {
        f"chmod 600 {loose}": [*connect, "--server-key", str(ring.head_public), "--key", str(loose)],
        "--server-key needs --key": [*connect, "--server-key", str(ring.head_public)],
        "--key needs --server-key": [*connect, "--key", str(ring.w1_secret)],
        "--insecure excludes": [*connect, "--insecure", "--server-key", str(ring.head_public),
                                "--key", str(ring.w1_secret)],
        "holds a secret key": [*connect, "--server-key", str(ring.head_secret), "--key", str(ring.w1_secret)],
    }
    procs = {message: _worker(*argv) for message, argv in cases.items()}
    for message, proc in procs.items():
        err = proc.communicate(timeout=20)[1]
        assert proc.returncode == 2, (message, err)
        lines = [line for line in err.splitlines() if line.startswith("evovae worker: error:")]
        assert len(lines) == 1 and message in lines[0], (message, err)
