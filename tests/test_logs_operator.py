"""The operator's view of real runs: ``evovae logs summarize`` after a head was killed with kill -9,
and after a sender flooded a head with garbage. Real head processes with real local workers (fake
training), a real ZeroMQ client sending the garbage; every wait polls with a deadline.
"""
from __future__ import annotations

import signal

import msgpack
import pytest
import zmq

from distributed_helpers import Cluster
from evo.logs import format_summary, read_logs, summarize
from evo.logs.reading import COMMON_FIELDS
from transport.codec import encode
from transport.protocol import Result

pytestmark = pytest.mark.slow

FAKE = ("--local-workers", "2", "--worker-arg=--fake", "--population", "4", "--offspring", "4")
GARBAGE_ID = b"garbage-1"  # the routing id of the garbage sender's DEALER


@pytest.fixture
def cluster(tmp_path):
    made = Cluster(tmp_path)
    yield made
    made.close()


def worker_ids(head) -> set[str]:
    """The ids of the head's local workers, from their own lines in the shared log."""
    return {r["worker_id"] for r in head.log.events("channel.connected", role="worker")}


def test_a_head_killed_with_kill_9_is_summarized_from_its_last_broker_counters(cluster):
    head = cluster.head(*FAKE, "--worker-arg=--fake-sleep=0.2", "--generations", "500")
    head.wait_event("broker.counters", timeout=90)  # logged periodically while the head runs
    head.wait_event("task.completed", timeout=30, count=6)
    head.signal(signal.SIGKILL)
    head.wait(10)
    assert head.events("broker.closed") == []
    last = head.events("broker.counters")[-1]

    s = summarize(read_logs([str(head.stderr_path)]))
    h = s["head"]
    assert h["broker_stats_from"] == "broker.counters"
    assert h["broker_stats"] == {k: v for k, v in last.items() if k not in COMMON_FIELDS}
    assert h["broker_stats"]["workers_alive"] >= 1
    assert [run["closed"] for run in s["broker_runs"]] == [False]
    # the head's lines go on after its last counters line: its own counts are at least the broker's
    assert h["dispatched"] >= h["broker_stats"]["dispatched"] and h["runs"] == 1
    assert {w["worker_id"] for w in s["workers"]} == worker_ids(head) and len(s["workers"]) >= 2
    assert s["rejected_senders"] == []
    text = format_summary(s)
    assert "from its last broker.counters line" in text and "no broker.closed" in text


def send_garbage(endpoint: str, sink: str, frames: int, sink_frames: int) -> None:
    """A sender that never does the handshake: bad frames on both sockets, and one well-formed result
    for a task the head never had, under a made-up worker id."""
    ctx = zmq.Context()
    try:
        # DEALER, connect, the head's ventilator: frames that are not msgpack, or not a Ready
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.ROUTING_ID, GARBAGE_ID)
        dealer.setsockopt(zmq.LINGER, 5000)
        dealer.connect(endpoint)
        # PUSH, connect, the head's sink: bad frames and the forged result
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 5000)
        push.connect(sink)
        for n in range(frames):
            dealer.send(b"\xc1garbage" if n % 2 else msgpack.packb({"type": "nonsense", "n": n}))
        for _ in range(sink_frames):
            push.send(b"\xc1\xc1")
        push.send(encode(Result("forged-1", "f" * 24, 1, True, {"val_loss": 0.001})))
        dealer.close()  # LINGER: returns once queued frames are sent (or after 5 s)
        push.close()
    finally:
        ctx.term()


def test_a_sender_of_garbage_is_listed_apart_from_the_workers(cluster):
    head = cluster.head(*FAKE, "--worker-arg=--fake-sleep=0.2", "--generations", "4")
    head.wait_event("worker.seen", timeout=30, count=2)
    port = head.port
    send_garbage(f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}", frames=300, sink_frames=40)
    assert head.wait(120) == 0, head.describe()
    closed = head.closed_stats()
    assert closed["bad_frames"] == 340 and closed["unknown_results"] == 1

    s = summarize(read_logs([str(head.stderr_path)]))
    assert {w["worker_id"] for w in s["workers"]} == worker_ids(head) and len(s["workers"]) == 2
    assert s["head"]["bad_frames"] == 340 == s["head"]["broker_stats"]["bad_frames"]
    assert s["head"]["broker_stats_from"] == "broker.closed"
    by_sender = {(r["kind"], r["sender"]): r for r in s["rejected_senders"]}
    garbage = by_sender[("peer", GARBAGE_ID.hex())]
    assert garbage["sockets"] == ["ventilator"] and garbage["bad_frames"] == 300
    assert garbage["suppressed"] > 0, "a burst of 300 is rate-limited: most are counted, not logged"
    assert by_sender[("peer", "127.0.0.1")]["bad_frames"] == 40
    assert by_sender[("worker_id", "forged-1")]["other"] == {"result.unknown": 1}
    per_socket = {(row["socket"], row["sender"]): row["total"] for row in s["bad_frames"]}
    assert per_socket == {("ventilator", GARBAGE_ID.hex()): 300, ("sink", "127.0.0.1"): 40}
    text = format_summary(s)
    assert "rejected senders (3;" in text and "workers (2;" in text
