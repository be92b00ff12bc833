"""A network partition between the head and its workers (issue 18.6), in network namespaces.

The head (a Broker in the test) stays in the test's namespace; two ``python -m gpuworker`` processes
(fake training) run in a namespace of their own, joined to it by a veth pair. The link is cut for a
few seconds just before the workers finish, then restored: each end's neighbour entry for the
other is pointed at a MAC address nobody has, so every frame is dropped by the receiving end
(not for its MAC), silently, routes and links up, nothing reset: as a dead switch would.
Before the fix the kernel delivered, after the workers
had reconnected and taken new tasks, what it still held for their abandoned connections: the
head took those old ``ready`` messages as "worker lost its task", orphaned the running tasks,
re-sent one, and sent tasks on the dead connections. Now the head closes the silent connections
(ZMTP heartbeats) and ignores what a replaced connection delivers: the partition costs only the
attempts the head had to give up while it heard nothing.

Needs root and ``ip netns`` (skipped otherwise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from transport.broker import Broker, Done

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HB = 0.2  # head and workers; liveness 3: the head gives up on a silent worker's attempt after 0.6 s
FAKE_S = 3.0
CUT_S = 4.0
NS = f"evovae-p{os.getpid()}"
HEAD_IF, WORKER_IF = f"evh{os.getpid()}"[:15], f"evw{os.getpid()}"[:15]
NET = f"10.218.{os.getpid() % 250}"


def ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    subprocess.run(argv, check=True, capture_output=True, timeout=20)


@pytest.fixture
def netns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (ip netns)")
    try:
        ip("netns", "add", NS)
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"ip netns does not work here: {exc}")
    try:
        ip("link", "add", HEAD_IF, "type", "veth", "peer", "name", WORKER_IF)
        ip("link", "set", WORKER_IF, "netns", NS)
        ip("addr", "add", f"{NET}.1/24", "dev", HEAD_IF)
        ip("link", "set", HEAD_IF, "up")
        ip("addr", "add", f"{NET}.2/24", "dev", WORKER_IF, ns=NS)
        ip("link", "set", WORKER_IF, "up", ns=NS)
        ip("link", "set", "lo", "up", ns=NS)
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=20)  # the veth pair goes with it
        subprocess.run(["ip", "link", "del", HEAD_IF], capture_output=True, timeout=20)


def mac(interface: str, ns: str | None = None) -> str:
    argv = ["cat", f"/sys/class/net/{interface}/address"]
    argv = argv if ns is None else ["ip", "netns", "exec", ns, *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=20).stdout.strip()


def link(ns: str, up: bool) -> None:
    """Cut (``up=False``) or restore the link between the head and the workers' namespace."""
    nowhere = "02:00:00:00:18:06"
    ip("neigh", "replace", f"{NET}.2", "lladdr", mac(WORKER_IF, ns) if up else nowhere, "dev", HEAD_IF,
       "nud", "permanent")
    ip("neigh", "replace", f"{NET}.1", "lladdr", mac(HEAD_IF) if up else nowhere, "dev", WORKER_IF,
       "nud", "permanent", ns=ns)


def until(broker: Broker, cond, timeout: float, what: str) -> list:
    outcomes: list = []
    deadline = time.monotonic() + timeout
    while not cond(outcomes):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}: {broker.stats}"
        outcomes += broker.poll(0.02)
    return outcomes


def test_a_partition_costs_only_the_attempts_the_head_gave_up(netns, tmp_path):
    tasks = [(f"part-{n}", g, {"epochs": 1}) for n, g in enumerate(["850|20|1000", "50|10|50", "200|20|200",
                                                                    "300|10|300"])]
    workers: list[subprocess.Popen] = []
    with structlog.testing.capture_logs() as logs, \
            Broker(f"tcp://{NET}.1:*", f"tcp://{NET}.1:*", heartbeat_s=HB, liveness=3) as broker:
        try:
            for n in range(2):
                with (tmp_path / f"w{n}.log").open("w") as err:
                    workers.append(subprocess.Popen(
                        ["ip", "netns", "exec", netns, sys.executable, "-m", "gpuworker", "--fake", "--fake-sleep",
                         str(FAKE_S), "--connect", broker.ventilator_endpoint, "--sink", broker.sink_endpoint,
                         "--worker-id", f"w{n}", "--heartbeat", str(HB), "--log-format", "json"],
                        cwd=REPO, stdout=subprocess.DEVNULL, stderr=err))
            until(broker, lambda _: len(broker.workers()) == 2, 60, "both workers")
            for task in tasks[:2]:
                broker.submit(*task)
            outcomes = until(broker, lambda _: broker.stats.dispatched == 2, 10, "both tasks to go out")
            started = time.monotonic()
            # the cable is pulled just before they finish: their result and their next ready are written into
            # connections they still believe alive (their own ZMTP heartbeats time out 3 x HB later)
            outcomes += until(broker, lambda _: time.monotonic() - started > FAKE_S - 0.2, 10, "the moment to cut")
            link(netns, up=False)
            cut = time.monotonic()
            outcomes += until(broker, lambda _: time.monotonic() - cut > CUT_S, 20, "the end of the cut")
            lost_in_cut = broker.stats.resends
            assert lost_in_cut == 2  # the head heard nothing from either: both attempts given up, re-sent
            link(netns, up=True)
            healed = time.monotonic()
            for task in tasks[2:]:
                broker.submit(*task)
            # the workers reconnect, take the re-sent and the new tasks; what the kernel held for their old
            # connections may come now: wait long enough for TCP's retransmissions to deliver it
            outcomes += until(broker, lambda out: len({o.task_id for o in out}) == len(tasks), 60, "every task")
            outcomes += until(broker, lambda _: time.monotonic() - healed > 15, 30, "late deliveries")
        finally:
            for proc in workers:
                proc.kill()
                proc.wait(timeout=10)
        st = broker.stats
    done = [o for o in outcomes if isinstance(o, Done)]
    assert sorted(o.task_id for o in done) == sorted(t[0] for t in tasks) and len(done) == len(outcomes)
    assert st.resends == lost_in_cut, [e for e in logs if e["event"] in ("task.resent", "task.orphaned")]
    # a re-sent attempt is not handed out when the first one's result, queued through the cut, comes first
    assert len(tasks) <= st.dispatched <= len(tasks) + lost_in_cut and st.duplicates <= lost_in_cut
    assert [e for e in logs if e["event"] == "task.orphaned"] == []
    assert not [e for e in logs if e["event"] == "worker.lost" and "send failed" in e["reason"]]
    print(f"stale readies ignored: {st.stale_readies}; duplicates: {st.duplicates}")
