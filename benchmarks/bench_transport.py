"""Transport benchmarks: the head (engine + broker) against real fake-worker processes on loopback.

    .venv/bin/python benchmarks/bench_transport.py [--quick] [--only overhead,throughput,idle,memory]

Prints, side by side in one run:
  overhead    engine + transport time per task with no-op workers, journal off and on
              (target <= 0.3 ms; Dask documents ~1 ms)
  throughput  achieved evaluations/s over the ideal, 1/4/16/64 workers sleeping a fixed time (target >= 0.97 at 64)
  idle        fraction of worker time idle while tasks were queued, heavy-tailed (Pareto) task times
  modes       worker idle fraction of generational vs steady-state evolution, heavy-tailed task times
  memory      worker RSS after 200 fake tasks and 20 real trainings, head RSS after 10,000 fake tasks,
              each against its size after warm-up (target: growth < 50 MB)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evo.cmdline.log_setup import configure
from evo.engine import EvolutionEngine
from evo.head.evaluators import DistributedEvaluator
from evo.head.journal import RunJournal
from evo.head.runner import Runner
from evo.random_search import RandomSearch
from evo.space import SearchSpace
from evo.spec import TrainSpec
from evo.steady_state import SteadyStateEngine
from transport.broker import Broker

SPEC = TrainSpec(dataset="fashion-mnist", epochs=1)


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Workers:
    """N worker processes connected to a broker; their JSON logs go to files."""

    def __init__(self, broker: Broker, count: int, args: list[str], logdir: Path) -> None:
        vent = broker.ventilator_endpoint.replace("0.0.0.0", "127.0.0.1")
        sink = broker.sink_endpoint.replace("0.0.0.0", "127.0.0.1")
        self.logs = [logdir / f"worker{i}.log" for i in range(count)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.procs = []
        for i, log in enumerate(self.logs):
            with open(log, "w") as stderr:  # the worker has its own copy of the descriptor
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "gpuworker", "--connect", vent, "--sink", sink, "--threads", "1",
                     "--worker-id", f"bench{i}", "--log-format", "json", *args],
                    stdout=subprocess.DEVNULL, stderr=stderr, env=env))

    def wait_connected(self, broker: Broker, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(broker.workers()) < len(self.procs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(broker.workers())} of {len(self.procs)} workers connected")
            broker.poll(0.05)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


class HeadPath:
    """The head's path for a strategy: a Runner (with an optional journal) over a DistributedEvaluator."""

    def __init__(self, broker: Broker, spec: TrainSpec = SPEC, capacity=lambda: 1, **kwargs) -> None:
        self.runner = Runner(spec, **kwargs)
        self.evaluator = DistributedEvaluator(broker, status_every_s=3600)
        self.capacity = capacity

    def run(self, strategy) -> None:
        self.runner.run(strategy, self.evaluator, self.capacity)


def runner_for(broker: Broker, spec: TrainSpec = SPEC, **kwargs) -> HeadPath:
    return HeadPath(broker, spec, **kwargs)


def run_batch(broker: Broker, count: int, seed: int, spec: TrainSpec = SPEC) -> float:
    """Evaluate ``count`` distinct genotypes through the head path (Runner + evaluator); returns seconds."""
    strategy = RandomSearch(SearchSpace(), mu=count, batch=count, seed=seed, epochs=spec.epochs, generations=1)
    runner = runner_for(broker, spec, capacity=lambda: count)
    started = time.perf_counter()
    runner.run(strategy)
    return time.perf_counter() - started


def run_engine(broker: Broker, generations: int, journal_dir: Path | None, seed: int) -> tuple[float, int]:
    """A (500 + 500) evolution through Runner + DistributedEvaluator; returns (seconds, evaluations)."""
    journal = RunJournal.create(journal_dir, {"bench": True}) if journal_dir else None
    engine = EvolutionEngine(SearchSpace(), mu=500, lam=500, seed=seed, epochs=SPEC.epochs, generations=generations)
    runner = runner_for(broker, journal=journal)
    started = time.perf_counter()
    runner.run(engine)
    seconds = time.perf_counter() - started
    if journal:
        journal.close()
    return seconds, engine.evaluation_count


