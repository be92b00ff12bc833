"""The one cluster builder (evo.head.cluster), its command-line options (evo.cli.distribution) and the
signal helper (evo.cmdline.signals): real sockets, real worker processes, real signals."""
from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

import pytest

from distributed_helpers import free_port_pair, pid_alive, wait_until
from evo.cli.distribution import add_distribution_options, cluster_options
from evo.cmdline.signals import stop_signals
from evo.genotype import parse_genotype
from evo.head.cluster import Cluster, ClusterError, ClusterOptions, available_cores, cores_per_worker
from evo.head.runner import Runner
from evo.spec import TrainSpec
from gpuworker.evaluators import fake_loss
from transport.keyfiles import generate

SPEC = TrainSpec(dataset="synthetic", epochs=1)
GENOTYPES = [parse_genotype(t) for t in ("50|10|50", "100|20|100", "150,50|10|200")]


def _parse(argv, **kwargs):
    parser = argparse.ArgumentParser()
    add_distribution_options(parser, **kwargs)
    return parser.parse_args(argv)


# ------------------------------------------------------------------ options, fast

def test_the_options_are_the_flags_of_search_with_their_defaults():
    options = cluster_options(_parse([]))
    assert options == ClusterOptions()
    assert (options.bind, options.sink, options.heartbeat, options.liveness, options.lease, options.max_attempts,
            options.local_workers) == ("tcp://127.0.0.1:5557", "tcp://127.0.0.1:5558", 1.0, 3, 3600.0, 3, 0)
    args = _parse(["--bind", "tcp://*:6001", "--sink-bind", "tcp://*:7001", "--local-workers", "0",
                   "--worker-arg=--fake", "--worker-arg=--fake-sleep=0.1", "--server-key-secret", "h.key_secret",
                   "--allow", "keys", "--heartbeat", "0.5", "--liveness", "4", "--lease", "60", "--max-attempts", "2"])
    args.threads, args.data_root, args.device, args.download, args.log_level = 2, "/data", "cpu", True, "debug"
    o = cluster_options(args)
    assert (o.sink, o.worker_args, o.server_key_secret, o.allow, o.threads) == (
        "tcp://*:7001", ("--fake", "--fake-sleep=0.1"), "h.key_secret", "keys", 2)
    assert o.local_worker_args(("--key", "k")) == [
        "--fake", "--fake-sleep=0.1", "--key", "k", "--heartbeat", "0.5", "--log-format", "json", "--log-level",
        "debug", "--data-root", "/data", "--device", "cpu", "--download"]
    assert _parse([], local_workers=2, bind="tcp://127.0.0.1:*").local_workers == 2


def test_sink_and_cores_follow_their_conventions():
    assert ClusterOptions(bind="tcp://127.0.0.1:*").sink == "tcp://127.0.0.1:*"  # any free port for both
    with pytest.raises(ClusterError, match="--sink-bind"):
        ClusterOptions(bind="ipc:///tmp/evovae-vent").sink  # noqa: B018 - the property raises
    assert ClusterOptions(bind="ipc:///tmp/v", sink_bind="ipc:///tmp/s").sink == "ipc:///tmp/s"
    cores = available_cores()
    assert cores_per_worker(1) == cores and cores_per_worker(cores * 4) == 1 and cores_per_worker(0) == cores
    assert cores_per_worker(2, threads=3) == 3 == ClusterOptions(local_workers=2, threads=3).threads_each


@pytest.mark.parametrize(("changes", "message"), [
    ({"local_workers": -1}, "--local-workers must be a whole number >= 0"),
    ({"threads": -2}, "--threads must be a whole number >= 0"),
])
def test_bad_counts_are_one_clear_line(changes, message):
    with pytest.raises(ClusterError, match=message):
        ClusterOptions(**changes)


def test_bad_security_options_fail_before_anything_is_opened(tmp_path):
    with pytest.raises(ClusterError, match="refusing to bind tcp://\\*:"):
        Cluster(ClusterOptions(bind="tcp://*:6101"))
    with pytest.raises(ClusterError, match="needs both"):
        Cluster(ClusterOptions(server_key_secret=str(tmp_path / "head.key_secret")))
    with pytest.raises(ClusterError, match="excludes"):
        Cluster(ClusterOptions(insecure=True, allow=str(tmp_path)))


