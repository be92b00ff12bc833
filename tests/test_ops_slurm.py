"""SLURM: bin/slurm-workers and deploy/slurm/evovae-workers.sbatch. The generated batch script's commands run
against a live head (CURVE, fake training) with the variables SLURM would set - always; and the job array is
submitted to a real SLURM (slurmctld + slurmd + munge) where one answers on this machine - skipped, saying why,
where none does (CI). Real processes, nothing mocked."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from distributed_helpers import Cluster, assert_search_complete, wait_until

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "bin" / "slurm-workers"
TEMPLATE = REPO / "deploy" / "slurm" / "evovae-workers.sbatch"
EVOVAE = REPO / ".venv" / "bin" / "evovae"
MARKER = "# ---- evovae-workers: the commands"
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("EVOVAE_", "SLURM_"))} | {"OMP_NUM_THREADS": "1"}
FAKE = "--fake --fake-sleep 0.05 --heartbeat 0.2"

needs_venv = pytest.mark.skipif(not EVOVAE.exists(), reason=f"{EVOVAE} missing: run bin/setup")


def launcher(*argv, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(LAUNCHER), *map(str, argv)], capture_output=True, text=True, cwd=cwd, env=ENV,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def keys(directory: Path) -> dict[str, Path]:
    """A head key pair and the workers' key pair, the workers' public key in an allow-list directory."""
    for name in ("head", "slurm"):
        done = subprocess.run([str(EVOVAE), "keys", "generate", "--dir", str(directory / "keys"), name],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    allow = directory / "allow"
    allow.mkdir()
    shutil.copy(directory / "keys" / "slurm.key", allow)
    return {"head_secret": directory / "keys" / "head.key_secret", "allow": allow,
            "server_key": directory / "keys" / "head.key", "key": directory / "keys" / "slurm.key_secret"}


def curve_head(cluster: Cluster, k: dict[str, Path], *search: str):
    return cluster.head("--server-key-secret", str(k["head_secret"]), "--allow", str(k["allow"]), "--population",
                        "4", "--offspring", "4", "--epochs", "1", *search)


def dispatched_to(head) -> set[str]:
    """The ids of the workers the head handed tasks to."""
    return {r["worker_id"] for r in head.events("task.dispatched")}


# ------------------------------------------------------------------ the launcher: help, errors, the script

def test_launcher_and_template_are_strict_bash_with_help(tmp_path):
    for path in (LAUNCHER, TEMPLATE):
        text = path.read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
        if shutil.which("shellcheck"):
            check = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout
    assert os.access(LAUNCHER, os.X_OK)
    out = launcher("--help", cwd=tmp_path)
    assert out.returncode == 0 and "bin/slurm-workers --head" in out.stdout and out.stderr == ""
    assert TEMPLATE.read_text().count(MARKER) == 1


@pytest.mark.parametrize("argv, message", [
    ([], "--head is needed"),
    (["--head", "head:5557"], "--head must look like tcp://HOST:5557"),
    (["--head", "tcp://h:5557", "--workers", "0"], "--workers must be a whole number >= 1, got '0'"),
    (["--head", "tcp://h:5557", "--gpus-per-task", "x"], "--gpus-per-task must be a whole number >= 0"),
    (["--head", "tcp://h:5557", "--slots", "0"], "--slots must be a whole number >= 1"),
    (["--head", "tcp://h:5557", "--gpus-per-task", "0", "--gpu-type", "a100"], "--gpu-type needs --gpus-per-task"),
    (["--head", "tcp://h:5557", "--partition", "a b"], "--partition must be one word"),
    (["--head", "tcp://h:5557", "--key", "/nonexistent"], "--key needs --server-key FILE"),
    (["--head", "tcp://h:5557", "--server-key", "/nonexistent/k", "--key", "/nonexistent/s"],
     "cannot read key file /nonexistent/k"),
    (["--head", "tcp://h:5557", "--insecure", "--server-key", "k", "--key", "s"], "exclude each other"),
    (["--head", "tcp://h:5557", "--data-root", "/nonexistent"], "--data-root /nonexistent: no such directory"),
    (["--head", "tcp://h:5557", "--evovae", "/nonexistent/evovae"], "/nonexistent/evovae is not an executable"),
    (["--head", "tcp://h:5557", "--sbatch-option", "exclusive"], "--sbatch-option takes one sbatch option"),
    (["--head", "tcp://h:5557", "--dry-run=1"], "--dry-run takes no value"),
    (["--bogus"], "unknown option '--bogus'"),
])
def test_bad_arguments_are_one_clear_line_and_exit_2(tmp_path, argv, message):
    out = launcher(*argv, cwd=tmp_path)
    assert out.returncode == 2, out
    errors = [line for line in out.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and message in errors[0], out.stderr
    assert not (tmp_path / "slurm-logs").exists()


def test_a_secret_key_readable_by_others_is_refused(tmp_path):
    (tmp_path / "head.key").write_text("x")
    secret = tmp_path / "w.key_secret"
    secret.write_text("x")
    secret.chmod(0o644)
    out = launcher("--head", "tcp://h:5557", "--server-key", "head.key", "--key", secret, "--dry-run", cwd=tmp_path)
    assert out.returncode == 2 and "is readable by others (mode 644): chmod 600" in out.stderr


def test_the_generated_script_asks_slurm_for_what_was_given(tmp_path):
    k = {"server_key": tmp_path / "head.key", "key": tmp_path / "w.key_secret"}
    for path in k.values():
        path.write_text("x")
        path.chmod(0o600)
    (tmp_path / "data root").mkdir()
    script = tmp_path / "w.sbatch"
    out = launcher("--head", "tcp://head-node:5557", "--workers", "8", "--max-running", "3", "--gpus-per-task", "2",
                   "--gpu-type", "a100", "--slots", "2", "--time", "12:00:00", "--mem", "16G", "--partition", "gpu",
                   "--account", "proj1", "--server-key", "head.key", "--key", "w.key_secret",
                   "--data-root", "data root", "--worker-args", "--dataset /shared/penguins.csv --threads 3",
                   "--sbatch-option=--exclude=node7", "--script", script, "--dry-run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = script.read_text()
    assert out.stdout == text and os.access(script, os.X_OK)
    directives = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --job-name=evovae-workers", "#SBATCH --array=0-7%3", "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=8",  # 2 per worker: 2 GPUs x 2 slots
        "#SBATCH --gres=gpu:a100:2", "#SBATCH --mem=16G", "#SBATCH --time=12:00:00", "#SBATCH --partition=gpu",
        "#SBATCH --account=proj1", "#SBATCH --signal=B:TERM@60",
        f"#SBATCH --output={tmp_path}/slurm-logs/evovae-workers-%A_%a.out", "#SBATCH --exclude=node7"]
    # every #SBATCH line before the first command (sbatch reads no further)
    first_command = next(i for i, line in enumerate(text.splitlines()) if line and not line.startswith("#"))
    assert all(text.splitlines().index(d) < first_command for d in directives)
    settings = dict(re.findall(r"^export (EVOVAE_\w+)=(.*)$", text, re.M))
    assert settings["EVOVAE_HEAD"] == "tcp://head-node:5557"
    assert settings["EVOVAE_SERVER_KEY"] == str(tmp_path / "head.key")  # absolute: the nodes' cwd differs
    assert settings["EVOVAE_KEY"] == str(tmp_path / "w.key_secret")
    assert settings["EVOVAE_GPUS_PER_TASK"] == "2" and settings["EVOVAE_SLOTS"] == "2"
    assert settings["EVOVAE_BIN"] == str(EVOVAE)
    for name, value in (("EVOVAE_DATA_ROOT", str(tmp_path / "data root")),
                        ("EVOVAE_WORKER_ARGS", "--dataset /shared/penguins.csv --threads 3")):
        shell = subprocess.run(["bash", "-c", f"printf %s {settings[name]}"], capture_output=True, text=True)
        assert shell.stdout == value  # quoted for the shell
    # the commands are the template's, unchanged
    body = TEMPLATE.read_text().split(MARKER, 1)[1]
    assert text.endswith(body) and text.count(MARKER) == 1


# ------------------------------------------------------------------ the script's commands against a live head

@pytest.mark.slow
@needs_venv
def test_the_generated_script_serves_a_live_head_as_a_slurm_task_would(tmp_path):
    """The script bin/slurm-workers writes, run with what SLURM sets in an array task (job and task ids, the
    task's CPUs, CUDA_VISIBLE_DEVICES for --gres=gpu:2): two CURVE workers, one per GPU, serve a search to its
    end; scancel's SIGTERM stops both and the task exits 0."""
    k = keys(tmp_path)
    cluster = Cluster(tmp_path)
    task = None
    try:
        head = curve_head(cluster, k, "--generations", "3")
        script = tmp_path / "w.sbatch"
        out = launcher("--head", f"tcp://127.0.0.1:{head.port}", "--gpus-per-task", "2", "--server-key",
                       k["server_key"], "--key", k["key"], "--worker-args", FAKE, "--script", script, "--dry-run",
                       cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        slurm = {"SLURM_JOB_ID": "42", "SLURM_ARRAY_JOB_ID": "41", "SLURM_ARRAY_TASK_ID": "3",
                 "SLURM_CPUS_PER_TASK": "4", "CUDA_VISIBLE_DEVICES": "5,7"}
        log = tmp_path / "task.out"
        with open(log, "wb") as fh:
            task = subprocess.Popen(["bash", str(script)], env={**ENV, **slurm}, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)
        result = assert_search_complete(head, expect_fake_losses=False)  # fake losses of 1 epoch
        assert len(result["evaluations"]) == 12
        host = re.sub(r"[^A-Za-z0-9_.:-]", "_", subprocess.run(["hostname", "-s"], capture_output=True,
                                                                 text=True).stdout.strip())
        ids = {f"{host}-j41_3-g0-0", f"{host}-j41_3-g1-0"}
        assert dispatched_to(head) == ids, (dispatched_to(head), log.read_text()[-2000:])
        workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(task.pid)], capture_output=True,
                                                  text=True).stdout.split()]
        assert len(workers) == 2
        environs = [dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().decode()
                         .split("\0") if "=" in item) for pid in workers]
        assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in environs) == ["5", "7"]  # one GPU each
        argv = Path(f"/proc/{workers[0]}/cmdline").read_bytes().decode().split("\0")
        assert "--threads" in argv and argv[argv.index("--threads") + 1] == "2"  # 4 CPUs for 2 workers
        assert "--server-key" in argv and "--fake" in argv
        task.send_signal(signal.SIGTERM)  # what scancel (or the time limit's --signal=B:TERM) sends
        assert task.wait(timeout=15) == 0, log.read_text()[-2000:]
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
        events = [json.loads(line)["event"] for line in log.read_text().splitlines() if line.startswith("{")]
        assert events.count("worker.stopped") == 2 and events.count("auth.enabled") == 2
    finally:
        if task is not None and task.poll() is None:
            os.killpg(task.pid, signal.SIGKILL)
            task.wait(10)
        cluster.close()