def bench_overhead(tmp: Path, quick: bool) -> None:
    generations = 2 if quick else 8
    for workers in (1, 4):
        with Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=1.0) as broker:
            pool = Workers(broker, workers, ["--fake", "--log-level", "warning"], tmp)
            try:
                pool.wait_connected(broker)
                run_batch(broker, 200, seed=99)  # warm-up
                plain, n_plain = run_engine(broker, generations, None, seed=1)
                journaled, n_journal = run_engine(broker, generations, tmp / f"journal-{workers}", seed=2)
            finally:
                pool.stop()
        print(f"overhead    {workers:3d} no-op workers: engine + transport {1000 * plain / n_plain:.3f} ms per task, "
              f"with the journal {1000 * journaled / n_journal:.3f} ms per task "
              f"({n_plain} and {n_journal} tasks; target <= 0.3 ms; Dask documents ~1 ms)", flush=True)


def bench_throughput(tmp: Path, quick: bool) -> None:
    sleep_s = 0.5
    for workers in ((1, 4, 16) if quick else (1, 4, 16, 64)):
        rounds = 4 if quick else 16
        tasks = workers * rounds
        with Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=1.0) as broker:
            pool = Workers(broker, workers, ["--fake", "--fake-sleep", str(sleep_s)], tmp)
            try:
                pool.wait_connected(broker)
                seconds = run_batch(broker, tasks, seed=2)
            finally:
                pool.stop()
        ideal = workers / sleep_s
        achieved = tasks / seconds
        print(f"throughput  {workers:3d} workers x {sleep_s}s tasks: {achieved:7.1f} evals/s, ideal {ideal:6.1f}, "
              f"efficiency {achieved / ideal:.3f} (target >= 0.97 at 64)", flush=True)


def _events(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _ts(event: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def bench_idle(tmp: Path, quick: bool) -> None:
    workers, tasks, scale = (8, 80, 0.05) if quick else (16, 320, 0.05)
    with Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=1.0) as broker:
        pool = Workers(broker, workers, ["--fake", "--fake-sleep", str(scale), "--fake-durations", "pareto"], tmp)
        try:
            pool.wait_connected(broker)
            seconds = run_batch(broker, tasks, seed=3)
        finally:
            pool.stop()
    received, sent = [], []
    for log in pool.logs:
        ev = _events(log)
        received.append([_ts(e) for e in ev if e["event"] == "task.received"])
        sent.append([_ts(e) for e in ev if e["event"] == "result.sent"])
    start = min(r[0] for r in received if r)
    last_dispatch = max(max(r) for r in received if r)  # after this moment no task was queued any more
    idle = 0.0
    for rec, snt in zip(received, sent, strict=True):
        idle += max(0.0, (rec[0] if rec else last_dispatch) - start)
        for done_at, next_at in zip(snt, rec[1:], strict=False):  # the last result has no next task
            idle += max(0.0, min(next_at, last_dispatch) - done_at) if done_at < last_dispatch else 0.0
    window = workers * (last_dispatch - start)
    print(f"idle        {workers} workers, {tasks} Pareto(1.5) tasks (scale {scale}s), {seconds:.1f}s: "
          f"idle while tasks were queued {idle / window:.4f} of worker time", flush=True)


def bench_modes(tmp: Path, quick: bool) -> None:
    """Worker idle fraction of generational vs steady-state evolution, heavy-tailed task times."""
    workers, mu, generations, scale = (4, 8, 5, 0.05) if quick else (8, 16, 8, 0.05)
    budget = mu + mu * (generations - 1)
    line = []
    for mode in ("generational", "steady-state"):
        with Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=1.0) as broker:
            pool = Workers(broker, workers, ["--fake", "--fake-sleep", str(scale), "--fake-durations", "pareto",
                                              "--log-level", "warning"], tmp)
            try:
                pool.wait_connected(broker)
                runner = runner_for(broker, capacity=lambda: workers)
                if mode == "generational":
                    engine = EvolutionEngine(SearchSpace(), mu=mu, lam=mu, seed=4, epochs=SPEC.epochs,
                                             generations=generations)
                else:
                    engine = SteadyStateEngine(SearchSpace(), mu=mu, seed=4, report_every=mu, epochs=SPEC.epochs,
                                               max_evaluations=budget)
                started = time.perf_counter()
                runner.run(engine)
                wall = time.perf_counter() - started
            finally:
                pool.stop()
        busy = sum(e.seconds or e.metrics.get("seconds", 0.0) for e in engine.evaluations)
        line.append(f"{mode} {1 - busy / (workers * wall):.3f} ({engine.evaluation_count} evals, {wall:.1f}s)")
    print(f"modes       idle fraction, {workers} workers, Pareto(1.5) task times (scale {scale}s): "
          + "   ".join(line), flush=True)


