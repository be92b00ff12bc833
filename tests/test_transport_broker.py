"""Broker against raw zmq DEALER/PUSH clients playing workers, on real loopback sockets."""

from __future__ import annotations

import math
import random
import time

import msgpack
import pytest
import zmq

from transport.broker import Broker, Done, Failed
from transport.codec import decode, encode
from transport.protocol import Heartbeat, ProtocolError, Ready, Result, Task

HB = 0.05  # heartbeat interval for tests; liveness 3 -> a silent worker is lost after 0.15 s
ANY = "tcp://127.0.0.1:*"
SPEC = {"epochs": 2, "seed": 0, "dataset": "synthetic"}


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def make_broker():
    made = []

    def make(**kwargs):
        kwargs.setdefault("heartbeat_s", HB)
        broker = Broker(ANY, ANY, **kwargs)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


class FakeWorker:
    """A worker written with raw pyzmq, driven step by step by the test.

    pump(): while idle (and wants_work) it sends Ready every HB/2; while it holds a task
    (and beating) it sends a Heartbeat every HB/2; it reads any Task that arrived.
    """

    def __init__(self, ctx: zmq.Context, broker: Broker, worker_id: str) -> None:
        self.worker_id = worker_id
        # DEALER, connect, ventilator endpoint
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(broker.ventilator_endpoint)
        # PUSH, connect, sink endpoint
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(broker.sink_endpoint)
        self.task: Task | None = None
        self.received: list[Task] = []
        self.wants_work = True
        self.beating = True
        self._next = 0.0

    def ready(self) -> None:
        self.dealer.send(encode(Ready(self.worker_id)))

    def heartbeat(self, task: Task, progress: float = 0.5) -> None:
        self.push.send(encode(Heartbeat(self.worker_id, task.task_id, task.attempt, progress)))

    def result(self, task: Task, ok: bool = True, attempt: int | None = None, worker_id: str | None = None) -> Result:
        res = Result(
            worker_id or self.worker_id,
            task.task_id,
            task.attempt if attempt is None else attempt,
            ok,
            {"val_loss": 100.0 + len(task.task_id)} if ok else {},
            "" if ok else "CUDA out of memory",
        )
        self.push.send(encode(res))
        return res

    def finish(self, ok: bool = True) -> Result:
        assert self.task is not None
        res = self.result(self.task, ok)
        self.task = None
        return res

    def pump(self) -> None:
        while self.dealer.poll(0):
            task = decode(self.dealer.recv())
            assert isinstance(task, Task)
            self.received.append(task)
            self.task = task
        now = time.monotonic()
        if now >= self._next:
            self._next = now + HB / 2
            if self.task is None and self.wants_work:
                self.ready()
            elif self.task is not None and self.beating:
                self.heartbeat(self.task)

    def close(self) -> None:
        self.dealer.close(linger=0)
        self.push.close(linger=0)


def run_until(broker: Broker, cond, workers=(), timeout: float = 5.0) -> list:
    """Poll the broker and pump the fake workers until cond() holds."""
    outcomes: list = []
    deadline = time.monotonic() + timeout
    while True:
        for w in workers:
            w.pump()
        outcomes += broker.poll(0.005)
        if cond():
            return outcomes
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s; stats={broker.stats} workers={broker.workers()}")


# ------------------------------------------------------------------ construction and bookkeeping


def test_bound_endpoints_are_resolved(make_broker):
    broker = make_broker()
    for endpoint in (broker.ventilator_endpoint, broker.sink_endpoint):
        assert endpoint.startswith("tcp://127.0.0.1:")
        assert int(endpoint.rsplit(":", 1)[1]) > 0
    assert broker.pending == 0
    assert broker.poll(0) == []


def test_constructor_rejects_bad_settings():
    with pytest.raises(ValueError):
        Broker(ANY, ANY, heartbeat_s=0)
    with pytest.raises(ValueError):
        Broker(ANY, ANY, max_attempts=0)
    with pytest.raises(ValueError):
        Broker(ANY, ANY, liveness=True)


