"""One builder of a cluster, for every command that fans tasks out: ``evovae search`` and the experiments.

A cluster is the head's side of the distributed path: the CURVE keys (or plain TCP where that is
allowed), the :class:`~transport.broker.Broker` (ventilator + sink), and the worker processes the
head starts on this machine (:class:`~evo.head.local_workers.LocalWorkers`, none with
``local_workers=0``: then remote workers serve it). ::

    cluster = Cluster(ClusterOptions(bind="tcp://*:5557", server_key_secret=..., allow=...))  # checks keys
    with cluster:                                    # binds, writes the local workers' keys, starts them
        evaluator = cluster.evaluator(stop)          # a DistributedEvaluator on this broker
        Runner(spec).run(strategy, evaluator, capacity=cluster.capacity)
    # here the workers are stopped, the broker is closed and the temporary keys are removed

Building the :class:`Cluster` reads and checks the key options but opens nothing, so a command can
refuse bad options before it creates a run directory. Every bad option or unusable endpoint is a
:class:`ClusterError`: one line that says what is wrong.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from .local_workers import LocalWorkers

if TYPE_CHECKING:  # imported when used: they load ZeroMQ
    from transport.broker import Broker

    from .evaluators import DistributedEvaluator

__all__ = ["Cluster", "ClusterError", "ClusterOptions", "available_cores", "cores_per_worker"]

log = structlog.get_logger(__name__)

DEFAULT_BIND = "tcp://127.0.0.1:5557"


class ClusterError(ValueError):
    """Options a cluster cannot be built from, or an endpoint it cannot bind (one line)."""


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cores_per_worker(workers: int, threads: int = 0) -> int:
    """Torch threads for each of ``workers`` processes sharing this machine (``threads`` if given)."""
    return threads or max(1, available_cores() // max(1, workers))


@dataclass(frozen=True)
class ClusterOptions:
    """Everything a cluster is built from (the ``distribution`` and ``security`` options of the CLI).

    ``bind``/``sink_bind``: the ventilator and sink endpoints (the sink defaults to the ventilator's
    port + 1; a ``*`` port binds any free port for both). ``heartbeat``, ``liveness``, ``lease``,
    ``max_attempts``: the broker's lease rules. ``local_workers`` worker processes on this machine,
    each started with ``worker_args`` and ``threads`` torch threads (0: the cores shared among them),
    reading data from ``data_root`` (downloading it with ``download``) on ``device``, logging JSON at
    ``log_level``. ``worker_data``: the run's data options for them (``--dataset PATH``, with
    ``--columns`` and ``--image-size`` where set), so each checks the data at start-up and exits 2 with
    the reason when it cannot serve it. ``server_key_secret`` + ``allow``: CURVE; ``insecure``: plain
    TCP off loopback.
    """

    bind: str = DEFAULT_BIND
    sink_bind: str | None = None
    heartbeat: float = 1.0
    liveness: int = 3
    lease: float = 3600.0
    max_attempts: int = 3
    local_workers: int = 0
    worker_args: tuple[str, ...] = ()
    worker_data: tuple[str, ...] = ()
    server_key_secret: str | None = None
    allow: str | None = None
    insecure: bool = False
    threads: int = 0
    data_root: str | None = None
    device: str | None = None
    download: bool = False
    log_level: str = "info"

    def __post_init__(self) -> None:
        object.__setattr__(self, "worker_args", tuple(self.worker_args))
        object.__setattr__(self, "worker_data", tuple(str(a) for a in self.worker_data))
        for name, flag in (("local_workers", "--local-workers"), ("threads", "--threads")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ClusterError(f"{flag} must be a whole number >= 0, got {value!r}")

    @property
    def sink(self) -> str:
        """The sink endpoint to bind: ``sink_bind``, or by convention from ``bind``."""
        if self.sink_bind:
            return self.sink_bind
        if self.bind.endswith(":*"):
            return self.bind
        from transport.endpoints import sink_endpoint

        try:
            return sink_endpoint(self.bind)
        except ValueError as exc:
            raise ClusterError(f"{exc} (--sink-bind)") from None

    @property
    def threads_each(self) -> int:
        """Torch threads of each local worker."""
        return cores_per_worker(self.local_workers, self.threads)

    def local_worker_args(self, key_args: tuple[str, ...] = ()) -> list[str]:
        """The options every local worker is started with (besides --connect, --sink and --threads)."""
        args = [*self.worker_data, *self.worker_args, *key_args, "--heartbeat", str(self.heartbeat),
                "--log-format", "json", "--log-level", self.log_level]
        for flag, value in (("--data-root", self.data_root), ("--device", self.device)):
            if value:
                args += [flag, str(value)]
        if self.download:
            args.append("--download")
        return args


class Cluster:
    """Keys, broker and local workers, as one context manager (see the module's docstring)."""

    def __init__(self, options: ClusterOptions, worker_output: Callable[[int, str], None] | None = None) -> None:
        """``worker_output(slot, line)``: each line a local worker writes to its stderr (LocalWorkers' ``output``;
        may be set until the cluster starts); None: they write to this process's stderr."""
        from transport.keyfiles import KeyFileError
        from transport.keys import head_curve

        self.options = options
        try:  # read the key files now: bad security options fail before anything is opened
            self._curve = head_curve(options.bind, options.sink, server_key_secret=options.server_key_secret,
                                     allow=options.allow, insecure=options.insecure)
        except KeyFileError as exc:
            raise ClusterError(str(exc)) from None
        self.broker: Broker | None = None
        self.workers: LocalWorkers | None = None
        self.worker_output = worker_output
        self._keys_dir: str | None = None

    @property
    def encrypted(self) -> bool:
        return self._curve is not None

    # -- lifetime ---------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> None:
        from transport.broker import BindError, Broker
        from transport.keys import local_worker_keys

        o = self.options
        curve = self._curve
        key_args: list[str] = []
        if curve is not None and o.local_workers:  # local workers get a key pair of their own, for this run only
            self._keys_dir = tempfile.mkdtemp(prefix="evovae-local-keys-")
            curve, key_args = local_worker_keys(curve, self._keys_dir)
        try:
            broker = self.broker = Broker(o.bind, o.sink, heartbeat_s=o.heartbeat, liveness=o.liveness,
                                          lease_s=o.lease, max_attempts=o.max_attempts, curve=curve)
        except ValueError as exc:
            raise ClusterError(str(exc)) from None
        except BindError as exc:  # address in use, bad endpoint
            raise ClusterError(f"cannot bind {o.bind} / {o.sink}: {exc} (is another search running? "
                               "pick another --bind)") from None
        self.workers = LocalWorkers(o.local_workers, broker.ventilator_endpoint, broker.sink_endpoint,
                                    o.local_worker_args(tuple(key_args)), threads_each=o.threads_each,
                                    output=self.worker_output)
        self.workers.start()
        log.info("cluster.started", ventilator=broker.ventilator_endpoint, sink=broker.sink_endpoint,
                 local_workers=o.local_workers, encrypted=self.encrypted)

    def close(self) -> None:
        """Stop the local workers, close the broker, remove the temporary keys. Idempotent."""
        if self.workers is not None:
            self.workers.stop()
        if self.broker is not None:
            self.broker.close()
        if self._keys_dir is not None:
            shutil.rmtree(self._keys_dir, ignore_errors=True)
            self._keys_dir = None

    # -- use --------------------------------------------------------------------------------
    def _live(self) -> tuple[Broker, LocalWorkers]:
        if self.broker is None or self.workers is None:
            raise RuntimeError("the cluster is not started: use it inside `with cluster:`")
        return self.broker, self.workers

    @property
    def live_broker(self) -> Broker:
        """The broker of the started cluster (RuntimeError outside ``with cluster:``)."""
        return self._live()[0]

    def evaluator(self, stop: threading.Event | None = None) -> DistributedEvaluator:
        """A :class:`~evo.head.evaluators.DistributedEvaluator` on this cluster's broker; it looks after
        the local workers (:meth:`check`) while it waits."""
        from .evaluators import DistributedEvaluator

        broker, _ = self._live()
        return DistributedEvaluator(broker, stop=stop, tick=self.check)

    def check(self) -> None:
        """Restart the local workers that died; ClusterError when every one of them refused the run (exit
        status 2: it cannot serve the data, and said why in its ``evovae worker: error:`` line) and no other
        worker is connected, so a run nobody can serve stops with the reason instead of waiting forever."""
        broker, workers = self._live()
        workers.check()
        if workers.count and len(workers.unfit) == workers.count and not broker.workers():
            raise ClusterError(f"{'the local worker' if workers.count == 1 else f'all {workers.count} local workers'} "
                               "exited with status 2: they cannot serve this run (the reason is in the 'evovae "
                               "worker: error:' line above); fix what it names, or serve the run with workers "
                               "elsewhere (--local-workers 0)")

    def capacity(self) -> int:
        """Workers connected now (how many tasks can run at once)."""
        return len(self._live()[0].workers())

    def describe(self) -> str:
        broker, _ = self._live()
        return (f"ventilator {broker.ventilator_endpoint}  sink {broker.sink_endpoint}  "
                f"local workers {self.options.local_workers}" + ("  CURVE" if self.encrypted else ""))

    def stats_line(self) -> str:
        """The broker's counters for a progress line."""
        broker, _ = self._live()
        st = broker.stats
        return (f"workers {len(broker.workers())}  resends {st.resends}  lost {st.failures}"
                f"  duplicate-results {st.duplicates}")

    def stats(self) -> dict[str, Any]:
        """The broker's counters and the local workers' restarts, as plain values."""
        broker, workers = self._live()
        return {"broker": broker.stats.as_dict(), "worker_restarts": workers.restarts}
