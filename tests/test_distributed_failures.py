"""End-to-end failure tests of the distributed search (``evovae search`` over ZeroMQ).

Everything here is real: ``python -m evo.cli search`` heads and ``python -m gpuworker``
workers as separate processes, TCP sockets on 127.0.0.1, and real signals (SIGKILL,
SIGSTOP/SIGCONT, SIGTERM). Workers are fake (``--fake``: a deterministic loss after a
short sleep) except in the last test, which trains real VAEs. Timing is short
(``--heartbeat 0.2 --liveness 3``: a busy worker silent for 0.6 s loses its task), every
wait has a deadline, and every process is killed at the end of its test.
"""
from __future__ import annotations

import json
import math
import random
import signal
import time

import msgpack
import pytest
import zmq

from distributed_helpers import (
    Cluster,
    assert_search_complete,
    busy_task,
    free_port_pair,
    log_time,
    pid_alive,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # every test here starts several processes

FAKE = ["--fake", "--fake-sleep"]


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def _busy_worker(workers, timeout=20.0):
    """Wait until one of ``workers`` is in the middle of a task: (worker, task.received record)."""
    def find():
        for w in workers:
            task = busy_task(w)
            if task is not None:
                return w, task
        return None

    return wait_until(find, timeout, "a worker busy with a task",
                      fail=lambda: "\n".join(w.describe() for w in workers))


def _evaluation_of(result, genotype):
    found = [e for e in result["evaluations"] if e["genotype"] == genotype]
    assert len(found) == 1, (genotype, result["evaluations"])
    return found[0]


# --------------------------------------------------------------------------- 1. SIGKILL


def test_worker_killed_mid_task_its_task_is_resent_and_the_search_completes(cluster):
    head = cluster.head("--population", "4", "--offspring", "4", "--generations", "3", "--seed", "1")
    workers = [cluster.worker(head.port, *FAKE, "0.5", worker_id=f"kill{i}") for i in range(3)]
    victim, task = _busy_worker(workers)
    victim.signal(signal.SIGKILL)
    assert victim.wait(5) == -signal.SIGKILL

    resent = head.wait_event("task.resent", 10, task_id=task["task_id"], worker_id=victim.worker_id)
    assert resent[0]["attempt"] == task["attempt"] and resent[0]["next_attempt"] == task["attempt"] + 1
    assert "no heartbeat" in resent[0]["reason"]
    assert head.events("worker.lost", worker_id=victim.worker_id)

    result = assert_search_complete(head)
    # the killed worker's task was done once, by another worker, as attempt 2
    accepted = head.events("result.accepted", task_id=task["task_id"])
    assert len(accepted) == 1
    assert accepted[0]["worker_id"] != victim.worker_id and accepted[0]["attempt"] == task["attempt"] + 1
    assert _evaluation_of(result, task["genotype"])["error"] == ""
    assert not head.events("result.accepted", worker_id=victim.worker_id, task_id=task["task_id"])
    assert head.closed_stats()["resends"] >= 1
    assert all(w.alive() for w in workers if w is not victim)


# --------------------------------------------------------------------------- 2. SIGSTOP / SIGCONT


def test_stopped_worker_loses_its_task_and_its_late_result_is_ignored(cluster):
    head = cluster.head("--population", "4", "--offspring", "4", "--generations", "6", "--seed", "2")
    workers = [cluster.worker(head.port, *FAKE, "0.5", worker_id=f"stop{i}") for i in range(3)]
    victim, task = _busy_worker(workers)
    stopped_at = time.time()
    victim.signal(signal.SIGSTOP)
    try:
        resent = head.wait_event("task.resent", 10, task_id=task["task_id"], worker_id=victim.worker_id)[0]
        assert "no heartbeat" in resent["reason"]
        # re-sent only once the worker was silent for liveness x heartbeat = 0.6 s (its last
        # heartbeat may have gone out up to one 0.2 s interval before the stop)
        waited = log_time(resent) - stopped_at
        assert 0.35 <= waited <= 3.0, waited
        # another worker completes the re-sent attempt while the first one is still stopped
        accepted = head.wait_event("result.accepted", 10, task_id=task["task_id"])[0]
        assert accepted["worker_id"] != victim.worker_id and accepted["attempt"] == task["attempt"] + 1
        assert victim.alive() and head.alive()
    finally:
        victim.signal(signal.SIGCONT)

    # the woken worker finishes its old attempt: the head drops that result and counts it
    duplicate = head.wait_event("result.duplicate", 10, task_id=task["task_id"], worker_id=victim.worker_id)[0]
    assert duplicate["attempt"] == task["attempt"]
    assert head.alive(), "the search ended before the late result came: make it longer"

    result = assert_search_complete(head)
    assert len(head.events("result.accepted", task_id=task["task_id"])) == 1
    assert _evaluation_of(result, task["genotype"])["fitness"] > 0
    assert head.duplicate_results_reported() >= 1
    assert head.closed_stats()["duplicates"] >= 1
    assert victim.alive(), "the worker must live on after SIGCONT"
    # ... and serve again: it asked the head for work after its late result
    assert head.events("worker.seen", worker_id=victim.worker_id, returning=True)


# --------------------------------------------------------------------------- 3. poison genotype


POISON = "300|30|300"


def test_poison_genotype_is_given_up_after_max_attempts_and_local_workers_restart(cluster):
    head = cluster.head("--population", "4", "--offspring", "4", "--generations", "2", "--seed", "3",
                        "--initial", POISON, "--local-workers", "2", "--worker-arg=--fake",
                        "--worker-arg=--fake-sleep=0.05", f"--worker-arg=--poison={POISON}", "--max-attempts", "3")
    result = assert_search_complete(head, allow_failed=[POISON])

    poison = _evaluation_of(result, POISON)
    assert poison["loss"] is None and poison["fitness"] == 0
    assert "3 attempts" in poison["error"], poison["error"]
    assert POISON not in {p["genotype"] for p in result["population"]}
    assert len(result["population"]) == 4
    assert result["generations"][0]["failed"] == 1

    failed = head.events("task.failed", genotype=POISON)
    assert len(failed) == 1 and failed[0]["attempt"] == 3
    assert len(head.events("task.resent", task_id=failed[0]["task_id"])) == 2
    assert len(head.events("task.gave_up", genotype=POISON)) == 1
    # each attempt killed a worker (the poison SIGKILLs it); the head restarted them
    exited = head.events("local_worker.exited")
    assert len(exited) >= 2, head.describe()
    assert all(e["returncode"] == -signal.SIGKILL for e in exited)
    assert len(head.events("local_worker.started")) == 2 + len(exited)
    dispatched = head.events("task.dispatched", task_id=failed[0]["task_id"])
    assert [d["attempt"] for d in dispatched] == [1, 2, 3]
    assert len({d["worker_id"] for d in dispatched}) == 3  # a fresh worker each time


# --------------------------------------------------------------------------- 4. a worker from the doc only

#: A worker written from docs/protocol.md alone: raw pyzmq + msgpack, no evovae import.
#: It sends every result twice and, after its third task, replays its first result.
#: argv: ventilator sink record-file metric-keys(comma-separated)
RAW_WORKER = r'''
import json, os, sys, time
import msgpack, zmq

VENT, SINK, RECORD, KEYS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
HB = 0.2  # not longer than the head's heartbeat
wid = f"raw-{os.getpid()}"
ctx = zmq.Context()
vent = ctx.socket(zmq.DEALER)
vent.setsockopt(zmq.LINGER, 0)
vent.connect(VENT)
sink = ctx.socket(zmq.PUSH)
sink.setsockopt(zmq.LINGER, 2000)
sink.connect(SINK)


def pack(type_, **fields):
    return msgpack.packb({"v": 1, "type": type_, **fields}, use_bin_type=True)


def loss_of(genotype):
    # my own stand-in for training: a positive, finite number fixed by the genotype
    encoder, latent, decoder = genotype.split("|")
    widths = [int(x) for x in encoder.split(",")] + [int(x) for x in decoder.split(",")]
    return 200.0 + sum(widths) / 1000.0 + int(latent) / 7.0 + len(widths) * 0.125


first_result = None
done = 0
while True:
    vent.send(pack("ready", worker_id=wid, slots=1))
    if not vent.poll(int(HB * 1000)):
        continue
    frames = vent.recv_multipart()
    if len(frames) != 1:
        continue
    try:
        task = msgpack.unpackb(frames[0], raw=False, strict_map_key=True)
    except Exception:
        continue
    if not isinstance(task, dict) or task.get("v") != 1 or task.get("type") != "task":
        continue
    ids = dict(worker_id=wid, task_id=task["task_id"], attempt=task["attempt"])
    for step in range(4):  # "training", heartbeating every step (well within HB)
        sink.send(pack("heartbeat", progress=step / 4, **ids))
        time.sleep(0.03)
    loss = loss_of(task["genotype"])
    result = pack("result", ok=True, metrics={key: loss for key in KEYS}, error="", **ids)
    sink.send(result)
    sink.send(result)  # every result twice
    done += 1
    record = {"task_id": task["task_id"], "attempt": task["attempt"], "genotype": task["genotype"], "loss": loss}
    if first_result is None:
        first_result = result
    elif done == 3:
        sink.send(first_result)  # and the first one once more, later
        record["replayed_first"] = True
    record["foreign_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("evo", "transport", "gpuworker"))
    with open(RECORD, "a") as f:
        f.write(json.dumps(record) + "\n")
'''


def _run_raw_worker_search(cluster, tmp_path, keys):
    script = tmp_path / "raw_worker.py"
    script.write_text(RAW_WORKER)
    record = tmp_path / "raw_worker.jsonl"
    head = cluster.head("--population", "4", "--offspring", "4", "--generations", "3", "--seed", "4")
    raw = cluster.script("raw_worker", script, f"tcp://127.0.0.1:{head.port}", f"tcp://127.0.0.1:{head.port + 1}",
                         str(record), keys)
    rc = head.wait(60)
    assert raw.alive(), raw.describe()
    lines = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return head, rc, lines


def test_worker_from_the_protocol_doc_with_duplicate_and_replayed_results(cluster, tmp_path):
    head, rc, done = _run_raw_worker_search(cluster, tmp_path, "loss,val_loss")
    assert rc == 0, head.describe()
    result = assert_search_complete(head, expect_fake_losses=False)
    assert all(r["foreign_modules"] == [] for r in done)

    # every loss is the one the raw worker computed, each genotype evaluated once
    computed = {r["genotype"]: r["loss"] for r in done}
    for e in result["evaluations"]:
        assert e["genotype"] in computed and e["loss"] == computed[e["genotype"]], e

    # every result arrived at least twice but was applied once
    accepted = head.events("result.accepted")
    assert len(accepted) == len(result["evaluations"]) == len({a["task_id"] for a in accepted})
    duplicates = head.events("result.duplicate")
    first = done[0]["task_id"]
    assert any(r.get("replayed_first") for r in done)
    assert len([d for d in duplicates if d["task_id"] == first]) >= 2  # its second copy, and the replay
    # the second copy of the very last result may reach the head after the search ended
    assert len(duplicates) >= len(accepted)
    assert head.closed_stats()["duplicates"] == len(duplicates)
    assert head.duplicate_results_reported() == len(duplicates)
    assert head.closed_stats()["bad_frames"] == 0
    assert head.closed_stats()["heartbeats"] >= len(accepted)


def test_worker_from_the_protocol_doc_reporting_only_loss_as_documented(cluster, tmp_path):
    # docs/protocol.md: the head reads metrics["loss"] (validation negative ELBO) and nothing else
    head, rc, done = _run_raw_worker_search(cluster, tmp_path, "loss")
    assert rc == 0, head.describe()
    result = head.result()
    computed = {r["genotype"]: r["loss"] for r in done}
    assert result["evaluations"]
    for e in result["evaluations"]:
        assert e["error"] == "" and e["loss"] == computed[e["genotype"]], e


# --------------------------------------------------------------------------- 5. fuzzing the head

_ID_BAD = [5, "", "a b", "x" * 129, None, b"bin", True, "\u00e9t\u00e9", 1.5, ["w"]]
_BAD_VALUES = {
    "v": [2, 0, "1", True, None, 1.0, -1],
    "type": [5, "READY", None, "bogus", "", b"ready", "Result"],
    "worker_id": _ID_BAD,
    "task_id": _ID_BAD,
    "slots": [0, 65, True, "1", 1.0, None, -1, 2**64 - 1, [1]],
    "attempt": [0, 1001, True, "1", 1.5, None, -(2**63), 2**64 - 1],
    "progress": [1.5, -0.1, math.nan, math.inf, -math.inf, True, "0.5", None, [0.5]],
    "ok": [1, 0, "true", None, 1.0],
    "metrics": [[], {"a": {"b": 1}}, {"": 1.0}, {"a": math.nan}, 5, None, {"a b": 1.0}, {"a": [1.0, math.inf]},
                {"a": "x" * 4097}],
    "error": [5, None, "x" * 16385, b"err", False],
}


def _message(kind: str) -> dict:
    base = {"v": 1, "type": kind, "worker_id": "fuzz-1"}
    if kind == "ready":
        return {**base, "slots": 1}
    if kind == "heartbeat":
        return {**base, "task_id": "fuzz-task", "attempt": 1, "progress": 0.5}
    if kind == "result":
        return {**base, "task_id": "fuzz-task", "attempt": 1, "ok": True, "metrics": {"loss": 150.0}, "error": ""}
    return {"v": 1, "type": "task", "task_id": "fuzz-task", "attempt": 1, "genotype": "850|20|1000",
            "spec": {"epochs": 1}, "lease_s": 10.0}


def _fuzz_message(rng: random.Random, socket_name: str) -> list[bytes]:
    """One malformed message (its frames) for the ventilator's DEALER or the sink's PUSH.
    None of them is a valid message of a type that socket accepts."""
    own = ["ready"] if socket_name == "ventilator" else ["heartbeat", "result"]
    other = ["heartbeat", "result", "task"] if socket_name == "ventilator" else ["ready", "task"]
    choice = rng.randrange(10)
    if choice == 0:  # random bytes (possibly empty)
        return [rng.randbytes(rng.randrange(0, 300))]
    if choice == 1:  # truncated msgpack of a valid message
        packed = msgpack.packb(_message(rng.choice(own)))
        return [packed[: rng.randrange(1, len(packed))]]
    if choice in (2, 3, 4):  # a field of the wrong type or out of range
        msg = _message(rng.choice(own))
        field = rng.choice([k for k in msg if k in _BAD_VALUES])
        msg[field] = rng.choice(_BAD_VALUES[field])
        return [msgpack.packb(msg, use_bin_type=True)]
    if choice == 5:  # a missing or an unknown field
        msg = _message(rng.choice(own))
        if rng.random() < 0.5:
            del msg[rng.choice(list(msg))]
        else:
            msg[rng.choice(["extra", "slots2", "v2", "Type"])] = 1
        return [msgpack.packb(msg)]
    if choice == 6:  # a valid message of a type this socket does not take
        return [msgpack.packb(_message(rng.choice(other)))]
    if choice == 7:  # not a map, or a map with non-str keys, or trailing bytes
        return [rng.choice([msgpack.packb([1, 2, 3]), msgpack.packb(None), msgpack.packb("ready"),
                            msgpack.packb({1: "v", 2: "type"}, strict_types=False),
                            msgpack.packb(_message(own[0])) + b"\x00",
                            b"\xc1", b"\x91" * 100_000])]
    if choice == 8:  # multi-part garbage
        return [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(2, 5))]
    # REQ-style envelope around a valid message: [b"", payload]
    return [b"", msgpack.packb(_message(own[0]))]


