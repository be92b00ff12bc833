"""The ``evovae`` command line. Heavy packages are imported inside the
subcommand that needs them, so ``evovae --help`` is instant."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from gpuworker.data_options import add_data_options

from ..cmdline import validate as v
from ..genotype import GenotypeError
from ..strategies import MODES, OPERATORS, STRATEGIES
from .distribution import add_distribution_options
from .search_options import UsageError, spec_of

__all__ = ["main"]


#: Subcommands that parse their own options: name -> ("module:function", help). The function takes argv
#: (without the subcommand) and returns an exit status; it is imported only when that subcommand runs.
DELEGATED = {
    "worker": ("gpuworker.cli:main", "serve evaluation tasks from a search head (evovae worker --help)"),
    "keys": ("evo.cli.keys:main", "generate and show CURVE key files (evovae keys --help)"),
    "experiment": ("evo.cli.experiment:main", "reproduce the paper's experiments into a report (Markdown + PNG)"),
    "export": ("evo.cli.export:main_export", "retrain genotypes (or a run's best) and save each as a model"),
    "sample": ("evo.cli.export:main_sample", "write a PNG grid of samples from a saved model"),
    "reconstruct": ("evo.cli.export:main_reconstruct", "write test images beside a saved model's reconstructions"),
    "encode": ("evo.cli.inference:main_encode", "write the latent means of every example of a file (a saved model)"),
    "score": ("evo.cli.inference:main_score", "negative ELBO and IW bound of every example of a file (a saved model)"),
    "logs": ("evo.logs.command:main", "summarize a search's JSON logs, or trace one task across head and workers"),
    "report": ("evo.cli.report:main", "write report.md with figures for a search's run directory"),
    "dashboard": ("evo.cli.dashboard:main", "serve optuna-dashboard on a search's evaluations, live in the browser"),
}


def _add_training_options(p: argparse.ArgumentParser, epochs: int) -> None:
    add_data_options(p)
    g = p.add_argument_group("training (the paper's Algorithm 1)")
    g.add_argument("--epochs", type=v.EPOCHS, default=epochs, help=f"epochs per evaluation (default {epochs})")
    g.add_argument("--batch-size", type=v.BATCH_SIZE, default=128)
    g.add_argument("--lr", type=v.LEARNING_RATE, default=1e-3, help="Adam's learning rate, 0 < LR < 10 (default 0.001)")
    g.add_argument("--seed", type=v.SEED, default=0, help="seed of the search and of every training run")
    g.add_argument("--train-subset", type=v.TRAIN_SUBSET, default=0, metavar="N",
                   help="train on the first N images only (0 = all)")
    g.add_argument("--val-size", type=v.VAL_SIZE, default=None,
                   help="validation examples carved from the training set (default 10,000 for a built-in set; for "
                        "your own data a fifth of its examples, at most 10,000: docs/data.md)")
    g.add_argument("--split-seed", type=v.SEED, default=0, help="seed of the fixed validation split")
    g.add_argument("--device", type=v.device, default=None, help="torch device (default: cuda if available, else cpu)")
    g.add_argument("--threads", type=v.THREADS, default=0, help="torch CPU threads (default: the cores available)")


def _add_space_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search space (default: the paper's; the latent kept below the input dimension of "
                             "small data: docs/design.md#the-search-space)")
    layers, width, latent = v.whole(1, v.MAX_LAYERS), v.whole(1, v.MAX_WIDTH), v.whole(1, v.MAX_LATENT)
    g.add_argument("--min-layers", type=layers, default=None, metavar="N",
                   help=f"hidden layers per network, at least (1 to {v.MAX_LAYERS}, default 1)")
    g.add_argument("--max-layers", type=layers, default=None, metavar="N",
                   help=f"hidden layers per network, at most (1 to {v.MAX_LAYERS}, default 5)")
    for name, kind, low, high, step in (("width", width, 50, 1000, 50), ("latent", latent, 10, 100, 10)):
        what = "hidden layer widths" if name == "width" else "latent sizes"
        g.add_argument(f"--{name}-min", type=kind, default=None, metavar="N", help=f"{what}: the smallest "
                       f"(default {low})")
        capped = "; not given: the largest grid value below the data's input dimension" if name == "latent" else ""
        g.add_argument(f"--{name}-max", type=kind, default=None, metavar="N",
                       help=f"{what}: the largest (default {high}{capped})")
        g.add_argument(f"--{name}-step", type=kind, default=None, metavar="N",
                       help=f"{what}: the grid's step from the smallest (default {step}; it must divide the range)")


def _add_log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", default="auto", choices=("auto", "console", "json"),
                   help="console for people, json for machines (auto: json unless stderr is a terminal)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def _parser() -> argparse.ArgumentParser:
    parser = v.OneLineParser(prog="evovae", description="Evolutionary search of VAE architectures.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train one genotype and print its validation curve and test loss")
    train.add_argument("genotype", help="e.g. '850|20|1000' or '200,500|20|1000,650,50'")
    _add_training_options(train, epochs=20)
    _add_log_options(train)

    search = sub.add_parser("search", help="run an evolutionary (or random) search")
    search.add_argument("--config", metavar="FILE", help="a TOML settings file; its [search] table sets defaults "
                        "for these options (flags override it)")
    s = search.add_argument_group("search")
    s.add_argument("--strategy", default=None, choices=tuple(STRATEGIES),
                   help="; ".join(f"{k}: {v}" for k, v in STRATEGIES.items()) + ". Default: tpe under "
                        "asynchronous Hyperband (--mode asha, rungs E/eta^2, E/eta, E of --epochs E, one bracket "
                        "per rung) when neither --strategy nor --mode is given (docs/experiments.md, 'The "
                        "default'); tpe with rungs (0.3 x epochs, epochs) with --mode generational; evolution "
                        "with --mode steady-state or --initial")
    s.add_argument("--population", type=v.whole(1, 10_000), default=10,
                   help="mu: the population size (regularized: the queue of the most recent; default 10)")
    s.add_argument("--offspring", type=v.whole(1, 10_000), default=10,
                   help="lambda: offspring per generation (asynchronous strategies: evaluations per progress "
                        "line; default 10)")
    s.add_argument("--generations", type=v.whole(1, 1_000_000), default=None,
                   help="generations, counting the initial one (default 5, or unbounded with --budget-epochs); "
                        "asynchronous strategies evaluate as many genotypes as this many generations would")
    s.add_argument("--budget-epochs", type=v.whole(1, 10**12), default=None, metavar="N",
                   help="stop before the training epochs asked for would exceed N (every evaluation counts its "
                        "epochs; a promoted one counts every rung it trained at, or with --mode asha only the "
                        "epochs after the checkpoint it continues from)")
    s.add_argument("--fidelities", type=v.whole_list(1, increasing=True, example="1,3,9"), default=None,
                   metavar="E1,E2,...",
                   help="multi-fidelity (evolution or tpe; any strategy with --mode asha): candidates trained E1 "
                        "epochs, the best 1/eta promoted to E2, ... selection on the last only (e.g. 1,3,9); "
                        "without it, --epochs for every evaluation (the default strategy picks its own rungs, see "
                        "--strategy)")
    s.add_argument("--eta", type=v.whole(2, 1000), default=3,
                   help="multi-fidelity: keep the best 1/eta at each rung (default 3)")
    s.add_argument("--tournament-size", type=v.whole(1, 10_000), default=3,
                   help="regularized: contenders drawn from the queue to pick a parent (default 3)")
    s.add_argument("--startup-trials", type=v.whole(1, 10_000), default=10,
                   help="tpe: random proposals before TPE models the results (default 10)")
    s.add_argument("--mode", default=None, choices=tuple(MODES),
                   help="; ".join(f"{k}: {v}" for k, v in MODES.items()) + " (asha: any --strategy, with "
                        "--fidelities, by default E/eta^2, E/eta, E of --epochs E). Default: asha when "
                        "--strategy is not given either (the default search), else generational")
    s.add_argument("--operators", default="paper", choices=OPERATORS,
                   help="evolution and regularized: the mutation operators - paper (append a layer or redraw a "
                        "width, the paper's) or local (also remove or insert a layer, step a width or the latent "
                        "by one or two grid points); default paper")
    s.add_argument("--brackets", type=v.whole(1, 100), default=None,
                   help="asha: deal new genotypes to this many brackets in turn, bracket b starting at rung b "
                        "(asynchronous Hyperband); with as many brackets as rungs one bracket trains every "
                        "candidate at the final fidelity - a hedge for data whose first epochs rank at random "
                        "(default: one per rung for the default search, else 1: plain asha)")
    s.add_argument("--rung-agreement", type=v.number(-1, 1), default=None, metavar="RHO",
                   help="asha with brackets: deal new genotypes only to the brackets whose first rung ranks like the "
                        "final one - Spearman's rho of the loss there with the final loss at least RHO, over the "
                        "final-fidelity results' learning curves once there are 8 (the highest bracket always; "
                        "default: 0.5 for the default search, else off; -1 deals every bracket)")
    s.add_argument("--random-fraction", type=v.number(0, 1), default=0.0, metavar="F",
                   help="tpe in mode asha or steady-state: draw each proposal after the start-up ones uniformly "
                        "from the space with probability F (BOHB's hedge, which uses 1/3; default 0)")
    s.add_argument("--noise-level", type=v.number(0, 0.999), default=None, metavar="T",
                   help="tpe in mode asha or steady-state: after the start-up proposals, propose at random while the "
                        "results carry no signal - until the best final-fidelity loss beats their median by more "
                        "than T times the median (0.005: half a percent); TPE then takes over (default: 0.005 for "
                        "the default search, else off; 0 turns it off)")
    s.add_argument("--restart-promotions", dest="continue_promotions", action="store_false",
                   help="asha: train a promoted candidate again from scratch instead of continuing it from its "
                        "checkpoint (the result is the same; a continued promotion is charged only the epochs "
                        "after its checkpoint)")
    s.add_argument("--crossover-rate", type=v.probability(), default=0.5, help="0 to 1 (default 0.5)")
    s.add_argument("--mutation-rate", type=v.probability(), default=0.8, help="0 to 1 (default 0.8)")
    s.add_argument("--initial", nargs="*", type=v.genotype(), default=[], metavar="GENOTYPE",
                   help="genotypes to seed generation 0 (inside the search space)")
    _add_space_options(search)
    s.add_argument("--output", type=v.new_file, default=None, metavar="FILE",
                   help="also write the search's result (JSON) here")
    s.add_argument("--run-dir", type=v.dir_to_create, default=None,
                   help="the run directory (default runs/search-TIME-PID); must be new")
    s.add_argument("--resume", type=v.existing_dir, default=None, metavar="RUN_DIR",
                   help="continue the search journaled in RUN_DIR (its settings come from the journal)")
    s.add_argument("--cache", type=v.file_to_create, default=None, metavar="PATH",
                   help="a result cache shared across runs (SQLite file)")
    s.add_argument("--no-dashboard-mirror", dest="dashboard_mirror", action="store_false",
                   help="do not mirror the evaluations into RUN_DIR/optuna-journal.log, what `evovae dashboard` "
                        "serves (docs/dashboard.md)")
    d = add_distribution_options(search)
    d.add_argument("--in-process", action="store_true", help="train in this process: no sockets, no workers")
    d.add_argument("--simulate-workers", type=v.whole(1, 100_000), default=0, metavar="N",
                   help="with --in-process: train every task here, one after another, but deliver the results in "
                        "the order N parallel workers would (simulated clock from the measured training seconds), "
                        "so the search decides as it would on N workers; result.json records the simulated time")
    _add_training_options(search, epochs=2)
    _add_log_options(search)

    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _setup_torch(args: argparse.Namespace) -> None:
    from gpuworker.train import set_threads

    set_threads(args.threads or None)


def cmd_train(args: argparse.Namespace) -> int:
    try:  # within the search space's bounds: a 20-digit width is refused here, not by torch
        genotype = v.trainable_genotype(args.genotype)
    except GenotypeError as exc:
        raise UsageError(str(exc)) from None
    spec = spec_of(args)
    _setup_torch(args)
    from gpuworker.train import check_device

    try:
        check_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    from gpuworker.data import DataError
    from gpuworker.train import evaluate

    try:
        result = evaluate(genotype, spec, device=args.device, data_root=args.data_root, download=args.download,
                          test=True)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    m = result.measurement
    print(f"genotype {genotype}  parameters {m.params:,}  device {m.device}")
    for epoch, loss in enumerate(m.curve, 1):
        print(f"epoch {epoch:3d}  validation loss {loss:.3f}")
    if not result.ok:
        print(f"failed: {result.error}")
        return 1
    print(f"validation loss {m.loss:.3f} (recon {m.recon:.3f} + KL {m.kl:.3f}) nats per example")
    print(f"test loss {m.test_loss:.3f} (recon {m.test_recon:.3f} + KL {m.test_kl:.3f}) nats per example")
    print(f"trained in {m.seconds:.1f}s")
    return 0


def cmd_search(args: argparse.Namespace, defaults: dict | None = None) -> int:
    from . import search as cli_search

    return cli_search.run(args, defaults)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def _delegate(name: str, argv: Sequence[str]) -> int:
    import importlib

    module, _, function = DELEGATED[name][0].partition(":")
    return getattr(importlib.import_module(module), function)(list(argv))


def _given(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The options written on the command line (their dests), whatever their values: a resume names each one
    its journal overrides, also one given at its default value."""
    given = set()
    for action in parser._actions:
        for flag in action.option_strings:
            if any(token == flag or token.startswith(flag + "=") for token in argv):
                given.add(action.dest)
    return given


