"""The operations side: systemd units, bin/install-worker, bin/start-worker, bin/start-search,
bin/local-cluster. Real processes, a real broker on loopback; nothing is mocked.
"""
from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from distributed_helpers import JsonLog, free_port_pair, wait_until

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "deploy" / "systemd"
BIN = REPO / "bin"
EVOVAE = REPO / ".venv" / "bin" / "evovae"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
SCRIPTS = ["install-worker", "start-worker", "start-search", "local-cluster"]

needs_venv = pytest.mark.skipif(not EVOVAE.exists(), reason=f"{EVOVAE} missing: run bin/setup")
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (Debian: apt-get install systemd)")


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read(UNITS / name)
    return parser


def run(*argv, env=None, timeout=60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          env={**ENV, **(env or {})}, stdin=subprocess.DEVNULL, **kw)


def installed(tmp_path: Path, *extra: str) -> Path:
    """bin/install-worker --root TMP (pointing the units at this checkout); returns TMP."""
    root = tmp_path / "root"
    out = run(BIN / "install-worker", "--root", root, "--head", "tcp://head-node:5557", *extra)
    assert out.returncode == 0, out.stderr
    return root


# ------------------------------------------------------------------ scripts: help and errors

@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_strict_bash_with_help(script):
    path = BIN / script
    assert os.access(path, os.X_OK)
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    out = run(path, "--help")
    assert out.returncode == 0 and out.stdout.strip() and out.stderr == ""
    assert "usage" in out.stdout.lower() or f"bin/{script}" in out.stdout
    if shutil.which("shellcheck"):
        check = run("shellcheck", path)
        assert check.returncode == 0, check.stdout


@pytest.mark.parametrize("argv, message", [
    (["install-worker", "--slots", "0", "--root", "R"], "--slots must be a whole number >= 1"),
    (["install-worker", "--gpus", "a,b", "--head", "tcp://h:5557", "--root", "R"], "--gpus takes GPU indexes"),
    (["install-worker", "--gpus", "0", "--root", "R"], "--head is needed"),
    (["install-worker", "--head", "head:5557", "--root", "R"], "--head must look like tcp://HOST:5557"),
    (["install-worker", "--bogus"], "unknown option '--bogus'"),
    (["install-worker", "--key", "/nonexistent/key", "--root", "R"], "cannot read key file /nonexistent/key"),
    (["start-worker"], "missing INSTANCE"),
    (["start-worker", "gpu0"], "bad INSTANCE 'gpu0'"),
    (["start-worker", "0-x"], "bad INSTANCE '0-x'"),
    (["start-worker", "0"], "EVOVAE_HEAD is not set"),
    (["local-cluster", "--workers", "x"], "--workers must be a whole number"),
    (["local-cluster", "--generations", "3"], "unknown option '--generations' (evovae search options go after --"),
])
def test_bad_arguments_are_one_clear_line_and_exit_2(argv, message, tmp_path):
    argv = [str(tmp_path / "root") if a == "R" else a for a in argv]
    env = {k: v for k, v in ENV.items() if not k.startswith("EVOVAE_")}
    out = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, env=env, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


# ------------------------------------------------------------------ the units

def test_worker_unit_settings():
    u = unit("evovae-worker@.service")
    service = u["Service"]
    assert service["ExecStart"] == "/opt/evovae/bin/start-worker %i"
    assert service["EnvironmentFile"] == "/etc/evovae/worker.env"
    assert service["Restart"] == "on-failure" and float(service["RestartSec"]) > 0
    assert service["KillSignal"] == "SIGTERM" and service["TimeoutStopSec"] == "30"
    assert service["User"] == "evovae" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict" and "/var/cache/evovae" in service["ReadWritePaths"]
    assert service["PrivateTmp"] == "yes"
    # what would take the GPUs away from the worker
    for breaks_cuda in ("PrivateDevices", "DeviceAllow", "DevicePolicy", "ProtectClock", "MemoryDenyWriteExecute"):
        assert breaks_cuda not in service, breaks_cuda
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_search_unit_settings():
    service = unit("evovae-search.service")["Service"]
    assert service["ExecStart"] == "/opt/evovae/bin/start-search"
    assert service["EnvironmentFile"] == "/etc/evovae/search.env"
    assert "143" in service["SuccessExitStatus"].split()  # stopped by SIGTERM: 128 + 15
    assert service["RestartPreventExitStatus"] == "2"