def test_bind_failure_closes_cleanly(make_broker):
    first = make_broker()
    with pytest.raises(zmq.ZMQError):
        Broker(first.ventilator_endpoint, ANY)


def test_submit_validates_and_ignores_repeats(make_broker):
    broker = make_broker()
    with pytest.raises(ProtocolError, match="task_id"):
        broker.submit("no spaces allowed", "850|20|1000", SPEC)
    with pytest.raises(ProtocolError, match="spec"):
        broker.submit("t1", "850|20|1000", {"x": [1, 2]})
    broker.submit("t1", "850|20|1000", SPEC)
    broker.submit("t1", "850|20|1000", SPEC)
    assert broker.pending == 1 and broker.stats.submitted == 1


def test_poll_never_blocks_past_its_timeout(make_broker):
    broker = make_broker()
    broker.submit("t1", "850|20|1000", SPEC)
    start = time.monotonic()
    assert broker.poll(0.1) == []
    assert 0.09 <= time.monotonic() - start < 0.5
    with pytest.raises(ValueError):
        broker.poll(math.inf)


# ------------------------------------------------------------------ hand-out


def test_credit_each_idle_worker_holds_at_most_one_task(ctx, make_broker):
    broker = make_broker()
    a, b = FakeWorker(ctx, broker, "wA"), FakeWorker(ctx, broker, "wB")
    run_until(broker, lambda: len(broker.workers()) == 2, [a, b])
    for i in range(3):
        broker.submit(f"t{i}", "850|20|1000", SPEC)
    run_until(broker, lambda: a.task is not None and b.task is not None, [a, b])
    beats = broker.stats.heartbeats
    run_until(broker, lambda: broker.stats.heartbeats >= beats + 6, [a, b])  # messages keep flowing: still one each
    assert len(a.received) == 1 and len(b.received) == 1
    assert broker.stats.dispatched == 2 and broker.queued == 1 and broker.pending == 3
    assert {w["state"] for w in broker.workers().values()} == {"busy"}
    assert broker.workers()["wA"]["progress"] == 0.5

    first = a.task.task_id
    a.finish()
    outcomes = run_until(broker, lambda: len(a.received) == 2, [a, b])
    assert [o.task_id for o in outcomes] == [first]
    assert a.received[1].task_id == "t2"  # the third task went to the worker that freed up
    a.finish()
    b.finish()
    outcomes = run_until(broker, lambda: broker.pending == 0, [a, b])
    assert {o.task_id for o in outcomes} == {"t0", "t1", "t2"} - {first}
    s = broker.stats
    assert (s.completed, s.dispatched, s.resends, s.duplicates, s.bad_frames, s.workers_seen) == (3, 3, 0, 0, 0, 2)
    for w in (a, b):
        w.close()


def test_silent_worker_task_resent_to_another_with_attempt_2(ctx, make_broker):
    broker = make_broker()
    a = FakeWorker(ctx, broker, "wA")
    broker.submit("t1", "200,500|20|1000,650,50", SPEC)
    run_until(broker, lambda: a.task is not None, [a])
    a.beating = a.wants_work = False  # the worker dies mid-task
    b = FakeWorker(ctx, broker, "wB")
    run_until(broker, lambda: b.task is not None, [a, b])
    resent = b.task
    assert (resent.task_id, resent.attempt, resent.genotype) == ("t1", 2, "200,500|20|1000,650,50")
    assert broker.stats.resends == 1 and broker.stats.workers_lost == 1
    assert "wA" not in broker.workers()
    res = b.finish()
    outcomes = run_until(broker, lambda: broker.pending == 0, [a, b])
    assert outcomes == [Done("t1", res)]
    assert outcomes[0].result.attempt == 2
    # the first worker comes back late with its result for attempt 1: a duplicate
    a.result(a.task)
    run_until(broker, lambda: broker.stats.duplicates == 1, [])
    assert broker.stats.completed == 1
    for w in (a, b):
        w.close()