def test_a_taken_port_or_bad_settings_are_one_line_and_leave_nothing_open():
    port = free_port_pair()
    options = ClusterOptions(bind=f"tcp://127.0.0.1:{port}")
    with Cluster(options) as first:
        assert first.broker.ventilator_endpoint == f"tcp://127.0.0.1:{port}"
        second = Cluster(options)
        with pytest.raises(ClusterError, match=f"cannot bind tcp://127.0.0.1:{port}.*pick another --bind"):
            second.__enter__()
        assert second.broker is None
    with pytest.raises(ClusterError, match="heartbeat_s"):
        Cluster(ClusterOptions(bind=f"tcp://127.0.0.1:{port}", heartbeat=0.0)).__enter__()
    with Cluster(options):  # the first one's ports were freed
        pass


def test_a_cluster_is_used_inside_its_block_only():
    cluster = Cluster(ClusterOptions(bind="tcp://127.0.0.1:*"))
    with pytest.raises(RuntimeError, match="not started"):
        cluster.capacity()
    with cluster:
        assert cluster.capacity() == 0 and "local workers 0" in cluster.describe()
        assert cluster.stats() == {"broker": cluster.broker.stats.as_dict(), "worker_restarts": 0}


# ------------------------------------------------------------------ signals, fast

def test_a_signal_sets_the_event_and_the_old_handlers_come_back():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with stop_signals() as stop:
            assert not stop.event.is_set() and stop.name == "" and stop.exit_status == 1
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.event.wait(5.0)
            assert stop.received == [signal.SIGTERM] and stop.name == "SIGTERM" and stop.exit_status == 143
        os.kill(os.getpid(), signal.SIGTERM)  # back to the handler that was there before
        wait_until(lambda: seen, 5.0, "the earlier SIGTERM handler")
        assert seen == [signal.SIGTERM] and stop.received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_no_handler_is_installed():
    before = signal.getsignal(signal.SIGINT)
    result = {}

    def body():
        with stop_signals() as stop:
            result["handler"] = signal.getsignal(signal.SIGINT)
            result["stop"] = stop

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(10.0)
    assert result["handler"] is before and not result["stop"].event.is_set()


# ------------------------------------------------------------------ real workers, slow

def _evaluate(cluster: Cluster) -> dict:
    return Runner(SPEC).evaluate_specs([(g, SPEC) for g in GENOTYPES], cluster.evaluator(threading.Event()))


@pytest.mark.slow
def test_local_workers_serve_tasks_and_are_gone_after_the_block():
    port = free_port_pair()
    options = ClusterOptions(bind=f"tcp://127.0.0.1:{port}", local_workers=2, worker_args=("--fake",),
                             heartbeat=0.5, log_level="warning")
    with Cluster(options) as cluster:
        pids = cluster.workers.pids
        assert len(pids) == 2
        # the broker learns of a worker when it polls: poll until both said they are ready
        wait_until(lambda: cluster.broker.poll(0.05) == [] and cluster.capacity() == 2, 60.0, "both workers connected")
        results = _evaluate(cluster)
        assert sorted(e.loss for e in results.values()) == sorted(fake_loss(g, SPEC.epochs) for g in GENOTYPES)
        assert cluster.stats()["broker"]["completed"] == 3
    assert not any(pid_alive(pid) for pid in pids)


@pytest.mark.slow
def test_under_curve_local_workers_get_temporary_keys_that_are_removed(tmp_path):
    generate(tmp_path / "head", "head")
    allow = tmp_path / "allow"
    allow.mkdir()
    generate(tmp_path / "remote", "gpu0")
    (allow / "gpu0.key").write_bytes((tmp_path / "remote" / "gpu0.key").read_bytes())
    options = ClusterOptions(bind=f"tcp://127.0.0.1:{free_port_pair()}", local_workers=1, worker_args=("--fake",),
                             server_key_secret=str(tmp_path / "head" / "head.key_secret"), allow=str(allow),
                             log_level="warning")
    cluster = Cluster(options)
    assert cluster.encrypted
    with cluster:
        keys = Path(cluster._keys_dir)
        assert sorted(p.name for p in keys.iterdir()) == ["head.key", "local-worker.key", "local-worker.key_secret"]
        assert "CURVE" in cluster.describe()
        results = _evaluate(cluster)
        assert all(e.ok for e in results.values()) and len(results) == 3
    assert not keys.exists()