def bench_memory(tmp: Path, quick: bool) -> None:
    # worker: 200 fake tasks
    with Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=1.0) as broker:
        pool = Workers(broker, 1, ["--fake"], tmp)
        try:
            pool.wait_connected(broker)
            run_batch(broker, 20, seed=10)
            warm = rss_mb(pool.procs[0].pid)
            run_batch(broker, 200, seed=11)
            after = rss_mb(pool.procs[0].pid)
        finally:
            pool.stop()
    print(f"memory      worker, 200 fake tasks: {warm:.1f} MB after warm-up -> {after:.1f} MB "
          f"(growth {after - warm:+.1f} MB)", flush=True)
    # worker: real trainings on a Fashion-MNIST subset
    real = 10 if quick else 20
    spec = TrainSpec(dataset="fashion-mnist", epochs=1, train_subset=1000, val_size=1000)
    with Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=1.0) as broker:
        pool = Workers(broker, 1, [], tmp)
        try:
            pool.wait_connected(broker)
            run_batch(broker, real, seed=12, spec=spec)
            warm = rss_mb(pool.procs[0].pid)
            run_batch(broker, real, seed=13, spec=spec)
            after = rss_mb(pool.procs[0].pid)
        finally:
            pool.stop()
    print(f"memory      worker, {real} real trainings: {warm:.1f} MB after warm-up -> {after:.1f} MB "
          f"(growth {after - warm:+.1f} MB)", flush=True)
    # head: 10,000 fake tasks through the engine
    total = 2000 if quick else 10_000
    with Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=1.0) as broker:
        pool = Workers(broker, 2, ["--fake"], tmp)
        try:
            pool.wait_connected(broker)
            warm_up = EvolutionEngine(SearchSpace(), mu=100, lam=100, seed=13, epochs=SPEC.epochs, generations=1)
            runner_for(broker, capacity=lambda: 100).run(warm_up)
            warm = rss_mb()
            engine = EvolutionEngine(SearchSpace(), mu=100, lam=100, seed=14, epochs=SPEC.epochs,
                                     generations=total // 100)
            runner_for(broker, capacity=lambda: 100).run(engine)
            after = rss_mb()
        finally:
            pool.stop()
    print(f"memory      head, {engine.evaluation_count} fake tasks: {warm:.1f} MB after warm-up -> {after:.1f} MB "
          f"(growth {after - warm:+.1f} MB)", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a minute or two)")
    parser.add_argument("--only", default="overhead,throughput,idle,modes,memory")
    args = parser.parse_args(argv)
    configure("json", "warning", stream=open(os.devnull, "w"))  # noqa: SIM115 - open while the process logs
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            {"overhead": bench_overhead, "throughput": bench_throughput, "idle": bench_idle,
             "modes": bench_modes, "memory": bench_memory}[name](Path(tmp), args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