def test_fuzzed_head_survives_and_the_search_completes(cluster):
    head = cluster.head("--population", "4", "--offspring", "4", "--generations", "25", "--seed", "5",
                        "--local-workers", "2", "--worker-arg=--fake", "--worker-arg=--fake-sleep=0.1")
    head.wait_event("result.accepted", 20)  # the search is under way
    rng = random.Random(20240531)
    ctx = zmq.Context()
    sent = {"ventilator": 0, "sink": 0}
    try:
        dealer = ctx.socket(zmq.DEALER)
        push = ctx.socket(zmq.PUSH)
        for sock in (dealer, push):
            sock.setsockopt(zmq.SNDTIMEO, 5000)
            sock.setsockopt(zmq.LINGER, 5000)
        dealer.connect(f"tcp://127.0.0.1:{head.port}")
        push.connect(f"tcp://127.0.0.1:{head.port + 1}")
        # one bad frame on each socket first, while the head's log is not rate-limited
        # (20 frame.rejected lines a second, the rest only counted): both are logged
        for name, sock in (("ventilator", dealer), ("sink", push)):
            sock.send(b"not msgpack \xc1")
            sent[name] += 1
            head.wait_event("frame.rejected", 10, socket=name)
        for _ in range(3000):
            name, sock = rng.choice([("ventilator", dealer), ("sink", push)])
            sock.send_multipart(_fuzz_message(rng, name))
            sent[name] += 1
        # oversized frames (> 1 MiB MAXMSGSIZE): libzmq drops that peer's connection, so
        # they go on sockets of their own and are not counted as bad frames
        for kind in (zmq.DEALER, zmq.PUSH):
            big = ctx.socket(kind)
            big.setsockopt(zmq.SNDTIMEO, 5000)
            big.setsockopt(zmq.LINGER, 2000)
            big.connect(f"tcp://127.0.0.1:{head.port + (kind == zmq.PUSH)}")
            big.send(rng.randbytes((1 << 20) + 4096))
            big.close()
        dealer.close()  # LINGER: returns once the frames are handed to the head's connection
        push.close()
    finally:
        ctx.destroy(linger=0)
    assert head.alive(), "the search ended before the fuzzing did: make it longer\n" + head.describe()
    assert sent["ventilator"] > 1000 and sent["sink"] > 1000

    assert_search_complete(head)
    stats = head.closed_stats()
    assert stats["bad_frames"] == sent["ventilator"] + sent["sink"], (stats, sent)
    rejected = head.events("frame.rejected")
    assert {r.get("socket") for r in rejected} == {"ventilator", "sink"}
    assert not [r for r in rejected if "internal error" in r.get("reason", "")]
    suppressed = sum(e["count"] for e in head.events("frame.rejected.suppressed"))
    assert len(rejected) + suppressed == stats["bad_frames"]
    assert stats["workers_seen"] == 2 and stats["unknown_results"] == 0


