"""Checks of command-line values, shared by every ``evovae`` command.

Each ``evovae`` command declares its options with the ``type=`` functions of this module, so a bad value is
refused while the options are parsed - before anything is created, bound or started - in one line that
names the option and the values it takes::

    p = OneLineParser(prog="evovae worker")
    p.add_argument("--heartbeat", type=HEARTBEAT, default=1.0)
    args = parse_args(p, argv)            # an int (the exit status) when the options were refused
    # evovae worker: error: argument --heartbeat: expected a finite number of seconds from 0.05 to 3600,
    # got '-1' (see evovae worker --help)

A ``type=`` function gets the text of one option (or a value of a ``--config`` file: an int, a float or a
str) and returns the value, or raises :class:`OptionError` (an ``argparse.ArgumentTypeError`` that is also
a ValueError, so a settings file reports it too). Checks that join several options, or that need the
data, are the commands' own; they raise ValueError subclasses with the option's name in the message.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from transport.protocol import ID_PATTERN

from ..genotype import Genotype, GenotypeError, parse_genotype
from ..space import SearchSpace

__all__ = ["BATCH_SIZE", "BIND", "CONNECT", "EPOCHS", "HEARTBEAT", "LEARNING_RATE", "LEASE", "LIVENESS",
           "LOCAL_WORKERS", "MAX_ATTEMPTS", "MAX_LATENT", "MAX_LAYERS", "MAX_SEED", "MAX_WIDTH", "SEED", "THREADS",
           "TRAIN_SUBSET", "VAL_SIZE", "WIDEST",
           "OneLineParser", "OptionError", "choice_list", "data_root", "device", "dir_to_create", "endpoint",
           "existing_dir", "file_to_create", "genotype", "new_file", "number", "parse_args",
           "probability", "seconds", "seed", "trainable_genotype", "whole", "whole_list", "worker_id"]

#: Seeds (of a search, of the validation split, of sampling) are 0 .. 2**32 - 1, as numpy's legacy seeding takes.
MAX_SEED = 2**32 - 1

#: The largest search space the options allow (``evovae search --max-layers/--width-max/--latent-max``), and so
#: the largest genotype ``evovae train`` and ``export`` take (:func:`trainable_genotype`).
MAX_LAYERS = 20
MAX_WIDTH = 10_000
MAX_LATENT = 10_000
WIDEST = SearchSpace(max_layers=MAX_LAYERS, width_min=1, width_max=MAX_WIDTH, width_step=1, latent_min=1,
                     latent_max=MAX_LATENT, latent_step=1)

_DEVICE = re.compile(r"(cpu|mps|meta|(cuda|xpu)(:[0-9]{1,3})?)")
_WORKER_ID = re.compile(ID_PATTERN)  # the id travels on the wire: the protocol's rule


class OptionError(argparse.ArgumentTypeError, ValueError):
    """A value an option does not take: argparse prints ``argument --NAME: MESSAGE`` in one line."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bounds(lo: float | None, hi: float | None, *, lo_open: bool = False, hi_open: bool = False) -> str:
    lo_text, hi_text = (f"{x:g}" if isinstance(x, float) else str(x) for x in (lo, hi))
    if lo is not None and hi is not None and not (lo_open or hi_open):
        return f"from {lo_text} to {hi_text}"
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo_text}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi_text}")
    return " and ".join(parts)


def _named(function: Callable[[Any], Any], name: str) -> Callable[[Any], Any]:
    function.__name__ = name  # argparse names the type in a few of its own messages
    return function


# ---------------------------------------------------------------------------------------------- numbers

def whole(lo: int | None = 0, hi: int | None = None, *, what: str = "a whole number") -> Callable[[Any], int]:
    """A whole number in ``lo..hi`` (None: unbounded): ``'12'`` or a settings file's 12; ``'1.5'``, ``'1e3'``,
    ``'nan'`` and a bool are refused."""
    allowed = f"{what} {_bounds(lo, hi)}".strip()

    def check(text: Any) -> int:
        if isinstance(text, bool) or not isinstance(text, (int, str)):
            raise OptionError(f"expected {allowed}, got {_shown(text)}")
        if isinstance(text, str):
            stripped = text.strip()
            if not re.fullmatch(r"[+-]?[0-9]{1,30}", stripped):
                raise OptionError(f"expected {allowed}, got {_shown(text)}")
            value = int(stripped)
        else:
            value = text
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise OptionError(f"expected {allowed}, got {_shown(text)}")
        return value

    return _named(check, "whole number")


