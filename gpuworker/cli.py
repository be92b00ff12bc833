"""``evovae worker`` / ``python -m gpuworker``: the worker's command line.

Parses the options (and a ``--config`` TOML ``[worker]`` table), sets up
logging, CURVE keys and signals, builds the evaluator and runs
:func:`gpuworker.worker.run_worker`. It lives in the worker's own package, made of
the command-line kit both processes share (evo.cmdline), so the worker never
imports the head's command line; ``evovae worker`` delegates here (evo/cli/app.py).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from evo.cmdline import validate as v
from gpuworker.data_options import DataOptionError, add_data_options, check_worker_data
from gpuworker.evaluators import WorkerUnfit, fake_evaluator, torch_evaluator
from gpuworker.worker import run_worker
from transport.endpoints import sink_endpoint

if TYPE_CHECKING:
    from evo.cmdline.signals import StopSignals
    from transport.keys import CurveClient

__all__ = ["build_parser", "curve_of", "main"]

log = structlog.get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = v.OneLineParser(prog="evovae worker", description="Serve evaluation tasks from a search head.")
    parser.add_argument("--config", metavar="FILE",
                        help="a TOML settings file; its [worker] table sets defaults for these options")
    parser.add_argument("--connect", type=v.CONNECT, required=True, metavar="ENDPOINT",
                        help="the head's ventilator, e.g. tcp://head-node:5557")
    parser.add_argument("--sink", type=v.CONNECT, default=None, metavar="ENDPOINT",
                        help="the head's sink (default: the ventilator's port + 1)")
    parser.add_argument("--worker-id", type=v.worker_id, default=None,
                        help="1-128 characters of A-Z a-z 0-9 _ . : - (default: HOSTNAME-PID-RANDOM)")
    parser.add_argument("--heartbeat", type=v.HEARTBEAT, default=1.0, metavar="SECONDS",
                        help="seconds between heartbeats, 0.05 to 3600 (default 1)")
    parser.add_argument("--max-tasks", type=v.whole(0, 10**12), default=0,
                        help="exit after this many tasks (0 = never)")
    parser.add_argument("--device", type=v.device, default=None,
                        help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=v.THREADS, default=0, help="torch CPU threads (default: the cores available)")
    parser.add_argument("--checkpoints", type=v.dir_to_create, default=None, metavar="DIR",
                        help="keep each task's final training state in DIR, so a promoted candidate (--mode asha) "
                             "continues from it instead of training from scratch (same result, less compute)")
    add_data_options(parser, dataset_default=None, likelihood=False,
                     title="data: the tasks say which; --dataset is checked at start-up (exit 2 if unusable)")
    fake = parser.add_argument_group("fake evaluation (tests and benchmarks: no torch, no training)")
    fake.add_argument("--fake", action="store_true", help="compute a cheap deterministic loss instead of training")
    fake.add_argument("--fake-sleep", type=v.seconds(zero=True), default=0.0, metavar="SECONDS",
                      help="time one fake task takes, 0 to 86400 (default 0)")
    fake.add_argument("--fake-durations", default="fixed", choices=("fixed", "pareto"),
                      help="fixed: every task takes --fake-sleep; pareto: times a heavy-tailed draw per genotype")
    fake.add_argument("--fake-per-epoch", action="store_true",
                      help="--fake-sleep is per epoch asked (a 9-epoch task takes 9 times a 1-epoch one)")
    fake.add_argument("--poison", action="append", type=v.genotype(), default=[], metavar="GENOTYPE",
                      help="die (SIGKILL) when given this genotype")
    security = parser.add_argument_group(
        "security (CURVE; see docs/protocol.md, Security). CURVE is on iff --server-key is given")
    security.add_argument("--server-key", default=None, metavar="FILE",
                          help="the head's public key file (NAME.key from evovae keys generate)")
    security.add_argument("--key", default=None, metavar="FILE",
                          help="this worker's secret key file (NAME.key_secret, mode 0600); its public key must be "
                               "in the head's --allow directory")
    security.add_argument("--insecure", action="store_true",
                          help="plain TCP, no CURVE (the head must be plain too); excludes --server-key and --key")
    parser.add_argument("--log-format", default="auto", choices=("auto", "console", "json"))
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser


def curve_of(args: argparse.Namespace) -> CurveClient | None:
    """The CurveClient the options ask for, or None for plain TCP; ValueError (one line) if they conflict."""
    from transport.keys import CurveClient

    if args.insecure and (args.server_key or args.key):
        raise ValueError("--insecure excludes --server-key and --key")
    if args.server_key and not args.key:
        raise ValueError("--server-key needs --key FILE (this worker's secret key file, from evovae keys generate)")
    if args.key and not args.server_key:
        raise ValueError("--key needs --server-key FILE (the head's public key file)")
    if not args.server_key:
        return None
    return CurveClient.from_files(args.key, args.server_key)  # KeyFileError is a ValueError


def _sink_of(connect: str) -> str:
    """The sink by convention, the ventilator's port + 1; ValueError when that is no endpoint (port 65535)."""
    sink = sink_endpoint(connect)
    try:
        return v.CONNECT(sink)
    except v.OptionError:
        raise ValueError(f"--connect {connect}: the sink by convention would be {sink}, which is no endpoint; "
                         "give --sink ENDPOINT") from None