def test_max_attempts_then_failed(ctx, make_broker):
    broker = make_broker(max_attempts=2)
    broker.submit("t1", "850|20|1000", SPEC)
    silent = []
    for n in range(2):
        w = FakeWorker(ctx, broker, f"w{n}")
        run_until(broker, lambda w=w: w.task is not None, [w])
        assert w.task.attempt == n + 1
        w.beating = w.wants_work = False
        silent.append(w)
    outcomes = run_until(broker, lambda: broker.pending == 0, silent)
    assert len(outcomes) == 1 and isinstance(outcomes[0], Failed)
    failed = outcomes[0]
    assert failed.task_id == "t1" and failed.attempts == 2
    assert failed.reason.startswith("2 attempts lost: ")
    assert "attempt 1 on w0: no heartbeat" in failed.reason and "attempt 2 on w1" in failed.reason
    assert broker.stats.failures == 1 and broker.stats.resends == 1
    # a result after the broker gave up is dropped, not turned into a second outcome
    silent[0].result(silent[0].task)
    run_until(broker, lambda: broker.stats.late_results == 1)
    assert broker.poll(0.05) == []
    # a failed id may be submitted again (fresh attempts)
    broker.submit("t1", "850|20|1000", SPEC)
    assert broker.pending == 1
    for w in silent:
        w.close()


def test_lease_expiry_while_heartbeating(ctx, make_broker):
    broker = make_broker(lease_s=0.2, max_attempts=1)
    a = FakeWorker(ctx, broker, "wA")
    broker.submit("slow", "850|20|1000", SPEC)
    run_until(broker, lambda: a.task is not None, [a])
    assert a.task.lease_s == 0.2
    outcomes = run_until(broker, lambda: broker.pending == 0, [a])
    assert isinstance(outcomes[0], Failed) and "lease of 0.2 s ran out" in outcomes[0].reason
    assert "wA" in broker.workers()  # it heartbeats, so it is alive, only slow
    a.close()


def test_per_task_lease_override(ctx, make_broker):
    broker = make_broker()
    a = FakeWorker(ctx, broker, "wA")
    broker.submit("final", "850|20|1000", {"epochs": 20}, lease_s=7200)
    run_until(broker, lambda: a.task is not None, [a])
    assert a.task.lease_s == 7200.0
    a.close()


def test_ok_false_is_final_not_retried(ctx, make_broker):
    broker = make_broker()
    a = FakeWorker(ctx, broker, "wA")
    broker.submit("oom", "1000,1000,1000|100|1000", SPEC)
    run_until(broker, lambda: a.task is not None, [a])
    res = a.finish(ok=False)
    outcomes = run_until(broker, lambda: broker.pending == 0, [a])
    assert outcomes == [Done("oom", res)] and outcomes[0].result.ok is False
    run_until(broker, lambda: broker.workers()["wA"]["state"] == "idle", [a])  # it asked for work again
    assert len(a.received) == 1 and broker.stats.resends == 0 and broker.stats.task_errors == 1
    a.close()


# ------------------------------------------------------------------ exactly-once


def test_duplicate_and_replayed_results_applied_once(ctx, make_broker):
    broker = make_broker()
    a = FakeWorker(ctx, broker, "wA")
    broker.submit("t1", "850|20|1000", SPEC)
    run_until(broker, lambda: a.task is not None, [a])
    task = a.task
    first = a.result(task)
    a.result(task)  # duplicate
    a.result(task, attempt=2, worker_id="wZ")  # a late attempt from another worker
    a.result(Task("never-submitted", 1, "g", {}, 1.0))
    a.task = None
    outcomes = run_until(broker, lambda: broker.stats.duplicates == 2 and broker.stats.unknown_results == 1, [a])
    assert outcomes == [Done("t1", first)]
    assert broker.pending == 0
    # a replay of the same bytes much later is still a duplicate
    a.push.send(encode(first))
    run_until(broker, lambda: broker.stats.duplicates == 3, [a])
    assert broker.stats.completed == 1 and broker.stats.dispatched == 1
    a.close()