def seed() -> Callable[[Any], int]:
    """A seed: a whole number from 0 to 2**32 - 1."""
    return whole(0, MAX_SEED, what="a seed: a whole number")


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
           what: str = "a finite number") -> Callable[[Any], float]:
    """A finite float in the range (``lo_open``/``hi_open``: that end excluded); NaN and infinities refused."""
    allowed = f"{what} {_bounds(lo, hi, lo_open=lo_open, hi_open=hi_open)}".strip()

    def check(text: Any) -> float:
        if isinstance(text, bool) or not isinstance(text, (int, float, str)):
            raise OptionError(f"expected {allowed}, got {_shown(text)}")
        try:
            value = float(text)
        except (ValueError, OverflowError):
            raise OptionError(f"expected {allowed}, got {_shown(text)}") from None
        if not math.isfinite(value):
            raise OptionError(f"expected {allowed}, got {_shown(text)}")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise OptionError(f"expected {allowed}, got {_shown(text)}")
        if hi is not None and (value > hi or (hi_open and value == hi)):
            raise OptionError(f"expected {allowed}, got {_shown(text)}")
        return value

    return _named(check, "number")


def probability() -> Callable[[Any], float]:
    """A probability: a finite number from 0 to 1."""
    return number(0.0, 1.0, what="a probability: a number")


def seconds(lo: float = 0.0, hi: float | None = 86_400.0, *, zero: bool = False) -> Callable[[Any], float]:
    """A duration in seconds, > ``lo`` (>= with ``zero``) and <= ``hi`` (a day unless given)."""
    return number(lo, hi, lo_open=not zero, what="a finite number of seconds")


def whole_list(lo: int = 1, *, increasing: bool = False, example: str = "2,5") -> Callable[[Any], str]:
    """Comma-separated whole numbers >= ``lo`` (strictly increasing with ``increasing``); returns the text
    normalised (``' 1, 3,9'`` -> ``'1,3,9'``), as the commands store it."""
    allowed = f"comma-separated whole numbers >= {lo}{', strictly increasing' if increasing else ''}, e.g. {example}"

    def check(text: Any) -> str:
        items = str(text).split(",") if isinstance(text, (str, int)) and not isinstance(text, bool) else None
        if not items or not all(re.fullmatch(r"[0-9]{1,9}", item.strip()) for item in items):
            raise OptionError(f"expected {allowed}, got {_shown(text)}")
        values = [int(item) for item in items]
        if min(values) < lo or (increasing and any(b <= a for a, b in itertools.pairwise(values))):
            raise OptionError(f"expected {allowed}, got {_shown(text)}")
        return ",".join(map(str, values))

    return _named(check, "list")


def choice_list(choices: Collection[str]) -> Callable[[Any], str]:
    """Comma-separated names, each one of ``choices``, none twice; returns the text normalised."""
    def check(text: Any) -> str:
        names = [name.strip() for name in str(text).split(",")] if isinstance(text, str) else []
        unknown = [name for name in names if name not in choices]
        if not names or unknown or len(set(names)) != len(names):
            why = f"unknown {', '.join(map(repr, unknown))}; " if unknown else ""
            raise OptionError(f"{why}expected comma-separated names (each once) from {', '.join(choices)}, "
                              f"got {_shown(text)}")
        return ",".join(names)

    return _named(check, "list")


# ---------------------------------------------------------------------------------------------- names

def worker_id(text: Any) -> str:
    """A worker id as the wire protocol takes it: 1-128 characters of A-Z a-z 0-9 _ . : -"""
    if not isinstance(text, str) or not _WORKER_ID.fullmatch(text):
        raise OptionError(f"expected 1-128 characters of A-Z a-z 0-9 _ . : - (no spaces or control characters), "
                          f"got {_shown(text)}")
    return text


