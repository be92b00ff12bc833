"""The example worker in docs/protocol.md, run against a real Broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transport.broker import Broker, Done

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def _example_worker() -> str:
    text = DOC.read_text()
    section = text.split("## A minimal worker in Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_docs_example_worker_completes_tasks(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_example_worker())
    with Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=1.0) as broker:
        env = {**os.environ, "EVOVAE_VENTILATOR": broker.ventilator_endpoint, "EVOVAE_SINK": broker.sink_endpoint}
        proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True)
        try:
            broker.submit("doc-1", "850|20|1000", {"epochs": 2})
            broker.submit("doc-2", "200,500|20|1000,650,50", {"epochs": 2})
            outcomes: list = []
            deadline = time.monotonic() + 20
            while len(outcomes) < 2 and time.monotonic() < deadline and proc.poll() is None:
                outcomes += broker.poll(0.1)
            assert proc.poll() is None, proc.stderr.read()
            assert sorted(o.task_id for o in outcomes) == ["doc-1", "doc-2"]
            assert all(isinstance(o, Done) and o.result.metrics == {"loss": 242.9} for o in outcomes)
            assert broker.stats.bad_frames == 0 and broker.stats.heartbeats >= 2
        finally:
            proc.kill()
            proc.wait(timeout=10)
