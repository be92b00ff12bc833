"""Helpers for the end-to-end failure tests of the distributed search.

Real processes only: a head is ``python -m evo.cli search`` and a worker is
``python -m gpuworker``, each started in a session (process group) of its own
so that cleanup can kill it together with whatever it started (a head's local
workers), even after the head itself was killed with SIGKILL. Every wait here
has a deadline. Nothing is mocked.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

#: Short timing so failures are noticed fast: a busy worker silent for
#: HEARTBEAT * LIVENESS = 0.6 s loses its task.
HEARTBEAT = "0.2"
LIVENESS = "3"

#: What a wait for a process's output returns when the process exited first.
_EXITED = object()


# ------------------------------------------------------------------ ports, pids, time

def free_port_pair(host: str = "127.0.0.1", tries: int = 200) -> int:
    """A port P such that P and P + 1 are both free on ``host`` right now."""
    for _ in range(tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind((host, 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
                try:
                    second.bind((host, port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports found")


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02,
               fail: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"\n{fail()}" if fail else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(interval)


def log_time(record: dict) -> float:
    """A log line's ISO UTC timestamp as a Unix time."""
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------ logs

class JsonLog:
    """The JSON lines a process writes to a file (its stderr), re-read on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        try:
            return self.path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def records(self) -> list[dict]:
        out = []
        for line in self.text().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:  # a half-written last line
                continue
            if isinstance(record, dict) and "event" in record:
                out.append(record)
        return out

    def events(self, event: str | None = None, role: str | None = None, **fields: Any) -> list[dict]:
        return [r for r in self.records()
                if (event is None or r.get("event") == event)
                and (role is None or r.get("role") == role)
                and all(r.get(k) == v for k, v in fields.items())]

    def unparsable_lines(self) -> list[str]:
        """Lines that are not one JSON object each (e.g. two log lines interleaved)."""
        bad = []
        for line in self.text().splitlines():
            try:
                ok = isinstance(json.loads(line), dict)
            except ValueError:
                ok = False
            if not ok:
                bad.append(line)
        return bad

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


class Process:
    """A child process with its stdout and stderr in files."""

    def __init__(self, name: str, argv: list[str], directory: Path, env: dict | None = None) -> None:
        self.name = name
        self.argv = argv
        self.stdout_path = directory / f"{name}.stdout"
        self.stderr_path = directory / f"{name}.stderr"
        # PYTHONUNBUFFERED only where a test asks for it (one does: see
        # test_head_json_log_stays_parseable_when_python_is_unbuffered)
        environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        environment.update({"OMP_NUM_THREADS": "1", **(env or {})})
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # cwd: the test's own directory, so whatever a process writes relative to it
            # (a head's runs/ directory) stays out of the repository
            self.popen = subprocess.Popen(argv, cwd=directory, env=environment, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=err, start_new_session=True)
        self.pid = self.popen.pid
        self.log = JsonLog(self.stderr_path)

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} (pid {self.pid}) still running after {timeout} s\n"
                                 f"--- stdout\n{self.stdout()[-3000:]}\n--- stderr\n{self.log.tail()}") from None

    def stdout(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        return (f"{self.name} pid {self.pid} rc {self.returncode}\n--- stdout\n{self.stdout()[-3000:]}"
                f"\n--- stderr (last lines)\n{self.log.tail()}")

    def kill_group(self) -> None:
        """SIGKILL the process and its session (its local workers), reap it."""
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class Head(Process):
    """``evovae search`` on 127.0.0.1:PORT (ventilator) and PORT + 1 (sink)."""

    def __init__(self, name: str, port: int, args: Iterable[str], directory: Path, env: dict | None = None) -> None:
        self.port = port
        self.output = directory / f"{name}.json"
        args = list(args)
        if not {"--strategy", "--mode", "--resume"} & {a.split("=")[0] for a in args}:
            # these tests count tasks and resends: they pin the generational schedule (each genotype trained
            # once, the same decisions whatever order results arrive in), not evovae search's default
            args += ["--mode", "generational"]
        argv = [PYTHON, "-m", "evo.cli", "search", "--log-format", "json", "--heartbeat", HEARTBEAT,
                "--liveness", LIVENESS, "--bind", f"tcp://127.0.0.1:{port}",
                "--sink-bind", f"tcp://127.0.0.1:{port + 1}", "--output", str(self.output), *args]
        super().__init__(name, argv, directory, env)

    def endpoints_line(self, timeout: float = 20.0) -> str | None:
        """The stdout line "ventilator tcp://... sink tcp://...", once printed (the head's
        first line, or the first after its "run directory" line); None if the head exited
        without printing it."""
        def printed() -> str | object | None:
            alive = self.alive()  # before reading: a line printed just before exiting is still seen
            for line in self.stdout().splitlines(keepends=True)[:3]:
                if line.startswith("ventilator ") and line.endswith("\n"):
                    return line.rstrip("\n")
            return None if alive else _EXITED

        found = wait_until(printed, timeout, f"{self.name}'s endpoints line", fail=self.describe)
        return None if found is _EXITED else found

    def events(self, event: str | None = None, **fields: Any) -> list[dict]:
        """The head's own log lines (its local workers log to the same stderr, role=worker)."""
        return self.log.events(event, role="search", **fields)

    def wait_event(self, event: str, timeout: float, count: int = 1, **fields: Any) -> list[dict]:
        return wait_until(lambda: (lambda found: found if len(found) >= count else None)(self.events(event, **fields)),
                          timeout, f"{count} x {event} {fields or ''} in {self.name}'s log", fail=self.describe)

    def result(self) -> dict:
        assert self.output.exists(), f"{self.name} wrote no --output\n{self.describe()}"
        return json.loads(self.output.read_text())

    def progress_lines(self) -> list[str]:
        return [line for line in self.stdout().splitlines() if line.startswith("gen ")]

    def duplicate_results_reported(self) -> int:
        """The largest 'duplicate-results N' on the progress lines (0 if none)."""
        counts = [int(m.group(1)) for line in self.progress_lines()
                  for m in [re.search(r"duplicate-results (\d+)", line)] if m]
        return max(counts, default=0)

    def local_worker_pids(self) -> list[int]:
        return [e["pid"] for e in self.events("local_worker.started")]

    def closed_stats(self) -> dict:
        closed = self.events("broker.closed")
        assert closed, f"{self.name} logged no broker.closed\n{self.describe()}"
        return closed[-1]