def device(text: Any) -> str:
    """A torch device: cpu, cuda, cuda:N, mps, xpu, xpu:N."""
    if not isinstance(text, str) or not _DEVICE.fullmatch(text):
        raise OptionError(f"expected a torch device: cpu, cuda, cuda:N, mps, xpu or xpu:N, got {_shown(text)}")
    return text


def endpoint(*, bind: bool) -> Callable[[Any], str]:
    """A ZeroMQ endpoint: ``tcp://HOST:PORT`` (to bind, HOST may be ``*`` and PORT ``*``: any free port),
    ``ipc://PATH`` or ``inproc://NAME``."""
    example = "tcp://*:5557, tcp://127.0.0.1:*" if bind else "tcp://head-node:5557"
    allowed = f"an endpoint tcp://HOST:PORT (e.g. {example}), ipc://PATH or inproc://NAME"

    def check(text: Any) -> str:
        if not isinstance(text, str) or any(c.isspace() or not c.isprintable() for c in text) or len(text) > 1024:
            raise OptionError(f"expected {allowed}, got {_shown(text)}")
        scheme, sep, rest = text.partition("://")
        if sep and scheme in ("ipc", "inproc") and rest:
            return text
        host, colon, port = rest.rpartition(":")
        ok_port = (port.isdigit() and 1 <= int(port) <= 65535) or (bind and port == "*")
        ok_host = bool(host) and (bind or "*" not in host)
        if not (sep and scheme == "tcp" and colon and ok_host and ok_port):
            why = " (a port is 1-65535)" if port.isdigit() else ""
            raise OptionError(f"expected {allowed}{why}, got {_shown(text)}")
        return text

    return _named(check, "endpoint")


# ---------------------------------------------------------------------------------------------- paths

def _path_text(text: Any) -> str:
    if not isinstance(text, str) or not text or "\0" in text or len(text) > 4096:
        raise OptionError(f"expected a path, got {_shown(text)}")
    return text


def existing_dir(text: Any) -> str:
    """The path of a directory that exists (it is never created)."""
    path = Path(_path_text(text)).expanduser()
    if not path.exists():
        raise OptionError(f"no such directory {text}")
    if not path.is_dir():
        raise OptionError(f"{text} is not a directory")
    return text


def data_root(text: Any) -> str:
    """``--data-root``: a directory that exists; never created, also not with ``--download`` (a typo would
    fill a new directory)."""
    try:
        return existing_dir(text)
    except OptionError as exc:
        raise OptionError(f"{exc}; create it first, or leave the option out") from None


