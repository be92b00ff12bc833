"""A flood of idle TCP connections against a CURVE head that has few file descriptors.

The head runs in a process of its own under a lowered RLIMIT_NOFILE (256); the test opens
a few hundred connections to it from 127.0.0.2 that never send a byte, then an allowed
worker (from 127.0.0.1) asks for work. Without a cap per address and a short handshake
timeout such a flood held every descriptor for 30 s; here the worker is served in seconds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transport import keys
from transport.channel import WorkerChannel
from transport.keys import CurveClient
from transport.protocol import Result

REPO = Path(__file__).resolve().parents[1]
FD_LIMIT = 256
FLOOD = 400  # connections, half to each port: more than the head has descriptors
SERVED_WITHIN_S = 10.0

HEAD = """
import json, resource, sys
from evo.cmdline.log_setup import configure
from transport.broker import Broker
configure("json", "info")  # JSON lines on stderr, as the head writes them
from transport.keys import CurveServer
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, hard))
cap = {cap}
with Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=0.2,
            curve=CurveServer.from_files(sys.argv[1], sys.argv[2]), max_connections_per_address=cap) as broker:
    print(json.dumps({{"ventilator": broker.ventilator_endpoint, "sink": broker.sink_endpoint}}), flush=True)
    broker.submit("after-flood", "850|20|1000", {{"epochs": 1}})
    outcomes = []
    while not outcomes:
        outcomes = broker.poll(1.0)
    print(json.dumps({{"done": outcomes[0].task_id, "stats": broker.stats.as_dict()}}), flush=True)
"""


def _flood(endpoints: dict) -> list[socket.socket]:
    ports = [int(endpoints[name].rsplit(":", 1)[1]) for name in ("ventilator", "sink")]
    opened = []
    for i in range(FLOOD):
        s = socket.socket()
        s.setblocking(False)
        s.bind(("127.0.0.2", 0))
        s.connect_ex(("127.0.0.1", ports[i % 2]))  # EINPROGRESS: the kernel finishes it; nothing is ever sent
        opened.append(s)
    return opened


def _events(log: Path) -> list[str]:
    return [json.loads(line)["event"] for line in log.read_text().splitlines() if line.startswith("{")]


def _wait_for_event(log: Path, event: str, head: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while event not in _events(log):
        assert head.poll() is None and time.monotonic() < deadline, (event, _events(log)[-30:])
        time.sleep(0.05)  # polls a file another process writes: there is no event to wait on


@pytest.mark.slow
@pytest.mark.parametrize("cap, expect", [(None, "connection.refused"), (10_000, "broker.fd_exhausted")],
                         ids=["capped-per-address", "uncapped-runs-out-of-descriptors"])
def test_an_allowed_worker_is_served_within_seconds_of_a_flood(tmp_path, cap, expect):
    head_public, head_secret = keys.generate(tmp_path / "keys", "head")
    _, w1_secret = keys.generate(tmp_path / "allow", "w1")
    log = tmp_path / "head.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as err:
        head = subprocess.Popen([sys.executable, "-c", HEAD.format(limit=FD_LIMIT, cap=cap), str(head_secret),
                                 str(tmp_path / "allow")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=err, text=True)
    flood: list[socket.socket] = []
    try:
        endpoints = json.loads(head.stdout.readline())
        flood = _flood(endpoints)
        _wait_for_event(log, expect, head)  # the flood has hit: over the cap, or out of descriptors
        started = time.monotonic()
        client = CurveClient.from_files(w1_secret, head_public)
        with WorkerChannel(endpoints["ventilator"], endpoints["sink"], worker_id="w1", heartbeat_s=0.2,
                           curve=client) as channel:
            task = None
            while task is None and time.monotonic() - started < 3 * SERVED_WITHIN_S:
                task = channel.next_task(0.2)
            waited = time.monotonic() - started
            print(f"served {waited:.2f} s after a flood of {FLOOD} idle connections")
            assert task is not None, log.read_text()[-3000:]
            channel.send_result(Result("w1", task.task_id, task.attempt, True, {"loss": 1.0}))
            final = json.loads(head.stdout.readline())
        assert waited < SERVED_WITHIN_S, f"served after {waited:.1f} s"
        assert final["done"] == "after-flood"
        if cap is None:
            assert final["stats"]["connections_refused"] >= 1
        else:
            assert final["stats"]["accept_failures"] >= 1
        assert head.wait(timeout=10) == 0
    finally:
        for s in flood:
            s.close()
        head.kill()
        head.wait(timeout=10)


def test_the_units_give_the_head_and_the_workers_enough_descriptors():
    for name in ("evovae-search.service", "evovae-worker@.service"):
        text = (REPO / "deploy" / "systemd" / name).read_text()
        limits = [int(line.split("=", 1)[1]) for line in text.splitlines() if line.startswith("LimitNOFILE=")]
        assert limits and limits[0] >= 65536, name
    assert "ExecReload=/bin/kill -HUP $MAINPID" in (REPO / "deploy" / "systemd" / "evovae-search.service").read_text()
