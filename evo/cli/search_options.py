"""What ``evovae search``'s options mean together: the configuration of a new search (:func:`config_of`, checked
as the strategy takes it, each refusal naming its flag), the checks made before anything is created, and the
options a resumed search ignores because its journal fixes them."""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING, Any

from gpuworker.data_options import input_dim, spec_from_args

from ..genotype import Genotype, GenotypeError, parse_genotype
from ..multifidelity import parse_fidelities
from ..search_config import SearchConfig
from ..space import SPACE_FIELDS, SearchSpace, space_for
from ..spec import TrainSpec
from ..strategies import DEFAULT_NOISE_LEVEL, DEFAULT_RUNG_AGREEMENT, OptionError, StrategyOptions

if TYPE_CHECKING:
    from pathlib import Path

    from ..head.cluster import ClusterOptions

__all__ = ["DEFAULT_STRATEGY", "SEARCH_KEYS", "UsageError", "check_device",
           "check_options", "cluster_options_of", "config_of", "default_strategy", "genotype_arg",
           "ignored_on_resume", "resume_command", "space_of", "spec_of"]

#: The options that define a search (stored in its journal; a resumed run takes them from there).
SEARCH_KEYS = ("strategy", "mode", "population", "offspring", "generations", "crossover_rate", "mutation_rate",
               "initial", "max_layers", "seed", "dataset", "epochs", "batch_size", "lr", "train_subset", "val_size",
               "split_seed", "budget_epochs", "fidelities", "eta", "tournament_size", "startup_trials",
               "likelihood", "data_sha256", "columns", "image_size", "operators", "continue_promotions",
               "brackets", "rung_agreement", "random_fraction", "noise_level", "min_layers", "width_min", "width_max",
               "width_step", "latent_min", "latent_max", "latent_step", "missing")

#: the proposer of a search that names no strategy (docs/experiments.md, "The default"); the paper's evolution
#: where an option only it has is given
DEFAULT_STRATEGY = "tpe"


class UsageError(Exception):
    """Bad input from the person at the keyboard: one line, exit status 2."""