@needs_venv
def test_a_task_without_the_gpus_it_asked_for_exits_2_in_one_line(tmp_path):
    out = launcher("--head", "tcp://127.0.0.1:5557", "--insecure", "--script", tmp_path / "w.sbatch", "--dry-run",
                   cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    done = subprocess.run(["bash", str(tmp_path / "w.sbatch")], env={**ENV, "SLURM_ARRAY_TASK_ID": "0"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "this task was given no GPU (CUDA_VISIBLE_DEVICES is empty)" in done.stderr


# ------------------------------------------------------------------ a real SLURM, where one runs here

def _slurm_here() -> str:
    """Why a real SLURM cannot be used here ("" when it can)."""
    if shutil.which("sbatch") is None:
        return "sbatch not installed (Debian: apt-get install slurm-wlm munge, then slurmctld and slurmd)"
    try:
        info = subprocess.run(["sinfo", "-h", "-o", "%a %T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    states = info.stdout.split()
    if info.returncode != 0 or "up" not in states[::2]:
        return f"no SLURM controller answers (sinfo: {(info.stderr or info.stdout).strip()[:200]})"
    if not any(state.startswith(("idle", "mix", "alloc")) for state in states[1::2]):
        return f"no usable SLURM node (sinfo: {info.stdout.strip()[:200]})"
    return ""


@pytest.mark.slow
@needs_venv
@pytest.mark.skipif(bool(_slurm_here()), reason=_slurm_here() or "-")
def test_a_real_slurm_job_array_serves_a_live_head(tmp_path):
    """bin/slurm-workers submits a 2-task array to the SLURM on this machine; its CURVE workers connect to a
    live head and serve the search to its end; scancel stops them."""
    k = keys(tmp_path)
    cluster = Cluster(tmp_path)
    job = None
    try:
        head = curve_head(cluster, k, "--generations", "4")
        out = launcher("--head", f"tcp://127.0.0.1:{head.port}", "--workers", "2", "--gpus-per-task", "0",
                       "--cpus-per-task", "1", "--mem", "300M", "--time", "00:10:00", "--server-key",
                       k["server_key"], "--key", k["key"], "--worker-args", FAKE, "--job-name", "evovae-test",
                       cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        job = re.search(r"submitted job array (\d+)", out.stdout).group(1)
        logs = tmp_path / "slurm-logs"
        wait_until(lambda: not head.alive(), 240, "the search to end", fail=head.describe)
        result = assert_search_complete(head, expect_fake_losses=False)  # fake losses of 1 epoch
        assert len(result["evaluations"]) == 16
        served = dispatched_to(head)
        assert {wid.split("-j", 1)[1] for wid in served} == {f"{job}_0-cpu-0", f"{job}_1-cpu-0"}, served
    finally:
        if job is not None:
            subprocess.run(["scancel", job], capture_output=True, timeout=30)
        cluster.close()

    def gone() -> bool:
        queue = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, timeout=20)
        return queue.stdout.strip() == ""

    wait_until(gone, 60, f"job {job} to leave the queue after scancel")
    outputs = sorted(logs.glob(f"evovae-test-{job}_*.out"))
    assert [p.name for p in outputs] == [f"evovae-test-{job}_0.out", f"evovae-test-{job}_1.out"]
    for path in outputs:
        wait_until(lambda path=path: '"worker.stopped"' in path.read_text(), 30, f"worker.stopped in {path.name}")
        events = [json.loads(line)["event"] for line in path.read_text().splitlines() if line.startswith("{")]
        assert "task.received" in events and "worker.signal" in events, path.read_text()[-1500:]
