"""A busy worker whose key is revoked (issue 18.3): real ``python -m gpuworker`` processes (fake
training), a CURVE Broker in the test as the head, its allow-list directory edited and SIGHUP sent
to the test process (what ``systemctl reload evovae-search`` does to the head).

It was intermittent (the worker died with ``TimeoutError: could not queue the result...`` in 2 of
3 runs), so one test revokes ten busy workers in a row, each at a different moment of its task.
The worker's documented behaviour: its undelivered result is one ``result.unsent`` line (or, when
the result left before the refusal, a ``result.sent`` the head never reads), never a traceback;
it goes on asking for work, and joins again when its key is put back. The head counts each of
those attempts as lost and sends the task again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transport import keyfiles
from transport.broker import Broker, Done
from transport.keys import CurveServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HB = 0.2  # the head's heartbeat_s and the workers' --heartbeat; liveness 3: silent for 0.6 s is lost
FAKE_S = 1.0  # each fake task takes this long: longer than the silence limit, so heartbeats must flow
REVOKED = 10  # busy workers revoked one after the other
TASK = ("revoke-1", "850|20|1000", {"epochs": 1})


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def poll_until(broker: Broker, cond, timeout: float, what: str) -> list:
    outcomes: list = []
    deadline = time.monotonic() + timeout
    while not cond(outcomes):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}: {broker.stats}"
        outcomes += broker.poll(0.02)
    return outcomes


def holder(broker: Broker, task_id: str, attempt: int) -> str | None:
    for wid, state in broker.workers().items():
        if state["task_id"] == task_id and state["attempt"] == attempt:
            return wid
    return None


def test_busy_workers_whose_key_is_revoked_exit_nothing_and_lose_nothing(tmp_path):
    key_dir, allow = tmp_path / "keys", tmp_path / "allow"
    allow.mkdir()
    head_public, head_secret = keyfiles.generate(key_dir, "head")
    names = [f"w{i}" for i in range(REVOKED + 1)]
    public_keys = {}
    for name in names:
        public, _ = keyfiles.generate(key_dir, name)
        (allow / f"{name}.key").write_bytes(public.read_bytes())
        public_keys[name] = keyfiles.load_public(public).decode()
    rng = random.Random(18)
    procs: dict[str, subprocess.Popen] = {}
    logs = {name: tmp_path / f"{name}.log" for name in names}
    with Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=HB, liveness=3, max_attempts=REVOKED + 5,
                curve=CurveServer.from_files(head_secret, allow)) as broker:
        previous = signal.signal(signal.SIGHUP, lambda *_: broker.request_reload())
        try:
            for name in names:
                with logs[name].open("w") as err:
                    procs[name] = subprocess.Popen(
                        [sys.executable, "-m", "gpuworker", "--fake", "--fake-sleep", str(FAKE_S),
                         "--connect", broker.ventilator_endpoint, "--sink", broker.sink_endpoint,
                         "--server-key", str(head_public), "--key", str(key_dir / f"{name}.key_secret"),
                         "--worker-id", name, "--heartbeat", str(HB), "--log-format", "json"],
                        cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "OMP_NUM_THREADS": "1"})
            poll_until(broker, lambda _: len(broker.workers()) == len(names), 60, "every worker to ask for work")
            # one task each first: every connection of every worker has carried a message (the head then
            # knows them all, and closes them all at the revocation)
            for n in range(len(names)):
                broker.submit(f"warm-{n}", "850|20|1000", {"epochs": 1, "seed": n})
            warm = poll_until(broker, lambda out: len(out) == len(names), 30, "the warm-up tasks")
            assert {o.peer_key for o in warm} == set(public_keys.values())

            broker.submit(*TASK)
            revoked: list[tuple[str, int]] = []  # (worker, the attempt it was running)
            outcomes: list = []
            for attempt in range(1, REVOKED + 1):
                poll_until(broker, lambda _, n=attempt: holder(broker, TASK[0], n), 10, f"attempt {attempt} to go out")
                victim = holder(broker, TASK[0], attempt)
                assert victim is not None and victim not in dict(revoked)
                when = time.monotonic() + rng.uniform(0.05, 0.7) * FAKE_S  # somewhere in the middle of the task
                outcomes += poll_until(broker, lambda _, t=when: time.monotonic() >= t, 5, "the moment to revoke")
                (allow / f"{victim}.key").unlink()
                os.kill(os.getpid(), signal.SIGHUP)  # delivered before kill returns; the next poll round reloads
                outcomes += poll_until(broker, lambda _, n=attempt: broker.stats.resends == n, 5, "the revocation")
                revoked.append((victim, attempt))
            outcomes += poll_until(broker, lambda out: out, 30, "the task to complete")
            (done,) = outcomes
            assert isinstance(done, Done) and done.task_id == TASK[0]
            (last,) = set(names) - {w for w, _ in revoked}
            assert done.peer_key == public_keys[last] and done.result.attempt == REVOKED + 1
            st = broker.stats
            assert (st.dispatched, st.resends, st.completed, st.failures) == (
                2 * REVOKED + 2, REVOKED, len(names) + 1, 0)

            # every revoked worker: alive, one line about its result, no traceback
            def finished(name: str, attempt: int) -> dict | None:
                for r in records(logs[name]):
                    if r["event"] == "task.finished" and (r.get("task_id"), r.get("attempt")) == (TASK[0], attempt):
                        return r
                return None

            poll_until(broker, lambda _: all(finished(w, a) for w, a in revoked), 30,
                       "the revoked workers to finish their attempts")
            unsent = 0
            for name, attempt in revoked:
                text = logs[name].read_text()
                assert procs[name].poll() is None, f"{name} exited ({procs[name].returncode}):\n{text[-3000:]}"
                assert "Traceback" not in text and "TimeoutError" not in text, text[-3000:]
                assert all(line.startswith("{") for line in text.splitlines()), text[-3000:]
                lines = [r for r in records(logs[name]) if (r.get("task_id"), r.get("attempt")) == (TASK[0], attempt)
                         and r["event"] in ("result.sent", "result.unsent")]
                assert len(lines) == 1, lines
                if lines[0]["event"] == "result.unsent":
                    unsent += 1
                    assert lines[0]["level"] == "error" and "refused this worker's key" in lines[0]["reason"]
                    assert finished(name, attempt)["delivered"] is False
            assert unsent >= REVOKED // 2, f"only {unsent} of {REVOKED} results were refused at once"
            assert broker.stats.completed == len(names) + 1  # none of their results was taken

            # retry, as documented: the first revoked worker joins again once its key is back
            back = revoked[0][0]
            for name in names:
                if name != back:
                    procs[name].terminate()
            for name in names:
                if name != back:
                    assert procs[name].wait(timeout=20) == 0, logs[name].read_text()[-3000:]
            (allow / f"{back}.key").write_text((key_dir / f"{back}.key").read_text())
            os.kill(os.getpid(), signal.SIGHUP)
            beats = broker.stats.heartbeats
            broker.submit("revoke-2", "50|10|50", {"epochs": 1})
            (again,) = poll_until(broker, lambda out: out, 30, f"{back} to rejoin and complete a task")
            assert isinstance(again, Done) and again.peer_key == public_keys[back]
            assert broker.stats.resends == REVOKED  # its heartbeats reached the head: no loss
            assert broker.stats.heartbeats > beats
        finally:
            signal.signal(signal.SIGHUP, previous)
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