def test_a_completed_task_submitted_again_runs_again(ctx, make_broker):
    broker = make_broker()
    a = FakeWorker(ctx, broker, "wA")
    broker.submit("t1", "850|20|1000", SPEC)
    run_until(broker, lambda: a.task is not None, [a])
    first = a.result(a.task)
    a.task = None
    assert run_until(broker, lambda: broker.stats.completed == 1, [a]) == [Done("t1", first)]
    broker.submit("t1", "850|20|1000", SPEC)  # e.g. a second search through the same broker
    assert broker.pending == 1
    run_until(broker, lambda: a.task is not None, [a])
    second = a.result(a.task)
    assert run_until(broker, lambda: broker.stats.completed == 2, [a]) == [Done("t1", second)]
    assert broker.stats.dispatched == 2 and broker.pending == 0
    a.close()


def test_result_from_an_earlier_attempt_completes_a_requeued_task(ctx, make_broker):
    broker = make_broker()
    a = FakeWorker(ctx, broker, "wA")
    broker.submit("t1", "850|20|1000", SPEC)
    run_until(broker, lambda: a.task is not None, [a])
    a.beating = a.wants_work = False
    run_until(broker, lambda: broker.stats.resends == 1, [a])  # re-queued, no idle worker
    assert broker.queued == 1
    res = a.result(a.task)  # attempt 1 finishes after all
    outcomes = run_until(broker, lambda: broker.pending == 0, [a])
    assert outcomes == [Done("t1", res)] and broker.queued == 0
    a.close()


def test_heartbeats_for_tasks_not_in_flight_are_ignored(ctx, make_broker):
    broker = make_broker()
    a = FakeWorker(ctx, broker, "wA")
    a.heartbeat(Task("ghost", 1, "g", {}, 1.0))
    run_until(broker, lambda: broker.stats.stale_heartbeats == 1, [])
    assert broker.stats.bad_frames == 0 and broker.pending == 0
    a.close()


# ------------------------------------------------------------------ Ready from a busy worker


def test_ready_from_busy_worker_requeues_its_task(ctx, make_broker):
    broker = make_broker()
    a = FakeWorker(ctx, broker, "wA")
    broker.submit("t1", "850|20|1000", SPEC)
    run_until(broker, lambda: a.task is not None, [a])
    run_until(broker, lambda: broker.stats.heartbeats >= 3, [a])  # beats every HB/2: the grace period is over
    lost = a.task
    a.task = None  # the worker forgets it (e.g. its process restarted with the same id)
    run_until(broker, lambda: len(a.received) == 2, [a])
    again = a.received[1]
    assert (again.task_id, again.attempt) == (lost.task_id, 2)
    assert broker.stats.resends == 1 and broker.stats.dispatched == 2
    a.close()


def test_ready_crossing_the_task_on_the_wire_is_not_a_loss(ctx, make_broker):
    broker = make_broker()
    a = FakeWorker(ctx, broker, "wA")
    run_until(broker, lambda: "wA" in broker.workers(), [a])
    broker.submit("t1", "850|20|1000", SPEC)
    run_until(broker, lambda: broker.stats.dispatched == 1)  # sent, not yet read by the worker
    a.ready()  # this Ready was "sent before the task arrived"
    run_until(broker, lambda: broker.stats.heartbeats >= 6, [a])  # 2.5 HB later: past grace and orphan deadline
    assert broker.stats.resends == 0 and len(a.received) == 1
    a.close()


def test_result_arriving_after_the_next_ready_is_not_resent(ctx, make_broker):
    broker = make_broker()
    a = FakeWorker(ctx, broker, "wA")
    broker.submit("t1", "850|20|1000", SPEC)
    run_until(broker, lambda: a.task is not None, [a])
    run_until(broker, lambda: broker.stats.heartbeats >= 3, [a])  # past the grace period
    task = a.task
    a.task = None
    a.ready()  # Ready overtakes the Result (they travel on different sockets)
    run_until(broker, lambda: broker.workers()["wA"]["state"] == "idle")  # read: the attempt is orphaned
    a.result(task)
    outcomes = run_until(broker, lambda: broker.pending == 0, [a])
    assert [o.task_id for o in outcomes] == ["t1"]
    assert broker.stats.resends == 0 and len(a.received) == 1
    a.close()


