"""The options of a cluster on the command line, shared by ``evovae search`` and ``evovae experiment``.

``add_distribution_options(parser)`` declares them (the ``distribution`` and ``security`` groups);
``cluster_options(args)`` turns the parsed namespace into a
:class:`~evo.head.cluster.ClusterOptions`. The training options the workers need (``--threads``,
``--data-root``, ``--device``, ``--download``, ``--log-level``) are read from the namespace when the
command declares them, and so are its data options (:func:`worker_data_args`): every local worker is
started with the run's ``--dataset`` and checks it at start-up.
"""
from __future__ import annotations

import argparse
import contextlib
import io
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..cmdline import validate as v
from ..head.cluster import DEFAULT_BIND, ClusterError, ClusterOptions

if TYPE_CHECKING:
    from ..spec import TrainSpec

__all__ = ["add_distribution_options", "check_worker_args", "cluster_options", "for_run", "worker_data_args"]


def add_distribution_options(parser: argparse.ArgumentParser, *, local_workers: int = 0, bind: str = DEFAULT_BIND,
                             local_workers_help: str = "start N worker processes on this machine "
                                                       "(restarted if they die)") -> argparse._ArgumentGroup:
    """Declare --local-workers, --worker-arg, --bind, --sink-bind, --heartbeat, --liveness, --lease,
    --max-attempts and the CURVE options; returns the distribution group (a command may add to it)."""
    d = parser.add_argument_group("distribution (ventilator/sink over ZeroMQ; see docs/protocol.md)")
    d.add_argument("--local-workers", type=v.LOCAL_WORKERS, default=local_workers, metavar="N",
                   help=f"{local_workers_help} (default {local_workers}; 0: only remote workers serve it)")
    d.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the local workers, e.g. --worker-arg=--fake (repeatable; checked "
                        "as evovae worker would)")
    d.add_argument("--bind", type=v.BIND, default=bind, metavar="ENDPOINT",
                   help=f"ventilator endpoint (default {bind}; tcp://*:5557 for remote workers)")
    d.add_argument("--sink-bind", type=v.BIND, default=None, metavar="ENDPOINT",
                   help="sink endpoint (default: --bind's port + 1)")
    d.add_argument("--heartbeat", type=v.HEARTBEAT, default=1.0, metavar="SECONDS",
                   help="worker heartbeat interval, 0.05 to 3600 seconds (default 1)")
    d.add_argument("--liveness", type=v.LIVENESS, default=3,
                   help="heartbeats a busy worker may miss before its task is re-sent (1 to 1000, default 3)")
    d.add_argument("--lease", type=v.LEASE, default=3600.0, metavar="SECONDS",
                   help="longest one attempt may run, 1 to 10000000 seconds (default 3600)")
    d.add_argument("--max-attempts", type=v.MAX_ATTEMPTS, default=3,
                   help="attempts before a genotype is recorded as failed (1 to 1000, default 3)")
    sec = parser.add_argument_group("security (CURVE; see docs/protocol.md, Security)")
    sec.add_argument("--server-key-secret", default=None, metavar="FILE",
                     help="the head's secret key file (NAME.key_secret, mode 0600, from evovae keys generate): "
                          "encrypt, and admit only the workers whose public key is in --allow")
    sec.add_argument("--allow", default=None, metavar="DIR",
                     help="directory of the public key files (*.key) of the workers to admit")
    sec.add_argument("--insecure", action="store_true",
                     help="plain TCP even where --bind is reachable from other machines (trusted networks only); "
                          "a loopback --bind is plain without it")
    return d


def worker_data_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The local workers' data options from a command's namespace: ``--dataset`` (and ``--columns``,
    ``--image-size`` where set); none when the command declares no data options. Call it once the data
    options are resolved (:func:`~gpuworker.data_options.data_fields`, or a resumed run's stored values), so
    the workers check the run's data. The likelihood is not among them: a worker takes it from each task."""
    if not getattr(args, "dataset", None):
        return ()
    out = ["--dataset", str(args.dataset)]
    for flag, key in (("--columns", "columns"), ("--image-size", "image_size")):
        if getattr(args, key, ""):
            out += [flag, str(getattr(args, key))]
    return tuple(out)


def for_run(options: ClusterOptions, spec: TrainSpec, checkpoints: Path | None, *,
            log_level: str) -> ClusterOptions:
    """``options`` for one run: its local workers are started with the run's data (a resume: the journal's),
    keep ``log_level`` in their log files, and continue promotions from the run's ``checkpoints`` store."""
    data = argparse.Namespace(dataset=spec.dataset, columns=spec.columns, image_size=spec.image_size)
    options = replace(options, worker_data=worker_data_args(data), log_level=log_level)
    if checkpoints is not None and "--checkpoints" not in " ".join(options.worker_args):
        options = replace(options, worker_args=(*options.worker_args, f"--checkpoints={checkpoints}"))
    return options


def check_worker_args(worker_args: tuple[str, ...] | list[str]) -> None:
    """ClusterError (one line) unless ``evovae worker`` takes the ``--worker-arg`` values: a local worker
    that would refuse them is found now, not when every local worker has exited."""
    if not worker_args:
        return
    from gpuworker.cli import build_parser

    said = io.StringIO()
    with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
        status = v.parse_args(build_parser(), ["--connect", "tcp://127.0.0.1:1", *worker_args])
    if isinstance(status, int):
        why = said.getvalue().strip().replace("evovae worker: error: ", "", 1) or "they print their help and exit"
        raise ClusterError(f"--worker-arg {' '.join(worker_args)}: the local workers would refuse it: {why}")


def _check_endpoints(options: ClusterOptions) -> None:
    sink = options.sink
    try:
        v.BIND(sink)
    except v.OptionError:
        raise ClusterError(f"--bind {options.bind}: the sink by convention would be {sink}, which is no endpoint; "
                           "give --sink-bind ENDPOINT") from None
    if sink == options.bind and not options.bind.endswith(":*"):
        raise ClusterError(f"--sink-bind {sink} is --bind's endpoint too; give the sink an endpoint of its own")


def cluster_options(args: argparse.Namespace) -> ClusterOptions:
    """The :class:`~evo.head.cluster.ClusterOptions` of parsed options (ClusterError for bad values)."""
    check_worker_args(args.worker_arg)
    options = ClusterOptions(
        bind=args.bind, sink_bind=args.sink_bind, heartbeat=args.heartbeat, liveness=args.liveness, lease=args.lease,
        max_attempts=args.max_attempts, local_workers=args.local_workers, worker_args=tuple(args.worker_arg),
        worker_data=worker_data_args(args),
        server_key_secret=args.server_key_secret, allow=args.allow, insecure=args.insecure,
        threads=getattr(args, "threads", 0) or 0, data_root=getattr(args, "data_root", None),
        device=getattr(args, "device", None), download=bool(getattr(args, "download", False)),
        log_level=getattr(args, "log_level", "info"))
    _check_endpoints(options)
    if options.local_workers > 1 and any(a.startswith("--worker-id") for a in options.worker_args):
        raise ClusterError(f"--worker-arg --worker-id would give all {options.local_workers} local workers one id; "
                           "leave it out (each gets its own)")
    return options
