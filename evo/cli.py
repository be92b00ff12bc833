"""The ``evovae`` command line. Heavy packages are imported inside the
subcommand that needs them, so ``evovae --help`` is instant."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from .evaluation import Evaluation, evaluation_from_metrics
from .genotype import Genotype, GenotypeError, parse_genotype
from .space import SearchSpace
from .spec import DATASETS, TrainSpec

__all__ = ["main"]


#: Subcommands that parse their own options: name -> ("module:function", help). The function takes argv
#: (without the subcommand) and returns an exit status; it is imported only when that subcommand runs.
DELEGATED = {
    "worker": ("gpuworker.worker:main", "serve evaluation tasks from a search head (evovae worker --help)"),
}


class UsageError(Exception):
    """Bad input from the person at the keyboard: one line, exit status 2."""


def _add_training_options(p: argparse.ArgumentParser, epochs: int) -> None:
    g = p.add_argument_group("training (the paper's Algorithm 1)")
    g.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    g.add_argument("--epochs", type=int, default=epochs, help=f"epochs per evaluation (default {epochs})")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--seed", type=int, default=0, help="seed of the search and of every training run")
    g.add_argument("--train-subset", type=int, default=0, metavar="N", help="train on the first N images only (0 = all)")
    g.add_argument("--val-size", type=int, default=10_000, help="validation images carved from the training set")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the fixed validation split")
    g.add_argument("--data-root", default=None, help="torchvision data root (default ~/.cache/evovae/data or $EVOVAE_DATA_ROOT)")
    g.add_argument("--download", action="store_true", help="download the data set if missing (needs internet)")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: the cores available)")


def _add_log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", default="auto", choices=("auto", "console", "json"),
                   help="console for people, json for machines (auto: json unless stderr is a terminal)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evovae", description="Evolutionary search of VAE architectures.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train one genotype and print its validation curve and test loss")
    train.add_argument("genotype", help="e.g. '850|20|1000' or '200,500|20|1000,650,50'")
    _add_training_options(train, epochs=20)
    _add_log_options(train)

    search = sub.add_parser("search", help="run an evolutionary (or random) search")
    s = search.add_argument_group("search")
    s.add_argument("--strategy", default="evolution", choices=("evolution", "random"))
    s.add_argument("--population", type=int, default=10, help="mu: the population size (default 10)")
    s.add_argument("--offspring", type=int, default=10, help="lambda: offspring per generation (default 10)")
    s.add_argument("--generations", type=int, default=5, help="generations, counting the initial one (default 5)")
    s.add_argument("--crossover-rate", type=float, default=0.5)
    s.add_argument("--mutation-rate", type=float, default=0.8)
    s.add_argument("--initial", nargs="*", default=[], metavar="GENOTYPE", help="genotypes to seed generation 0")
    s.add_argument("--max-layers", type=int, default=5, help="hidden layers per network, at most (default 5)")
    s.add_argument("--output", default=None, metavar="FILE", help="write the search's result as JSON here")
    d = search.add_argument_group("distribution (ventilator/sink over ZeroMQ; see docs/protocol.md)")
    d.add_argument("--in-process", action="store_true", help="train in this process: no sockets, no workers")
    d.add_argument("--local-workers", type=int, default=0, metavar="N",
                   help="start N worker processes on this machine (restarted if they die)")
    d.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the local workers, e.g. --worker-arg=--fake (repeatable)")
    d.add_argument("--bind", default="tcp://127.0.0.1:5557", metavar="ENDPOINT",
                   help="ventilator endpoint (default tcp://127.0.0.1:5557; tcp://*:5557 for remote workers)")
    d.add_argument("--sink-bind", default=None, metavar="ENDPOINT", help="sink endpoint (default: --bind's port + 1)")
    d.add_argument("--heartbeat", type=float, default=1.0, metavar="SECONDS", help="worker heartbeat interval")
    d.add_argument("--liveness", type=int, default=3, help="heartbeats a busy worker may miss before its task is re-sent")
    d.add_argument("--lease", type=float, default=3600.0, metavar="SECONDS", help="longest one attempt may run")
    d.add_argument("--max-attempts", type=int, default=3, help="attempts before a genotype is recorded as failed")
    _add_training_options(search, epochs=2)
    _add_log_options(search)

    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _genotype(text: str) -> Genotype:
    try:
        return parse_genotype(text)
    except GenotypeError as exc:
        raise UsageError(str(exc)) from None


def _spec(args: argparse.Namespace) -> TrainSpec:
    try:
        return TrainSpec(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, train_subset=args.train_subset, val_size=args.val_size,
                         split_seed=args.split_seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _setup_torch(args: argparse.Namespace) -> None:
    from gpuworker.train import set_threads

    set_threads(args.threads or None)


def cmd_train(args: argparse.Namespace) -> int:
    genotype = _genotype(args.genotype)
    spec = _spec(args)
    _setup_torch(args)
    from gpuworker.data import DataError
    from gpuworker.train import evaluate

    try:
        result = evaluate(genotype, spec, device=args.device, data_root=args.data_root, download=args.download,
                          test=True)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    print(f"genotype {genotype}  parameters {result.params:,}  device {result.device}")
    for epoch, loss in enumerate(result.curve, 1):
        print(f"epoch {epoch:3d}  validation loss {loss:.3f}")
    if not result.ok:
        print(f"failed: {result.error}")
        return 1
    test = result.test
    print(f"validation loss {result.loss:.3f} (recon {result.recon:.3f} + KL {result.kl:.3f}) nats/image")
    print(f"test loss {test['loss']:.3f} (recon {test['recon']:.3f} + KL {test['kl']:.3f}) nats/image")
    print(f"trained in {result.seconds:.1f}s")
    return 0


def _strategy(args: argparse.Namespace):
    from .engine import EvolutionEngine
    from .random_search import RandomSearch

    try:
        space = SearchSpace(max_layers=args.max_layers)
        initial = [space.validate(_genotype(t)) for t in args.initial]
        if args.strategy == "random":
            if initial:
                raise UsageError("--initial only applies to --strategy evolution")
            return RandomSearch(space, mu=args.population, batch=args.offspring, seed=args.seed)
        return EvolutionEngine(space, mu=args.population, lam=args.offspring, seed=args.seed,
                               crossover_rate=args.crossover_rate, mutation_rate=args.mutation_rate, initial=initial)
    except (ValueError, GenotypeError) as exc:
        raise UsageError(str(exc)) from None


def _local_evaluator(args: argparse.Namespace, spec: TrainSpec):
    from gpuworker.train import evaluate

    def run(batch: Sequence[Genotype]) -> list[Evaluation]:
        out = []
        for genotype in batch:
            result = evaluate(genotype, spec, device=args.device, data_root=args.data_root, download=args.download)
            out.append(evaluation_from_metrics(genotype, result.ok, result.metrics(), result.error))
        return out

    return run


def _summary(strategy, spec: TrainSpec, seconds: float) -> dict:
    def item(e: Evaluation) -> dict:
        return {"genotype": str(e.genotype), "loss": e.loss, "fitness": e.fitness, "error": e.error}

    return {
        "spec": spec.to_dict(),
        "strategy": type(strategy).__name__,
        "seed": strategy.seed,
        "generations": [
            {"generation": r.generation, "evaluated": r.evaluated, "failed": r.failed, "duplicates": r.duplicates,
             "best_loss": r.best.loss if r.best else None, "median_loss": r.median_loss}
            for r in strategy.history
        ],
        "population": [item(e) for e in strategy.population],
        "evaluations": [item(e) for e in strategy.evaluations],
        "seconds": seconds,
    }


def _finish(args: argparse.Namespace, strategy, spec: TrainSpec, started: float) -> None:
    print("final population (best first):")
    for rank_, e in enumerate(strategy.population, 1):
        print(f"{rank_:3d}. {e.loss:9.3f}  {e.genotype}")
    if args.output:
        Path(args.output).write_text(json.dumps(_summary(strategy, spec, time.perf_counter() - started), indent=2))


def _search_in_process(args: argparse.Namespace, strategy, spec: TrainSpec) -> int:
    from .search import format_report, run_search

    _setup_torch(args)
    from gpuworker.data import DataError, splits

    try:
        splits(spec, root=args.data_root, download=args.download)  # fail fast, before any generation
    except DataError as exc:
        raise UsageError(str(exc)) from None
    started = time.perf_counter()
    run_search(strategy, _local_evaluator(args, spec), args.generations,
               on_generation=lambda r: print(format_report(r, f"{time.perf_counter() - started:.0f}s"), flush=True))
    _finish(args, strategy, spec, started)
    return 0


def _search_distributed(args: argparse.Namespace, strategy, spec: TrainSpec) -> int:
    import signal
    import threading

    from transport.broker import Broker

    from .head import DistributedEvaluator, SearchStopped
    from .local_workers import LocalWorkers
    from .search import format_report, run_search

    try:
        sink = args.sink_bind or _next_port(args.bind)
        broker = Broker(args.bind, sink, heartbeat_s=args.heartbeat, liveness=args.liveness, lease_s=args.lease,
                        max_attempts=args.max_attempts)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:  # zmq.ZMQError: address in use, bad endpoint
        raise UsageError(f"cannot bind {args.bind}: {exc} (is another search running? pick another --bind)") from None
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    worker_args = [*args.worker_arg, "--heartbeat", str(args.heartbeat), "--log-format", "json",
                   "--log-level", args.log_level]
    if args.data_root:
        worker_args += ["--data-root", args.data_root]
    if args.download:
        worker_args.append("--download")
    if args.device:
        worker_args += ["--device", args.device]
    threads = max(1, _cores() // max(1, args.local_workers))
    workers = LocalWorkers(args.local_workers, broker.ventilator_endpoint, broker.sink_endpoint, worker_args,
                           threads_each=args.threads or threads)
    started = time.perf_counter()

    def progress(report) -> None:
        st = broker.stats
        extra = (f"workers {len(broker.workers())}  resends {st.resends}  lost {st.failures}  "
                 f"duplicate-results {st.duplicates}  {time.perf_counter() - started:.0f}s")
        print(format_report(report, extra), flush=True)

    print(f"ventilator {broker.ventilator_endpoint}  sink {broker.sink_endpoint}  "
          f"local workers {args.local_workers}", flush=True)
    try:
        workers.start()
        evaluator = DistributedEvaluator(broker, spec, stop=stop, tick=workers.check)
        run_search(strategy, evaluator, args.generations, on_generation=progress)
    except SearchStopped as exc:
        print(f"evovae: stopped by {signal.Signals(received[0]).name}: {exc}", file=sys.stderr)
        return 128 + received[0]
    finally:
        workers.stop()
        broker.close()
    _finish(args, strategy, spec, started)
    return 0


def _next_port(endpoint: str) -> str:
    head, _, port = endpoint.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"cannot derive the sink endpoint from {endpoint!r}: give --sink-bind")
    return f"{head}:{int(port) + 1}"


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cmd_search(args: argparse.Namespace) -> int:
    spec = _spec(args)
    strategy = _strategy(args)
    if args.in_process:
        return _search_in_process(args, strategy, spec)
    return _search_distributed(args, strategy, spec)


def _delegate(name: str, argv: Sequence[str]) -> int:
    import importlib

    module, _, function = DELEGATED[name][0].partition(":")
    return getattr(importlib.import_module(module), function)(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in DELEGATED:  # these parse their own options
        return _delegate(argv[0], argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    from .log import configure

    configure(args.log_format, args.log_level, role=args.command)
    handler = {"train": cmd_train, "search": cmd_search}[args.command]
    try:
        return handler(args)
    except UsageError as exc:
        print(f"evovae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evovae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