# ------------------------------------------------------------------ lost workers


def test_idle_worker_that_goes_quiet_is_dropped(ctx, make_broker):
    broker = make_broker()
    a = FakeWorker(ctx, broker, "wA")
    run_until(broker, lambda: broker.workers().get("wA", {}).get("state") == "idle", [a])
    a.wants_work = False
    run_until(broker, lambda: "wA" not in broker.workers(), [a])
    broker.submit("t1", "850|20|1000", SPEC)
    assert broker.poll(0) == []  # a hand-out round: nobody has credit
    assert broker.stats.dispatched == 0 and broker.queued == 1 and broker.stats.workers_lost == 1
    a.close()


def test_task_for_a_disconnected_worker_stays_queued(ctx, make_broker):
    broker = make_broker(heartbeat_s=1.0)  # long liveness: only the socket tells us
    a = FakeWorker(ctx, broker, "wA")
    run_until(broker, lambda: "wA" in broker.workers(), [a])
    a.close()
    run_until(broker, lambda: broker.connections() == 0)  # the head saw both connections end
    broker.submit("t1", "850|20|1000", SPEC)
    run_until(broker, lambda: broker.stats.workers_lost == 1)
    assert broker.stats.dispatched == 0 and broker.queued == 1 and broker.stats.resends == 0


# ------------------------------------------------------------------ bad frames


def _malformed_payloads(rng: random.Random, n: int) -> list[bytes]:
    valid = [
        encode(Ready("w")),
        encode(Task("t", 1, "g", {"a": 1}, 1.0)),
        encode(Heartbeat("w", "t", 1, 0.5)),
        encode(Result("w", "t", 1, True, {"l": 1.0})),
    ]
    maps = [msgpack.unpackb(v) for v in valid]
    junk_values = [None, True, 1, -1, 2**64 - 1, 1.5, math.nan, "x" * 300, b"raw", [1, [2]], {"k": {}}]
    out = []
    while len(out) < n:
        kind = rng.randrange(9)
        if kind == 0:  # random bytes
            data = rng.randbytes(rng.randint(0, 80))
        elif kind == 1:  # truncated msgpack
            v = rng.choice(valid)
            data = v[: rng.randrange(len(v))]
        elif kind == 2:  # mutated bytes
            data = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        elif kind == 3:  # wrong field types
            m = dict(rng.choice(maps))
            m[rng.choice([k for k in m if k not in ("v", "type")])] = rng.choice(junk_values)
            data = msgpack.packb(m)
        elif kind == 4:  # unknown type
            data = msgpack.packb({**rng.choice(maps), "type": rng.choice(["cancel", "", "READY", "x" * 50])})
        elif kind == 5:  # wrong version
            data = msgpack.packb({**rng.choice(maps), "v": rng.choice([0, 2, 99, "1", None])})
        elif kind == 6:  # unknown or missing keys
            m = dict(rng.choice(maps))
            if rng.random() < 0.5:
                m["extra"] = 1
            else:
                del m[rng.choice(list(m))]
            data = msgpack.packb(m)
        elif kind == 7:  # not a map
            data = msgpack.packb(rng.choice([[], [1, 2], "ready", 1, None, 3.5]))
        else:  # deeply nested
            data = b"\x91" * rng.randint(500, 5000) + b"\xc0"
        out.append(data)
    return out


def _accepted(data: bytes, types: tuple) -> bool:
    try:
        return isinstance(decode(data), types)
    except ProtocolError:
        return False


def _send_all(broker: Broker, sock: zmq.Socket, messages: list[list[bytes]]) -> None:
    """Send without blocking, letting the broker read whenever the pipe is full."""
    for parts in messages:
        while True:
            try:
                sock.send_multipart(parts, zmq.NOBLOCK)
                break
            except zmq.Again:
                broker.poll(0)