# --------------------------------------------------------------------------- 6. workers first


def test_workers_started_before_the_head_connect_when_it_comes_up(cluster):
    port = free_port_pair()
    workers = [cluster.worker(port, *FAKE, "0.25", "--log-level", "debug", worker_id=f"early{i}") for i in range(2)]
    for w in workers:
        # nobody listens: each keeps asking for work (a Ready every heartbeat) while its
        # connection retries with back-off (0.1 s doubling up to 5 s); once its few queued
        # Ready messages fill the send queue it logs every further one as skipped
        wait_until(lambda w=w: len(w.log.events("ready.skipped")) >= 3, 20,
                   f"{w.name} to skip 3 Ready messages while no head listens", fail=w.describe)
    assert all(w.alive() for w in workers)
    assert not any(w.log.events("task.received") for w in workers)

    # long enough (24 tasks of 0.25 s) for both to come through their back-off
    head = cluster.head("--population", "4", "--offspring", "4", "--generations", "6", "--seed", "6", port=port)
    ids = {w.worker_id for w in workers}
    for worker_id in ids:
        head.wait_event("worker.seen", 15, worker_id=worker_id)
    assert_search_complete(head)
    assert {e["worker_id"] for e in head.events("worker.seen")} == ids
    assert {e["worker_id"] for e in head.events("result.accepted")} == ids
    assert all(w.alive() for w in workers)