def _settings(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any] | int:
    """``evovae search --config FILE``: the file's [search] table made the defaults; returns the parser's own
    defaults as they were before (a resumed search names what it ignores, also from the file), or 2."""
    from ..cmdline.settings import SettingsError, apply_settings

    search = _subparser(parser, "search")
    defaults = {a.dest: a.default for a in search._actions}
    try:
        apply_settings(search, argv, "search")
    except SettingsError as exc:
        print(f"evovae: error: {exc}", file=sys.stderr)
        return 2
    return defaults


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in DELEGATED:  # these parse their own options
        return _delegate(argv[0], argv[1:])
    parser = _parser()
    defaults = _settings(parser, argv[1:]) if argv[:1] == ["search"] else {}
    if isinstance(defaults, int):
        return defaults
    args = v.parse_args(parser, argv)  # each value checked: one line and status 2 for a bad one
    if isinstance(args, int):
        return args
    if args.command == "search":
        args.given = _given(_subparser(parser, "search"), argv[1:])
    if args.command == "search" and args.config:
        args.config_values = {a.dest: a.default for a in _subparser(parser, "search")._actions
                              if a.default != defaults.get(a.dest)}
    from ..cmdline.log_setup import configure

    configure(args.log_format, args.log_level, role=args.command)
    try:
        if args.command == "search":
            return cmd_search(args, defaults)
        return cmd_train(args)
    except UsageError as exc:
        print(f"evovae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evovae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
