"""The data options of every command that trains, serves or exports - the head's (evo/cli) and the worker's
(gpuworker/cli.py): declared once, read once, here beside the data they read.

``add_data_options(parser)`` declares ``--dataset`` (a built-in name or the path of a NumPy file, a folder
of images or a CSV/Parquet table), ``--columns``, ``--image-size``, ``--likelihood``, ``--missing``,
``--data-root`` and ``--download``. ``spec_from_args(args, epochs=..., ...)`` builds the TrainSpec: it reads
own data once (numpy only: the head needs no torch), takes its fingerprint, resolves the default likelihood and splits
the data as every worker will, so bad data is one line (:class:`DataOptionError`, a ValueError) before
anything is created. ``check_worker_data(args)`` is a worker's start-up check. A ``--val-size`` not given
(None) is resolved here, in one place (:func:`default_val_size`).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from evo.cmdline.validate import data_root
from evo.spec import DATASETS, LIKELIHOODS, MISSING_RULES, TrainSpec, is_builtin

__all__ = ["BUILTIN_INPUT_DIMS", "BUILTIN_TRAIN_SIZES", "DATA_KEYS", "DEFAULT_VAL_SIZE", "DataOptionError",
           "add_data_options", "check_split", "check_worker_data", "data_fields", "default_val_size", "input_dim",
           "spec_from_args"]

#: The TrainSpec fields the data options decide (journal them with a search: ``data_fields`` sets them on args).
DATA_KEYS = ("dataset", "data_sha256", "columns", "image_size", "likelihood", "missing")

#: The validation split of the built-in sets when --val-size is not given (their task ids depend on it).
DEFAULT_VAL_SIZE = 10_000

#: The values per example of each built-in set (what the model takes in; the images flattened).
BUILTIN_INPUT_DIMS = {"fashion-mnist": 784, "mnist": 784, "kmnist": 784, "cifar10": 3 * 32 * 32, "synthetic": 16 * 16}

#: The training images of each built-in set (before the validation split; checked against the loaded sets by
#: tests/test_data_options_sizes.py), so a head without torch can refuse a split they cannot give.
BUILTIN_TRAIN_SIZES = {"fashion-mnist": 60_000, "mnist": 60_000, "kmnist": 60_000, "cifar10": 50_000,
                       "synthetic": 12_000}

_PLACEHOLDER_SHA = "0" * 64


def default_val_size(examples: int | None, preferred: int = DEFAULT_VAL_SIZE) -> int:
    """The validation split when ``--val-size`` is not given: ``preferred`` for a built-in set (``examples``
    None); for own data with ``examples`` examples (of its training part) a fifth of them, at most
    ``preferred`` and at least 1 - so a 569-row table validates on 113 rows (and, having no test part of its
    own, tests on 113 more) instead of being refused."""
    if examples is None:
        return preferred
    return max(1, min(preferred, examples // 5))


class DataOptionError(ValueError):
    """Bad data or bad data options: one line naming the file or option and what to do (exit status 2)."""


def add_data_options(parser: argparse.ArgumentParser, *, dataset_default: str | None = "fashion-mnist",
                     title: str = "data (see docs/data.md)", likelihood: bool = True,
                     missing: bool | None = None) -> argparse._ArgumentGroup:
    """Declare the data options on ``parser`` (in a group of their own) and return the group; ``likelihood``
    False leaves ``--likelihood`` out, ``missing`` False ``--missing`` (None: as ``likelihood``; a worker
    takes both from each task)."""
    g = parser.add_argument_group(title)
    default = f" (default {dataset_default})" if dataset_default else ""
    g.add_argument("--dataset", default=dataset_default, metavar="NAME|PATH",
                   help=f"a built-in data set ({', '.join(DATASETS)}){default}, or your own: a .npy/.npz file, a "
                        "folder of PNG/JPEG images, or a .csv/.tsv/.parquet table of numeric columns")
    g.add_argument("--columns", default="", metavar="A,B,...", help="a table's columns to use (default: all)")
    g.add_argument("--image-size", default="", metavar="H,W",
                   help="resize a folder's images to H x W (needed when they differ in size)")
    if likelihood:
        g.add_argument("--likelihood", default=None, choices=LIKELIHOODS,
                       help="p(x|z): bernoulli (BCE on values in [0, 1]; the default for images) or gaussian (unit "
                            "variance on features standardised on the training split; the default for tables)")
    if likelihood if missing is None else missing:
        g.add_argument("--missing", default=None, choices=MISSING_RULES,
                       help="missing values in a table (empty cells, NA, NaN, null, ...) or NaN in a float array: "
                            "error (refuse the data, naming the first; the default), drop (leave out the examples "
                            "holding one) or mean (fill each with its column's mean over the training split)")
    g.add_argument("--data-root", type=data_root, default=None, metavar="DIR",
                   help="where built-in sets live and where a worker also looks for own data by its file name; an "
                        "existing directory, never created (default ~/.cache/evovae/data or $EVOVAE_DATA_ROOT)")
    g.add_argument("--download", action="store_true", help="download a built-in data set if missing (needs internet)")
    return g


def _check_root(args: argparse.Namespace) -> None:
    root = getattr(args, "data_root", None)  # never created, also not with --download (evo.cmdline.validate.data_root)
    if root and not Path(root).expanduser().is_dir():
        raise DataOptionError(f"--data-root {root}: no such directory; create it first, or leave the option out")


def data_fields(args: argparse.Namespace, *, val_size: int = DEFAULT_VAL_SIZE) -> dict[str, Any]:
    """The TrainSpec fields the data options give, own data read and fingerprinted (numpy only).

    Sets them back on ``args`` (``dataset`` as an absolute path, the resolved ``likelihood``, the
    ``data_sha256``), so a search that journals :data:`DATA_KEYS` keeps them. An ``args.data_sha256``
    already set (a resumed search) must match the data as it is now. An ``args.val_size`` of None (not
    given) becomes :func:`default_val_size` of the data, ``val_size`` preferred (an experiment's preset)."""
    _check_root(args)
    dataset = args.dataset
    columns, image_size = getattr(args, "columns", "") or "", getattr(args, "image_size", "") or ""
    missing = getattr(args, "missing", None) or "error"
    if not dataset:
        raise DataOptionError("--dataset is needed: a built-in name or the path of your data")
    if is_builtin(dataset):
        for flag, value in (("--columns", columns), ("--image-size", image_size),
                            ("--missing", "" if missing == "error" else missing)):
            if value:
                raise DataOptionError(f"{flag} only applies to data of your own, not to the built-in {dataset}")
        fields = {"dataset": dataset, "likelihood": getattr(args, "likelihood", None) or "bernoulli",
                  "missing": missing}
        _set(args, fields, default_val_size(None, val_size))
        return fields
    path = Path(dataset).expanduser()
    if not path.exists():
        raise DataOptionError(f"--dataset {dataset}: neither a built-in data set ({', '.join(DATASETS)}) nor an "
                              "existing file or folder; check the path")
    try:  # the format options, normalised and checked before any data is read
        probe = TrainSpec(dataset=str(path), data_sha256=_PLACEHOLDER_SHA, columns=columns, image_size=image_size,
                          missing=missing)
    except ValueError as exc:
        raise DataOptionError(str(exc).replace("columns ", "--columns ", 1).replace("image_size ", "--image-size ", 1)
                              ) from None
    from .data import DataError, read_own
    from .data.own import usable_examples

    try:
        raw = read_own(path, probe.columns, probe.image_size)
    except DataError as exc:
        raise DataOptionError(str(exc)) from None
    if raw.kind == "images" and missing != "error":
        raise DataOptionError(f"--missing {missing} only applies to tables and arrays of numbers: a folder of "
                              "images has no missing values")
    expected = getattr(args, "data_sha256", "") or ""
    if expected and expected != raw.sha256:
        raise DataOptionError(f"{path}: has changed since this run was started (SHA-256 {expected[:12]}... then, "
                              f"{raw.sha256[:12]}... now); put the original back, or start a new run")
    fields = {"dataset": str(path.resolve()), "data_sha256": raw.sha256, "columns": probe.columns,
              "image_size": probe.image_size, "likelihood": getattr(args, "likelihood", None) or raw.default_likelihood,
              "missing": missing}
    _set(args, fields, default_val_size(usable_examples(raw, missing), val_size))
    return fields


def _set(args: argparse.Namespace, fields: dict[str, Any], val_size: int) -> None:
    for key in DATA_KEYS:
        setattr(args, key, fields.get(key, "error" if key == "missing" else ""))
    if hasattr(args, "val_size") and args.val_size is None:  # not given: the default that fits the data
        args.val_size = val_size


def spec_from_args(args: argparse.Namespace, **training: Any) -> TrainSpec:
    """``TrainSpec(**training, **data_fields(args))``, checked against the data: own data is split (and
    standardised) as every worker will split it, so too few rows or values outside [0, 1] for
    ``bernoulli`` are one line here. DataOptionError (a ValueError) on anything wrong."""
    fields = data_fields(args)
    if "val_size" in training and training["val_size"] is None:
        training["val_size"] = args.val_size
    try:
        spec = TrainSpec(**training, **fields)
    except ValueError as exc:
        raise DataOptionError(str(exc)) from None
    check_split(spec, args.data_root)
    return spec


def input_dim(spec: TrainSpec, data_root: str | None = None) -> int:
    """The values per example the model of ``spec`` takes in (own data: as read, numpy only, from the copy
    :func:`data_fields` read; DataOptionError if it cannot be found)."""
    if spec.builtin:
        return BUILTIN_INPUT_DIMS[spec.dataset]
    from .data import DataError, locate

    try:
        shape = locate(spec, data_root).shape
    except DataError as exc:
        raise DataOptionError(str(exc)) from None
    dim = 1
    for size in shape:
        dim *= int(size)
    return dim


def check_split(spec: TrainSpec, data_root: str | None = None, *, subset_given: bool = True) -> None:
    """Own data of ``spec`` split (and standardised) as every worker will split it: too few rows for its
    ``val_size``, values outside [0, 1] for ``bernoulli``, or (``subset_given``: the person asked for it) a
    ``--train-subset`` larger than the training rows are a DataOptionError here, before anything is created.
    An experiment's preset subset larger than the data means all of it. A built-in set is not loaded (the head
    has no torch): its split is checked against its known size (:data:`BUILTIN_TRAIN_SIZES`), so a search on
    remote workers only is refused here rather than by every worker."""
    if spec.builtin:
        size = BUILTIN_TRAIN_SIZES.get(spec.dataset)
        if size is None:
            return
        if spec.val_size >= size:
            raise DataOptionError(f"--val-size {spec.val_size} leaves no training images out of {size} in "
                                  f"{spec.dataset}; pass a smaller --val-size")
        if subset_given and spec.train_subset > size - spec.val_size:
            raise DataOptionError(f"--train-subset {spec.train_subset}: {spec.dataset} has only "
                                  f"{size - spec.val_size} training images after the {spec.val_size} of the "
                                  "validation split; give at most that, or 0 for all")
        return
    from .data import DataError, prepare

    try:
        prepared = prepare(spec, data_root)
    except DataError as exc:
        raise DataOptionError(str(exc)) from None
    if subset_given and spec.train_subset > prepared.available:
        raise DataOptionError(f"--train-subset {spec.train_subset}: {spec.dataset} has only {prepared.available} "
                              f"training examples after the {len(prepared.val)} of the validation split; give at "
                              f"most {prepared.available}, or 0 for all")


def check_worker_data(args: argparse.Namespace) -> str:
    """A worker's start-up check of its ``--dataset`` (none given: nothing to check). Returns what it found,
    for the log; DataOptionError with the reason if this node cannot serve it."""
    _check_root(args)
    if not args.dataset:
        return "no --dataset given: the data of each task is checked when it arrives"
    if not is_builtin(args.dataset):
        fields = data_fields(args)
        return f"{fields['dataset']} (SHA-256 {fields['data_sha256'][:12]}...)"
    from .data import DataError, default_root, load_images

    root = str(args.data_root or default_root())
    try:
        train, test, shape = load_images(args.dataset, root, args.download)
    except DataError as exc:
        raise DataOptionError(str(exc)) from None
    return f"{args.dataset} under {root}: {len(train)} training and {len(test)} test images of {tuple(shape)}"