# --------------------------------------------------------------------------- 7. head restart


def test_head_killed_and_restarted_on_the_same_ports_is_served_by_the_same_workers(cluster):
    args = ["--population", "4", "--offspring", "4", "--seed", "7"]
    first = cluster.head(*args, "--generations", "30", name="head-first")
    port = first.port
    workers = [cluster.worker(port, *FAKE, "0.2", worker_id=f"stay{i}") for i in range(2)]
    pids = [w.pid for w in workers]
    first.wait_event("result.accepted", 20, count=4)
    first.signal(signal.SIGKILL)
    assert first.wait(5) == -signal.SIGKILL
    assert not first.output.exists()
    assert all(w.alive() for w in workers)

    second = cluster.head(*args, "--generations", "5", port=port, name="head-second")
    ids = {w.worker_id for w in workers}
    for worker_id in ids:  # they reconnect by themselves (back-off 0.1 s doubling up to 5 s)
        second.wait_event("worker.seen", 15, worker_id=worker_id)
    assert_search_complete(second)
    assert {e["worker_id"] for e in second.events("worker.seen")} == ids
    assert {e["worker_id"] for e in second.events("result.accepted")} == ids
    assert [w.pid for w in workers] == pids and all(w.alive() and pid_alive(w.pid) for w in workers)
    for w in workers:  # one process, one worker id, across both heads
        started = w.log.events("worker.started")
        assert len(started) == 1 and started[0]["worker_id"] == w.worker_id