def test_fuzz_both_sockets_then_a_task_still_completes(ctx, make_broker):
    broker = make_broker()
    rng = random.Random(1337)

    # multi-part garbage and malformed payloads at the ROUTER, from a raw DEALER
    router_msgs = []
    for data in _malformed_payloads(rng, 1500):
        if not _accepted(data, (Ready,)):
            router_msgs.append([data])
    valid_ready = encode(Ready("fuzzer"))
    for _ in range(300):
        shape = rng.randrange(4)
        if shape == 0:
            router_msgs.append([b"", valid_ready])  # REQ-style empty delimiter: not this protocol
        elif shape == 1:
            router_msgs.append([valid_ready, valid_ready])
        elif shape == 2:
            router_msgs.append([rng.randbytes(rng.randint(0, 20)) for _ in range(rng.randint(2, 6))])
        else:
            router_msgs.append([encode(Heartbeat("w", "t", 1, 0.0))])  # right message, wrong socket
    rng.shuffle(router_msgs)

    # malformed payloads and multi-part messages at the PULL, from a raw PUSH
    sink_msgs = []
    for data in _malformed_payloads(rng, 1500):
        if not _accepted(data, (Heartbeat, Result)):
            sink_msgs.append([data])
    for _ in range(200):
        sink_msgs.append([rng.randbytes(5) for _ in range(rng.randint(2, 4))])
    sink_msgs.append([valid_ready])  # ready on the sink
    rng.shuffle(sink_msgs)

    # DEALER, connect, ventilator endpoint (the fuzzer)
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(broker.ventilator_endpoint)
    # PUSH, connect, sink endpoint (the fuzzer)
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(broker.sink_endpoint)

    _send_all(broker, dealer, router_msgs)
    _send_all(broker, push, sink_msgs)
    expected = len(router_msgs) + len(sink_msgs)
    assert expected > 3000
    run_until(broker, lambda: broker.stats.bad_frames >= expected, timeout=20)
    assert broker.stats.bad_frames == expected
    assert broker.workers() == {} and broker.stats.workers_seen == 0

    # the broker is still fine: a normal task completes
    w = FakeWorker(ctx, broker, "honest")
    broker.submit("after-fuzz", "850|20|1000", SPEC)
    run_until(broker, lambda: w.task is not None, [w])
    res = w.finish()
    outcomes = run_until(broker, lambda: broker.pending == 0, [w])
    assert outcomes == [Done("after-fuzz", res)]
    assert broker.stats.bad_frames == expected
    for s in (dealer, push):
        s.close(linger=0)
    w.close()


def test_oversize_frames_cost_the_sender_its_connection_only(ctx, make_broker):
    broker = make_broker(max_message_bytes=64 * 1024)
    big = b"\x00" * (100 * 1024)
    # DEALER, connect, ventilator endpoint (sends one oversize frame)
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(broker.ventilator_endpoint)
    # PUSH, connect, sink endpoint (sends one oversize frame)
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(broker.sink_endpoint)
    run_until(broker, lambda: broker.connections() == 2)
    dealer.send(big)
    push.send(big)
    # zmq.MAXMSGSIZE: libzmq drops the connection; the frame never reaches the broker
    run_until(broker, lambda: broker.connections() < 2)
    run_until(broker, lambda: broker.connections() == 2)  # ... and the sender reconnects
    assert broker.stats.bad_frames == 0

    w = FakeWorker(ctx, broker, "honest")
    broker.submit("after-big", "850|20|1000", SPEC)
    run_until(broker, lambda: w.task is not None, [w])
    res = w.finish()
    outcomes = run_until(broker, lambda: broker.pending == 0, [w])
    assert outcomes == [Done("after-big", res)]
    # the oversize sender's socket reconnects and can speak the protocol again
    dealer.send(encode(Ready("was-too-big")))
    run_until(broker, lambda: "was-too-big" in broker.workers())
    for s in (dealer, push):
        s.close(linger=0)
    w.close()


def test_closed_broker_frees_its_ports(make_broker):
    broker = make_broker()
    endpoints = (broker.ventilator_endpoint, broker.sink_endpoint)
    broker.close()
    broker.close()  # idempotent
    with pytest.raises(RuntimeError):
        broker.poll(0)
    with Broker(*endpoints, heartbeat_s=HB) as again:
        assert (again.ventilator_endpoint, again.sink_endpoint) == endpoints