def test_env_examples_name_what_the_scripts_read():
    worker = (UNITS / "worker.env.example").read_text()
    search = (UNITS / "search.env.example").read_text()
    start_worker = (BIN / "start-worker").read_text()
    start_search = (BIN / "start-search").read_text()
    for name in set(re.findall(r"^#?(EVOVAE_[A-Z_]+)=", worker, re.M)):
        assert f"${{{name}" in start_worker or f"${name}" in start_worker, name
    for name in set(re.findall(r"^#?(EVOVAE_[A-Z_]+)=", search, re.M)):
        assert f"${{{name}" in start_search or f"${name}" in start_search, name
    assert re.search(r"^EVOVAE_HEAD=tcp://", worker, re.M) and re.search(r"^EVOVAE_BIND=tcp://", search, re.M)


@needs_venv
def test_install_worker_into_a_root(tmp_path):
    root = installed(tmp_path, "--gpus", "0,1", "--slots", "2", "--worker-args", "--heartbeat 0.5", "--search")
    system = root / "etc" / "systemd" / "system"
    wants = sorted(p.name for p in (system / "multi-user.target.wants").iterdir())
    assert wants == [f"evovae-worker@{g}-{s}.service" for g in (0, 1) for s in (0, 1)]
    worker_unit = (system / "evovae-worker@.service").read_text()
    assert f"ExecStart={REPO}/bin/start-worker %i" in worker_unit and "/opt/evovae" not in worker_unit
    env = (root / "etc" / "evovae" / "worker.env").read_text()
    assert re.findall(r"^EVOVAE_HEAD=.*$", env, re.M) == ["EVOVAE_HEAD=tcp://head-node:5557"]
    assert re.findall(r"^EVOVAE_WORKER_ARGS=.*$", env, re.M) == ["EVOVAE_WORKER_ARGS=--heartbeat 0.5"]
    assert (root / "etc" / "evovae" / "search.env").exists()
    assert oct((root / "etc" / "evovae" / "worker.env").stat().st_mode & 0o777) == "0o640"
    # again, with another head and one CPU worker: the env file is updated in place, not duplicated
    out = run(BIN / "install-worker", "--root", root, "--head", "tcp://other:6000", "--gpus", "cpu")
    assert out.returncode == 0, out.stderr
    env = (root / "etc" / "evovae" / "worker.env").read_text()
    assert re.findall(r"^EVOVAE_HEAD=.*$", env, re.M) == ["EVOVAE_HEAD=tcp://other:6000"]
    assert re.findall(r"^EVOVAE_WORKER_ARGS=.*$", env, re.M) == ["EVOVAE_WORKER_ARGS=--heartbeat 0.5"]
    assert (system / "multi-user.target.wants" / "evovae-worker@cpu.service").is_symlink()


@needs_venv
def test_install_worker_copies_keys_private(tmp_path):
    key = tmp_path / "node7.key_secret"
    key.write_text("secret\n")
    server = tmp_path / "server.key"
    server.write_text("public\n")
    root = installed(tmp_path, "--gpus", "0", "--key", str(key), "--server-key", str(server))
    env = (root / "etc" / "evovae" / "worker.env").read_text()
    assert "EVOVAE_KEY=/etc/evovae/keys/node7.key_secret" in env
    assert "EVOVAE_SERVER_KEY=/etc/evovae/keys/server.key" in env
    copied = root / "etc" / "evovae" / "keys" / "node7.key_secret"
    assert copied.read_text() == "secret\n" and oct(copied.stat().st_mode & 0o777) == "0o600"
    # a key made in place (evovae keys generate --dir /etc/evovae/keys) is kept, and made private
    copied.chmod(0o644)
    out = run(BIN / "install-worker", "--root", root, "--gpus", "0", "--key", copied)
    assert out.returncode == 0, out.stderr
    assert copied.read_text() == "secret\n" and oct(copied.stat().st_mode & 0o777) == "0o600"


@needs_analyze
@needs_venv
def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    """systemd-analyze verify on the installed units (ExecStart pointing at this checkout)."""
    root = installed(tmp_path, "--gpus", "0", "--slots", "2", "--search")
    system = root / "etc" / "systemd" / "system"
    for name in ("evovae-worker@0-1.service", "evovae-worker@cpu.service", "evovae-search.service"):
        out = run("systemd-analyze", "verify", f"./{name}", cwd=system)
        assert out.returncode == 0 and out.stderr.strip() == "" and out.stdout.strip() == "", (name, out)