def spec_of(args: argparse.Namespace) -> TrainSpec:
    try:  # own data is read, fingerprinted and split here, as the workers will (gpuworker/data_options.py)
        return spec_from_args(args, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              train_subset=args.train_subset, val_size=args.val_size, split_seed=args.split_seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def genotype_arg(text: str) -> Genotype:
    try:
        return parse_genotype(text)
    except GenotypeError as exc:
        raise UsageError(str(exc)) from None


def default_strategy(args: argparse.Namespace) -> None:
    """Fill in what a new search left to the defaults: 5 generations unless an end is given. With neither
    ``--strategy`` nor ``--mode`` (nor ``--initial``): the default search, TPE under asynchronous Hyperband
    (mode asha, rungs E/eta^2, E/eta, E of ``--epochs`` E or ``--fidelities``, one bracket per rung, rung
    agreement DEFAULT_RUNG_AGREEMENT; TPE at full fidelity, steady state, when E is too small for two rungs),
    TPE random while its results carry no signal (noise level DEFAULT_NOISE_LEVEL) - docs/experiments.md says
    why. Otherwise what
    the options always meant: ``--strategy`` unset is TPE with rungs (0.3 x E, E) at E >= 3 in mode
    generational, evolution with mode steady-state or ``--initial``; asha's rungs E/eta^2, E/eta, E; one
    bracket."""
    if args.generations is None and args.budget_epochs is None:
        args.generations = 5
    chosen = args.strategy is None and args.mode is None and not args.initial
    if chosen:
        args.strategy, args.mode = DEFAULT_STRATEGY, "asha"
        if args.fidelities is None and len(_asha_rungs(args.epochs, args.eta)) < 2:
            args.mode = "steady-state"  # one epoch: nothing to halve
    args.mode = args.mode or "generational"
    if args.mode == "asha" and args.fidelities is None:
        args.fidelities = _asha_rungs(args.epochs, args.eta)
    if args.brackets is None:
        args.brackets = len(args.fidelities) if chosen and args.mode == "asha" else 1
    if args.rung_agreement is None and chosen and args.mode == "asha" and args.brackets > 1:
        args.rung_agreement = DEFAULT_RUNG_AGREEMENT
    if args.noise_level is None and chosen:  # TPE, in mode asha or (one epoch) steady-state
        args.noise_level = DEFAULT_NOISE_LEVEL
    if args.strategy is not None:
        return
    if args.mode == "steady-state" or args.initial:  # the paper's steady-state future work; seeded generation 0
        args.strategy = "evolution"
        return
    args.strategy = DEFAULT_STRATEGY
    if args.fidelities is None and args.mode == "generational" and args.epochs >= 3:
        args.fidelities = [max(1, round(0.3 * args.epochs)), args.epochs]


def _asha_rungs(epochs: int, eta: int) -> list[int]:
    """E/eta^2, E/eta, E (rounded, at least 1, without repeats)."""
    return sorted({max(1, round(epochs / eta ** k)) for k in (2, 1, 0)})


def _flag(field: str) -> str:
    return f"--{field.replace('_', '-')}"


def space_of(args: argparse.Namespace, features: int | None = None) -> tuple[SearchSpace, str]:
    """The search space of the options (``--min-layers`` ... ``--latent-step``; not given: the paper's) for
    data of ``features`` input dimensions (None: not read yet), and the note of the latent cap ("" if none):
    :func:`evo.space.space_for`. UsageError (one line naming the options) for a combination that makes no grid."""
    try:
        return space_for({field: getattr(args, field, None) for field in SPACE_FIELDS}, features, _flag)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _initial(args: argparse.Namespace, space: SearchSpace) -> tuple[Genotype, ...]:
    try:  # also from a --config file, whose lists argparse does not check
        return tuple(space.validate(parse_genotype(text)) for text in args.initial)
    except GenotypeError as exc:
        raise UsageError(f"--initial: {exc}") from None


def config_of(args: argparse.Namespace) -> SearchConfig:
    """A new search's configuration from its options, checked as the strategy will take them (UsageError
    naming the option). Own data is read, fingerprinted and split here, once; the search space's latent is
    kept below the data's input dimension unless ``--latent-max`` is given (one note on stderr says so)."""
    default_strategy(args)
    spec = spec_of(args)
    try:
        features = input_dim(spec, args.data_root)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    space, note = space_of(args, features)
    if note:
        print(f"evovae: note: {note}", file=sys.stderr, flush=True)
    initial = _initial(args, space)
    try:
        options = StrategyOptions(
            strategy=args.strategy, population=args.population, offspring=args.offspring,
            generations=args.generations, budget_epochs=args.budget_epochs, epochs=args.epochs,
            fidelities=parse_fidelities(args.fidelities) if isinstance(args.fidelities, str) else
            tuple(args.fidelities or ()), eta=args.eta, mode=args.mode,
            tournament_size=args.tournament_size, startup_trials=args.startup_trials,
            crossover_rate=args.crossover_rate, mutation_rate=args.mutation_rate,
            initial=initial, seed=args.seed,
            operators=args.operators, continue_promotions=args.continue_promotions, brackets=args.brackets,
            rung_agreement=args.rung_agreement, random_fraction=args.random_fraction,
            noise_level=args.noise_level)
    except OptionError as exc:
        raise UsageError(f"--{exc.option.replace('_', '-')}: {exc.message}") from None
    return SearchConfig(options, spec, space)


def check_options(args: argparse.Namespace) -> None:
    """What the options say together, for a new search (each value was checked while parsing; a resumed one
    takes them from its journal). UsageError naming the options; nothing is created or read here."""
    if args.simulate_workers and not args.in_process:
        raise UsageError(f"--simulate-workers {args.simulate_workers} simulates workers in this process: give "
                         "--in-process too")
    if args.in_process and args.local_workers:
        raise UsageError(f"--local-workers {args.local_workers} starts worker processes, --in-process trains here "
                         "without any: give one of them")
    if args.resume:
        return
    space, _ = space_of(args)  # the data is not read yet: the latent is capped in config_of
    initial = [str(g) for g in _initial(args, space)]
    twice = sorted({g for g in initial if initial.count(g) > 1})
    if twice:
        raise UsageError(f"--initial gives {', '.join(twice)} more than once; give each genotype once")
    if len(initial) > args.population:
        raise UsageError(f"--initial gives {len(initial)} genotypes, more than --population {args.population} holds")


def check_device(name: str | None) -> None:
    if not name or name == "cpu":
        return
    from gpuworker.train import check_device

    try:
        check_device(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_data_here(args: argparse.Namespace, spec: TrainSpec) -> None:
    """The data the in-process trainer needs, loaded now, before any run directory exists."""
    from gpuworker.data import DataError, splits
    from gpuworker.train import set_threads

    set_threads(args.threads or None)
    try:
        splits(spec, root=args.data_root, download=args.download)
    except DataError as exc:
        raise UsageError(str(exc)) from None


def cluster_options_of(args: argparse.Namespace) -> ClusterOptions:
    """The cluster's options, checked even with --in-process (the key files are read here)."""
    from ..head.cluster import Cluster, ClusterError
    from .distribution import cluster_options

    try:
        options = cluster_options(args)
        if not args.in_process or args.server_key_secret or args.allow:
            Cluster(options)  # reads the key files: bad security options fail before anything is created
        return options
    except ClusterError as exc:
        raise UsageError(str(exc)) from None


#: the options whose flag is not their name
_FLAGS = {"continue_promotions": "--restart-promotions"}


def ignored_on_resume(args: argparse.Namespace, defaults: dict[str, Any]) -> list[str]:
    """The options given (on the command line, even at their default value, or in the ``--config`` file) that
    a resumed run takes from its journal instead (and ``--run-dir``: the run directory is RUN_DIR)."""
    from_file = getattr(args, "config_values", None) or {}
    on_line = getattr(args, "given", None)
    ignored = []
    for key in (*SEARCH_KEYS, "run_dir"):
        if key == "generations" or key not in defaults:
            continue
        written = key in on_line if on_line is not None else getattr(args, key) != defaults[key]
        in_file = key in from_file and getattr(args, key) == from_file[key]
        if not (written or in_file):
            continue
        flag = _FLAGS.get(key, f"--{key.replace('_', '-')}")
        ignored.append(f"{flag} (from {args.config})" if in_file and not written else flag)
    return ignored


def resume_command(args: argparse.Namespace, run_dir: Path) -> str:
    """The command that resumes a search stopped before its end: its run directory, and the options the journal
    does not keep (the cache, the data's location, where the training happens); a cluster's other options
    (endpoints, keys, worker arguments) are given again as before."""
    words = ["evovae", "search", "--resume", str(run_dir)]
    for flag, value in (("--cache", args.cache), ("--data-root", args.data_root),
                        ("--simulate-workers", args.simulate_workers)):
        if value:
            words += [flag, str(value)]
    if args.download:
        words.append("--download")
    if args.in_process:
        words.append("--in-process")
    elif args.local_workers:
        words += ["--local-workers", str(args.local_workers)]
    return shlex.join(words)