# --------------------------------------------------------------------------- 8. SIGTERM


def test_sigterm_stops_the_head_and_its_local_workers(cluster):
    head = cluster.head("--population", "4", "--offspring", "4", "--generations", "100", "--seed", "8",
                        "--local-workers", "2", "--worker-arg=--fake", "--worker-arg=--fake-sleep=0.2")
    head.wait_event("result.accepted", 20, count=2)
    pids = head.local_worker_pids()
    assert len(pids) == 2 and all(pid_alive(p) for p in pids), head.describe()
    sent_at = time.monotonic()
    head.signal(signal.SIGTERM)
    assert head.wait(5) == 128 + signal.SIGTERM
    assert time.monotonic() - sent_at < 5
    assert not [p for p in pids if pid_alive(p)], f"local workers left running: {pids}"
    assert "stopped by SIGTERM" in head.log.text()
    assert not head.output.exists()
    stopped = head.log.events("worker.stopped", role="worker")
    assert len(stopped) == 2, head.describe()


def test_sigterm_to_a_worker_mid_task_exits_promptly_with_status_0(cluster):
    head = cluster.head("--population", "2", "--offspring", "2", "--generations", "1", "--seed", "9")
    worker = cluster.worker(head.port, *FAKE, "20", worker_id="lone")
    received = wait_until(lambda: busy_task(worker), 20, "the worker's task", fail=worker.describe)
    head.wait_event("task.dispatched", 5, task_id=received["task_id"], worker_id="lone")
    sent_at = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(3) == 0, worker.describe()
    assert time.monotonic() - sent_at < 3
    abandoned = worker.log.events("task.abandoned", task_id=received["task_id"])
    assert len(abandoned) == 1
    assert not worker.log.events("result.sent")
    assert worker.log.events("worker.stopped")
    # the head notices the silence and puts the task back in the queue
    head.wait_event("task.resent", 5, task_id=received["task_id"], worker_id="lone")
    assert head.alive()