@needs_analyze
@needs_venv
def test_units_are_hardened(tmp_path):
    root = installed(tmp_path, "--gpus", "0")
    system = root / "etc" / "systemd" / "system"
    for name, ceiling in (("evovae-worker@.service", 5.0), ("evovae-search.service", 4.0)):
        out = run("systemd-analyze", "security", "--offline=true", f"./{name}", cwd=system)
        if "--offline" in out.stderr and out.returncode != 0:
            pytest.skip("this systemd-analyze has no security --offline")
        level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
        assert level, out.stdout[-2000:] + out.stderr
        assert float(level.group(1)) <= ceiling, out.stdout[-3000:]


# ------------------------------------------------------------------ a worker under SIGTERM, mid-task

def _poll_broker(broker, found, timeout: float, what: str, log: Path):
    """Drive ``broker`` until ``found(outcomes of the last poll)`` is truthy; returns it."""
    return wait_until(lambda: found(broker.poll(0.05)), timeout, what, interval=0,
                      fail=lambda: log.read_text()[-2000:])


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


@pytest.mark.slow
@needs_venv
def test_worker_stops_fast_on_sigterm_and_its_task_is_resent(tmp_path):
    from evo.spec import TrainSpec
    from transport.broker import Broker, Done

    timeout_stop = float(unit("evovae-worker@.service")["Service"]["TimeoutStopSec"])
    port = free_port_pair()
    logs = []

    def start_worker(instance: str, *args: str) -> subprocess.Popen:
        log = tmp_path / f"worker-{instance}.log"
        logs.append(log)
        env = {**ENV, "EVOVAE_HEAD": f"tcp://127.0.0.1:{port}", "EVOVAE_WORKER_ARGS": "--heartbeat 0.2"}
        with open(log, "wb") as err:
            return subprocess.Popen([str(BIN / "start-worker"), instance, *args], env=env, stderr=err,
                                    stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)

    procs = []
    with Broker(f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}", heartbeat_s=0.2, liveness=3) as broker:
        try:
            slow = start_worker("3-1", "--fake", "--fake-sleep", "60")
            procs.append(slow)
            broker.submit("t" * 24, "850|20|1000", TrainSpec(dataset="synthetic", epochs=1).to_dict())
            busy = _poll_broker(broker, lambda _: next(
                (wid for wid, w in broker.workers().items() if w["state"] == "busy"), None),
                30, "a busy worker", logs[0])
            # exec'd: the systemd main process is the worker itself, on the instance's GPU, with a stable id
            env = _environ(slow.pid)
            assert env["CUDA_VISIBLE_DEVICES"] == "3"
            assert busy.endswith("-g3-1"), busy
            _poll_broker(broker, lambda _: broker.stats.heartbeats >= 2, 10, "two heartbeats of the task", logs[0])
            started = time.monotonic()  # mid-task: SIGTERM now
            slow.send_signal(signal.SIGTERM)
            rc = slow.wait(timeout=timeout_stop)
            took = time.monotonic() - started
            assert rc == 0, logs[0].read_text()[-2000:]
            assert took < 5.0, f"took {took:.2f} s to stop"
            events = [json.loads(line)["event"] for line in logs[0].read_text().splitlines() if line.startswith("{")]
            assert "task.abandoned" in events and {"worker.stopped", "worker.signal"} <= set(events)
            # the head re-sends the abandoned task; another worker finishes it
            fast = start_worker("cpu", "--fake", "--fake-sleep", "0.05")
            procs.append(fast)
            done = _poll_broker(broker, lambda outcomes: outcomes, 30, "the re-sent task's outcome", logs[-1])
            assert isinstance(done[0], Done), logs[-1].read_text()[-2000:]
            assert done[0].result.attempt == 2 and done[0].result.ok
            assert _environ(fast.pid)["CUDA_VISIBLE_DEVICES"] == ""
            assert broker.stats.resends == 1
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


# ------------------------------------------------------------------ bin/start-search, bin/local-cluster