def main(argv: Sequence[str] | None = None) -> int:
    from evo.cmdline.settings import SettingsError, apply_settings

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        apply_settings(parser, argv, "worker")
    except SettingsError as exc:
        print(f"evovae worker: error: {exc}", file=sys.stderr)
        return 2
    args = v.parse_args(parser, argv)  # each value checked: one line and status 2 for a bad one
    if isinstance(args, int):
        return args
    from evo.cmdline.log_setup import configure
    from transport.channel import default_worker_id

    worker_id = args.worker_id or default_worker_id()
    configure(args.log_format, args.log_level, role="worker", worker_id=worker_id)
    try:
        sink = args.sink or _sink_of(args.connect)
        curve = curve_of(args)
    except ValueError as exc:
        print(f"evovae worker: error: {exc}", file=sys.stderr)
        return 2
    if curve is None:  # a warning unless the head is on this machine
        from transport.endpoints import is_loopback_endpoint

        local = is_loopback_endpoint(args.connect) and is_loopback_endpoint(sink)
        (log.info if local else log.warning)(
            "auth.disabled", mechanism="NULL", insecure=args.insecure, loopback=local,
            reason="no --server-key: plain TCP to the head (it must run without CURVE)")
    else:
        log.info("auth.enabled", mechanism="CURVE", public_key=curve.public_key.decode("ascii"),
                 server_key=curve.server_key.decode("ascii"))
    from evo.cmdline.signals import stop_signals

    with stop_signals() as stop:
        return _serve(args, sink, curve, worker_id, stop)


def _serve(args: argparse.Namespace, sink: str, curve: CurveClient | None, worker_id: str, stop: StopSignals) -> int:
    """Build the evaluator (checking this node's data first) and serve tasks until stopped."""
    if args.fake:
        evaluator = fake_evaluator(args.fake_sleep, args.fake_durations, args.poison, stop.event,
                                   per_epoch=args.fake_per_epoch, checkpoints=args.checkpoints)
    else:
        from gpuworker.train import set_threads

        set_threads(args.threads or None)
        try:  # this node's data, checked before the first task: a worker that cannot serve it says so now
            log.info("worker.data", data=check_worker_data(args))
        except DataOptionError as exc:
            log.error("worker.unfit", error=str(exc))
            print(f"evovae worker: error: {exc}", file=sys.stderr)
            return 2
        evaluator = torch_evaluator(args.device, args.data_root, args.download, stop.event, args.checkpoints)
    try:
        run_worker(args.connect, sink, evaluator, stop=stop.event, heartbeat_s=args.heartbeat, worker_id=worker_id,
                   max_tasks=args.max_tasks, curve=curve)
        if stop.stopped:
            log.info("worker.signal", signal=stop.name)
    except WorkerUnfit as exc:  # e.g. this node lacks the data: say so, take no more tasks
        log.error("worker.unfit", error=str(exc))
        print(f"evovae worker: error: {exc}", file=sys.stderr)
        return 2
    return 0