def _writable_ancestor(text: str, path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a directory this process may write in."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OptionError(f"{text}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OptionError(f"{text}: no permission to write in {ancestor}")


def new_file(text: Any) -> str:
    """A file to write (at the end): in a directory that exists and may be written, not itself a directory."""
    path = Path(_path_text(text)).expanduser()
    if path.is_dir():
        raise OptionError(f"{text} is a directory; give the path of a file")
    if not path.parent.is_dir():
        raise OptionError(f"{text}: the directory {path.parent} does not exist; create it first")
    _writable_ancestor(text, path)
    return text


def file_to_create(text: Any) -> str:
    """A file that may exist or be created, with any missing parent directories (a cache): not a directory,
    and the nearest existing parent a directory that may be written."""
    path = Path(_path_text(text)).expanduser()
    if path.is_dir():
        raise OptionError(f"{text} is a directory; give the path of a file")
    _writable_ancestor(text, path)
    return text


def dir_to_create(text: Any) -> str:
    """A directory to write in, created with its parents if missing: not an existing file, and the nearest
    existing parent a directory that may be written (whether it may hold something already is the command's
    rule: a search's run directory must be new, an export's output need not)."""
    path = Path(_path_text(text)).expanduser()
    if path.exists() and not path.is_dir():
        raise OptionError(f"{text} exists and is not a directory")
    _writable_ancestor(text, path / "x" if path.is_dir() else path)
    return text


# ---------------------------------------------------------------------------------------------- genotypes

def genotype(space: SearchSpace | None = None, *, bounded: bool = False) -> Callable[[Any], str]:
    """A genotype in the paper's notation (``850|20|1000``), inside ``space`` when one is given, within its
    bounds with ``bounded`` (:func:`trainable_genotype`); returns the text, normalised (``' 850 | 20|1000'``
    -> ``'850|20|1000'``)."""
    def check(text: Any) -> str:
        try:
            parsed = trainable_genotype(text) if bounded else parse_genotype(text)
            if space is not None:
                space.validate(parsed)
        except GenotypeError as exc:
            raise OptionError(str(exc)) from None
        return str(parsed)

    return _named(check, "genotype")


def trainable_genotype(text: Any, space: SearchSpace = WIDEST) -> Genotype:
    """A genotype to train on its own (``evovae train``, ``evovae export``): any positive widths and latent
    size, but none above the largest a search may use (:data:`WIDEST`), and no more layers than it allows -
    so a 20-digit width is refused here, not by torch. GenotypeError (one line) otherwise."""
    parsed = parse_genotype(text)
    problems = [f"{name} has {len(net)} hidden layers" for name, net in (("the encoder", parsed.encoder),
                                                                         ("the decoder", parsed.decoder))
                if len(net) > space.max_layers]
    problems += [f"width {w}" for w in (*parsed.encoder, *parsed.decoder) if w > space.width_max][:1]
    if parsed.latent > space.latent_max:
        problems.append(f"latent size {parsed.latent}")
    if problems:
        raise GenotypeError(f"genotype {text!r} is too large: {', '.join(problems)}; widths 1..{space.width_max}, "
                            f"latent size 1..{space.latent_max}, 1..{space.max_layers} hidden layers per network")
    return parsed


# ---------------------------------------------------------------------------------------------- parsing

def _dash_genotype(argv: Sequence[str]) -> str | None:
    """The message for an argument that starts with '-' and looks like a genotype (``-1|20|100``): argparse
    would take it for an option it does not know and print its usage."""
    for arg in argv:
        if arg == "--":
            return None
        if isinstance(arg, str) and arg.startswith("-") and "|" in arg and "=" not in arg:
            try:
                parse_genotype(arg)
            except GenotypeError as exc:
                return str(exc)
    return None


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``PROG: error: MESSAGE (see PROG --help)``, exit status 2;
    sub-command parsers made with ``add_subparsers`` are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args: Iterable[str] | None = None,
                         namespace: Any = None) -> tuple[Any, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        message = _dash_genotype(argv)
        if message:
            self.exit(2, f"{self.prog}: error: {message}\n")
        return super().parse_known_args(argv, namespace)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """``parser.parse_args(argv)``, or the exit status argparse ended with (2 after its one-line error, 0 after
    ``--help``), so a command's ``main(argv)`` returns its status instead of raising SystemExit."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


# ---------------------------------------------------------------------------------------------- shared kinds
# The values that mean the same in every command, with the same limits everywhere.

EPOCHS = whole(1, 100_000)                                  #: --epochs (and each epoch count of a list)
BATCH_SIZE = whole(1, 1_000_000)                            #: --batch-size
LEARNING_RATE = number(0.0, 10.0, lo_open=True, hi_open=True)  #: --lr (TrainSpec's rule: 0 < lr < 10)
SEED = seed()                                               #: --seed, --split-seed
TRAIN_SUBSET = whole(0, 10**12)                             #: --train-subset (0: all)
VAL_SIZE = whole(1, 10**12)                                 #: --val-size
THREADS = whole(0, 4096)                                    #: --threads (0: the cores available)
LOCAL_WORKERS = whole(0, 1024)                              #: --local-workers
HEARTBEAT = number(0.05, 3600.0, what="a finite number of seconds")  #: --heartbeat (a smaller one floods the head)
LEASE = number(1.0, 10**7, what="a finite number of seconds")        #: --lease
LIVENESS = whole(1, 1000)                                   #: --liveness
MAX_ATTEMPTS = whole(1, 1000)                               #: --max-attempts (transport.protocol.MAX_ATTEMPT)
BIND = endpoint(bind=True)                                  #: --bind, --sink-bind
CONNECT = endpoint(bind=False)                              #: --connect, --sink