class Cluster:
    """Starts heads and workers for one test; :meth:`close` kills whatever is left."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[Process] = []

    def head(self, *args: str, port: int | None = None, name: str | None = None, retries: int = 5,
             env: dict | None = None) -> Head:
        """Start a head and wait for its endpoints line. With ``port=None`` a free pair is
        picked (and picked again if someone else took it before the head could bind)."""
        for _ in range(retries):
            chosen = free_port_pair() if port is None else port
            head = Head(name or f"head{len(self.processes)}", chosen, args, self.directory, env)
            self.processes.append(head)
            line = head.endpoints_line()
            if line is not None:
                assert line.startswith(f"ventilator tcp://127.0.0.1:{chosen}  sink tcp://127.0.0.1:{chosen + 1}"), line
                return head
            head.wait(10)
            if port is not None or "cannot bind" not in head.log.text():
                raise AssertionError(f"head did not start\n{head.describe()}")
        raise AssertionError("could not bind a head after several port pairs")

    def worker(self, port: int, *args: str, worker_id: str, name: str | None = None) -> Process:
        """A fake-or-real ``python -m gpuworker`` connected to 127.0.0.1:PORT / PORT + 1."""
        argv = [PYTHON, "-m", "gpuworker", "--connect", f"tcp://127.0.0.1:{port}",
                "--sink", f"tcp://127.0.0.1:{port + 1}", "--worker-id", worker_id, "--heartbeat", HEARTBEAT,
                "--log-format", "json", *args]
        proc = Process(name or worker_id, argv, self.directory)
        proc.worker_id = worker_id
        self.processes.append(proc)
        return proc

    def script(self, name: str, path: Path, *args: str) -> Process:
        proc = Process(name, [PYTHON, str(path), *args], self.directory)
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            proc.kill_group()
        # local workers of a head killed with SIGKILL are in its process group (killed
        # above); make sure none survived anyway
        for proc in self.processes:
            if isinstance(proc, Head):
                for pid in proc.local_worker_pids():
                    if pid_alive(pid):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass


# ------------------------------------------------------------------ what a finished search must show

def busy_task(worker: Process) -> dict | None:
    """The task.received record of the task this worker is working on now, if any."""
    records = worker.log.records()
    received = [r for r in records if r.get("event") == "task.received"]
    if not received:
        return None
    last = received[-1]
    finished = [r for r in records if r.get("event") in ("result.sent", "task.finished", "task.abandoned")
                and r.get("task_id") == last["task_id"] and r.get("attempt") == last["attempt"]]
    return None if finished else last


def assert_search_complete(head: Head, *, expect_fake_losses: bool = True, allow_failed: Iterable[str] = ()) -> dict:
    """The search ended (exit 0) and its --output is consistent: every genotype has exactly
    one evaluation, the count matches the per-generation reports, every result was applied
    once. Returns the parsed output."""
    from evo.genotype import parse_genotype
    from gpuworker.evaluators import fake_loss

    rc = head.wait(60)
    assert rc == 0, head.describe()
    assert head.log.unparsable_lines() == [], "the head's --log-format json stderr is not JSON lines"
    result = head.result()
    evaluations = result["evaluations"]
    genotypes = [e["genotype"] for e in evaluations]
    assert len(genotypes) == len(set(genotypes)), f"a genotype was evaluated twice: {genotypes}"
    assert len(evaluations) == sum(g["evaluated"] for g in result["generations"]), result["generations"]
    assert len(evaluations) == result["generations"][-1]["evaluated"] + sum(
        g["evaluated"] for g in result["generations"][:-1])
    allowed = set(allow_failed)
    for e in evaluations:
        if e["genotype"] in allowed:
            continue
        assert e["error"] == "" and e["loss"] is not None, e
        assert abs(e["fitness"] - 1.0 / e["loss"]) < 1e-12, e
        if expect_fake_losses:
            assert abs(e["loss"] - fake_loss(parse_genotype(e["genotype"]))) < 1e-9, e
    population = {p["genotype"] for p in result["population"]}
    assert population <= set(genotypes)
    # exactly-once accounting on the head: one accepted result per task, one per evaluation
    accepted = head.events("result.accepted")
    ids = [a["task_id"] for a in accepted]
    assert len(ids) == len(set(ids)), "a task's result was applied twice"
    failed = head.events("task.failed")
    assert len(accepted) + len(failed) == len(evaluations), (len(accepted), len(failed), len(evaluations))
    completed = head.events("task.completed")
    assert sorted(c["genotype"] for c in completed) == sorted(g for g in genotypes if g not in allowed)
    return result
