"""WorkerChannel against a real Broker (and against a raw ROUTER), on loopback sockets."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from transport.broker import Broker, Done
from transport.channel import WorkerChannel, default_worker_id
from transport.codec import decode, encode
from transport.protocol import Heartbeat, ProtocolError, Ready, Result, Task

HB = 0.05
ANY = "tcp://127.0.0.1:*"
SPEC = {"epochs": 2, "seed": 0}


class ThreadWorker:
    """Runs a WorkerChannel loop in a thread: each task 'trains' for train_s, then reports."""

    def __init__(self, ventilator: str, sink: str, train_s: float = 0.2, worker_id: str = "tw-1") -> None:
        self.args = (ventilator, sink)
        self.train_s = train_s
        self.worker_id = worker_id
        self.stop = threading.Event()
        self.received: list[Task] = []
        self.sent: list[Result] = []
        self.error: BaseException | None = None
        self.changed = threading.Condition()  # notified when a result is about to be sent
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ThreadWorker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            with WorkerChannel(*self.args, worker_id=self.worker_id, heartbeat_s=HB) as channel:
                while not self.stop.is_set():
                    task = channel.next_task(0.1)
                    if task is None:
                        continue
                    self.received.append(task)
                    with channel.working(task) as job:
                        steps = 10
                        for i in range(steps):
                            job.progress((i + 1) / steps)
                            self.stop.wait(self.train_s / steps)  # stands in for training
                    result = Result(channel.worker_id, task.task_id, task.attempt, True,
                                    {"val_loss": 1.0 + len(self.sent)})
                    with self.changed:
                        self.sent.append(result)  # before sending: the test may see the Done first
                        self.changed.notify_all()
                    channel.send_result(result)
        except BaseException as exc:  # surfaced in __exit__
            self.error = exc


def wait_for(worker: ThreadWorker, cond, timeout: float = 5.0) -> None:
    """Wait (on the worker's condition variable) until the worker thread makes cond() true."""
    with worker.changed:
        assert worker.changed.wait_for(cond, timeout), "timed out waiting for the worker thread"


def poll_until(broker: Broker, cond, timeout: float = 5.0) -> list:
    outcomes: list = []
    deadline = time.monotonic() + timeout
    while not cond(outcomes):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s; stats={broker.stats} workers={broker.workers()}")
        outcomes += broker.poll(0.02)
    return outcomes


def test_default_worker_id_is_valid():
    wid = default_worker_id()
    Ready(wid)
    assert wid != default_worker_id()


def test_bad_worker_id_rejected():
    with pytest.raises(ProtocolError):
        WorkerChannel("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", worker_id="bad id")


def test_task_heartbeats_and_result_through_a_broker():
    with Broker(ANY, ANY, heartbeat_s=HB) as broker, ThreadWorker(
        broker.ventilator_endpoint, broker.sink_endpoint, train_s=0.4
    ) as worker:
        broker.submit("t1", "850|20|1000", SPEC)
        progress_seen: list[float] = []

        def busy(_):
            state = broker.workers().get("tw-1", {})
            if state.get("state") == "busy" and state["progress"]:
                progress_seen.append(state["progress"])
            return len(progress_seen) >= 3

        poll_until(broker, busy)
        outcomes = poll_until(broker, lambda out: out)
        assert outcomes == [Done("t1", worker.sent[0])]
        assert outcomes[0].result.metrics == {"val_loss": 1.0}
        assert broker.stats.heartbeats >= 3 and 0 < progress_seen[0] <= progress_seen[-1] <= 1
        assert broker.stats.resends == 0 and broker.stats.bad_frames == 0
        # back to idle: it asks for work again and the next task goes to it
        broker.submit("t2", "200,500|20|1000,650,50", SPEC)
        outcomes = poll_until(broker, lambda out: out)
        assert [o.task_id for o in outcomes] == ["t2"]
        assert [t.task_id for t in worker.received] == ["t1", "t2"]


def test_head_restart_channel_keeps_working():
    first = Broker(ANY, ANY, heartbeat_s=HB)
    endpoints = (first.ventilator_endpoint, first.sink_endpoint)
    try:
        with ThreadWorker(*endpoints, train_s=0.3) as worker:
            first.submit("a", "850|20|1000", SPEC)
            assert [o.task_id for o in poll_until(first, lambda out: out)] == ["a"]

            # the head dies while the worker trains "b"
            first.submit("b", "850|20|1000", SPEC)
            poll_until(first, lambda _: len(worker.received) == 2)
            first.close()
            # its result is pushed while no head is there: queued by the PUSH socket
            wait_for(worker, lambda: len(worker.sent) == 2)
            assert worker.sent[-1].task_id == "b"

            # a new head binds the same endpoints and resumes "b" (e.g. from its journal)
            with Broker(*endpoints, heartbeat_s=HB) as second:
                second.submit("b", "850|20|1000", SPEC)
                second.submit("c", "850|20|1000", SPEC)
                outcomes = poll_until(second, lambda out: {o.task_id for o in out} == {"b", "c"})
                assert all(isinstance(o, Done) and o.result.ok for o in outcomes)
                assert second.stats.completed == 2 and second.stats.workers_seen == 1
    finally:
        first.close()


def test_next_task_resends_ready_and_drops_bad_frames():
    ctx = zmq.Context()
    try:
        # ROUTER, bind, ventilator endpoint (a hand-written head)
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(ANY)
        endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        with WorkerChannel(endpoint, "tcp://127.0.0.1:1", worker_id="w-raw", heartbeat_s=HB) as channel:
            start = time.monotonic()
            assert channel.next_task(0.3) is None
            assert 0.29 <= time.monotonic() - start < 1.0
            readies = []
            while router.poll(0):
                identity, payload = router.recv_multipart()
                readies.append(decode(payload))
            assert len(readies) >= 4 and set(readies) == {Ready("w-raw", 1)}

            task = Task("t1", 1, "850|20|1000", SPEC, 60.0)
            router.send_multipart([identity, b"\xc1garbage"])
            router.send_multipart([identity, encode(Heartbeat("x", "t", 1, 0.0))])
            router.send_multipart([identity, b"", encode(task)])  # a delimiter frame: not this protocol
            router.send_multipart([identity, encode(task)])
            assert channel.next_task(2.0) == task
    finally:
        ctx.destroy(linger=0)


def test_working_heartbeats_until_the_block_ends():
    ctx = zmq.Context()
    try:
        # PULL, bind, sink endpoint (a hand-written sink)
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(ANY)
        sink = pull.getsockopt_string(zmq.LAST_ENDPOINT)
        task = Task("t1", 2, "850|20|1000", SPEC, 60.0)
        with WorkerChannel("tcp://127.0.0.1:1", sink, worker_id="w-hb", heartbeat_s=HB) as channel:
            with channel.working(task) as job:
                job.progress(0.5)
                beats = []
                deadline = time.monotonic() + 3
                while len(beats) < 3 and time.monotonic() < deadline:
                    if pull.poll(50):
                        beats.append(decode(pull.recv()))
                job.progress(7)  # clamped
                job.progress(float("nan"))  # ignored
                assert job.value == 1.0
            assert all(b.task_id == "t1" and b.attempt == 2 and b.worker_id == "w-hb" for b in beats)
            assert beats[-1].progress == 0.5
            # outside working() the beats stop: drain until 3 intervals pass in silence
            stopped_by = time.monotonic() + 1.0
            while pull.poll(int(3 * HB * 1000)):
                pull.recv()
                assert time.monotonic() < stopped_by, "heartbeats went on after working() ended"
            channel.send_result(Result("w-hb", "t1", 2, True, {"val_loss": 3.0}))
            assert pull.poll(2000)
            assert decode(pull.recv()) == Result("w-hb", "t1", 2, True, {"val_loss": 3.0})
    finally:
        ctx.destroy(linger=0)


def test_closed_channel_refuses_use():
    channel = WorkerChannel("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", heartbeat_s=HB)
    channel.close()
    channel.close()
    with pytest.raises(RuntimeError):
        channel.next_task(0)