# --------------------------------------------------------------------------- JSON log lines


def test_head_json_log_stays_parseable_when_python_is_unbuffered(cluster):
    """The head's stderr is shared with its local workers. Python unbuffered
    (PYTHONUNBUFFERED=1, usual in containers) must not make their JSON lines
    interleave: each log line has to leave in one write()."""
    head = cluster.head("--population", "6", "--offspring", "8", "--generations", "20", "--seed", "10",
                        "--local-workers", "3", "--worker-arg=--fake", "--worker-arg=--fake-sleep=0.01",
                        "--log-level", "debug", env={"PYTHONUNBUFFERED": "1"})
    assert head.wait(60) == 0, head.describe()
    assert head.log.unparsable_lines() == []


# --------------------------------------------------------------------------- 9. real training


@pytest.mark.timeout(300)
def test_real_training_over_zeromq_with_local_workers(cluster):
    head = cluster.head("--local-workers", "2", "--population", "3", "--offspring", "3", "--generations", "2",
                        "--epochs", "1", "--train-subset", "500", "--val-size", "500", "--dataset", "fashion-mnist",
                        "--heartbeat", "1.0")
    rc = head.wait(240)
    assert rc == 0, head.describe()
    result = head.result()
    evaluations = result["evaluations"]
    assert len(evaluations) == 6, evaluations
    assert len({e["genotype"] for e in evaluations}) == 6
    for e in evaluations:
        assert e["error"] == "" and e["loss"] is not None and math.isfinite(e["loss"]), e
        assert 100 < e["loss"] < 700, e
    assert len(result["population"]) == 3
    completed = head.events("task.completed")
    assert len(completed) == 6 and all(c["ok"] for c in completed)
    assert {c["worker_id"] for c in completed} <= {w["worker_id"] for w in head.events("worker.seen")}
    assert not any("--fake" in a for a in head.argv)