@pytest.mark.slow
@needs_venv
def test_start_search_runs_and_resumes_its_run_directory(tmp_path):
    """The head unit's wrapper: a search into EVOVAE_RUN_DIR, and again: resumed, not re-run."""
    help_text = run(EVOVAE, "search", "--help").stdout
    if "--resume" not in help_text:
        pytest.skip("this evovae has no --run-dir/--resume")
    run_dir = tmp_path / "runs" / "search-1"
    logs = []
    for generations, want in ((2, 8), (3, 12)):
        port = free_port_pair()
        env = {"EVOVAE_BIND": f"tcp://127.0.0.1:{port}", "EVOVAE_RUN_DIR": str(run_dir), "EVOVAE_SEARCH_ARGS":
               # generational: the resume below is checked generation by generation
               f"--mode generational --population 4 --offspring 4 --generations {generations} --local-workers 1 "
               "--worker-arg=--fake"}
        out = run(BIN / "start-search", env=env, cwd=tmp_path, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr[-3000:]
        # JSON logs on stderr; besides them only the CLI's own notes (on resume: the options the journal fixes)
        lines = out.stderr.splitlines()
        assert all(json.loads(line)["event"] for line in lines if not line.startswith("evovae: note: ")), lines[:5]
        assert any(line.startswith("{") for line in lines)
        result = json.loads((run_dir / "result.json").read_text())
        assert len(result["evaluations"]) == want
        logs.append(tmp_path / f"head-{generations}.log")
        logs[-1].write_text(out.stderr)
    assert "resuming the search journaled in" in out.stdout
    # the two heads' logs read as one search: each generation once, each evaluation paid for once
    from evo.logs import read_logs, summarize

    summary = summarize(read_logs([str(p) for p in logs]))
    assert summary["head"]["runs"] == 2 and summary["head"]["resumed"] == 1
    assert summary["evaluations"] == len(result["evaluations"]) == 12
    assert [(g["generation"], g["best_loss"]) for g in summary["generations"]] == [
        (g["generation"], g["best_loss"]) for g in result["generations"]]


def _kill_strays(pids: list[int]) -> None:
    """SIGKILL those of ``pids`` that are still evovae processes (each child has a session of its own)."""
    for pid in pids:
        try:
            if b"evovae" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass


def _local_cluster(tmp_path: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "local-cluster"), *args], cwd=tmp_path, env=ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


@pytest.mark.slow
@needs_venv
def test_local_cluster_runs_a_tiny_search_to_the_end(tmp_path):
    logs = tmp_path / "cluster"
    proc = _local_cluster(tmp_path, "--fake", "--fake-sleep", "0.05", "--workers", "2",
                          "--port", str(free_port_pair()), "--heartbeat", "0.2", "--log-dir", str(logs),
                          "--", "--mode", "generational", "--population", "4", "--offspring", "4", "--generations",
                          "2")
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            children = [int(p) for p in run("pgrep", "-P", proc.pid).stdout.split()]
            os.killpg(proc.pid, signal.SIGKILL)
            _kill_strays(children)
    assert proc.returncode == 0, stdout + stderr
    assert sorted(p.name for p in logs.glob("*.log")) == ["head.log", "worker-0.log", "worker-1.log"]
    result = json.loads((logs / "result.json").read_text())
    assert len(result["evaluations"]) == 8
    assert "evovae log summary" in stdout and "evaluations 8 (failed 0)" in stdout
    assert "local-cluster-0" in stdout and "local-cluster-1" in stdout  # per-worker lines


@pytest.mark.slow
@needs_venv
def test_local_cluster_stops_everything_on_ctrl_c(tmp_path):
    logs = tmp_path / "cluster"
    # with SIGINT at its default, as a terminal's foreground job has it: a test run started in the background
    # of a non-interactive shell inherits SIGINT ignored, and a shell script cannot trap a signal ignored on entry
    proc = _local_cluster(tmp_path, "--fake", "--fake-sleep", "30", "--workers", "2",
                          "--port", str(free_port_pair()), "--log-dir", str(logs),
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    members: list[int] = []
    try:
        head_log = JsonLog(logs / "head.log")
        wait_until(lambda: len(head_log.events("task.dispatched")) >= 2, 30, "a task dispatched to each worker",
                   fail=head_log.tail)
        members = [int(p) for p in run("pgrep", "-P", proc.pid).stdout.split()]
        assert len(members) == 3, members  # the head and two workers, children of the script
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: its foreground process group
        _stdout, stderr = proc.communicate(timeout=20)
        took = time.monotonic() - started
        assert proc.returncode == 130 and took < 10, (took, stderr, (logs / "head.log").read_text()[-1500:])
        left = [pid for pid in members if Path(f"/proc/{pid}").exists()
                and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
        assert left == [], left
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _kill_strays(members)
