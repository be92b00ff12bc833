"""SIGTERM after SIGTERM never hangs a command (evo/cmdline/signals.py). Found with SLURM: scancel sends SIGTERM
to every process of a job and the batch script forwards its own to the workers, so a worker gets two at once;
a handler that called ``Event.set`` could then wait forever for the event's lock, held by the same thread (the
first handler's ``set``, or the main loop's ``stop.event.wait``), until SLURM's SIGKILL 30 s later. The handler
now takes no lock: a relay thread sets the event."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: a command's shape: a loop that waits on the stop event (as the fake evaluator and the head do)
CHILD = f"""
import signal, sys, time
sys.path.insert(0, {str(REPO)!r})
from evo.cmdline.signals import stop_signals
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # what the block puts back: the burst's tail does no harm
with stop_signals() as stop:
    print("ready", flush=True)
    while not stop.event.wait(0.0001):
        pass
    time.sleep(0.2)  # more signals while still inside the block
print("stopped", stop.name, flush=True)
"""


@pytest.mark.slow
def test_a_burst_of_sigterms_stops_a_process_that_waits_on_the_stop_event():
    for _ in range(12):
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline() == "ready\n"
            end = time.monotonic() + 0.3
            while time.monotonic() < end and child.poll() is None:
                try:
                    os.kill(child.pid, signal.SIGTERM)
                except ProcessLookupError:
                    break
                time.sleep(0.00005)
            assert child.wait(10) == 0  # the old handler hung here now and then
            assert child.stdout.read() == "stopped SIGTERM\n"
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
