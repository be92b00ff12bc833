"""``evovae encode`` and ``evovae score``: a saved model applied to a new file of the kind it was trained on
(gpuworker/inference.py: the file read as the training data was, its preprocessing applied from model.json).

``evovae encode MODEL --data FILE --out latents.npy`` writes the encoder's means (``.npz``: ``mean`` and
``log_var``); ``evovae score MODEL --data FILE`` prints the negative ELBO and the negative importance-weighted
bound in nats per example, their means or (``--per-example``, ``--out FILE.csv``) each example's. Data of
another shape, or a table without the model's columns, is one line naming what differs, exit status 2.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cmdline import validate as v

if TYPE_CHECKING:
    from gpuworker.inference import Model

__all__ = ["add_model_data_options", "load_with_data", "main_encode", "main_score"]


def existing_data(text: Any) -> str:
    """``--data``: a file or folder that exists."""
    if not isinstance(text, str) or not text or "\0" in text:
        raise v.OptionError(f"{text!r} is not a path")
    if not Path(text).expanduser().exists():
        raise v.OptionError(f"no such file or folder {text}")
    return text


def add_model_data_options(p: argparse.ArgumentParser, *, data_required: bool = True) -> None:
    p.add_argument("model_dir", type=v.existing_dir, metavar="MODEL_DIR")
    p.add_argument("--data", type=existing_data, required=data_required, default=None, metavar="FILE",
                   help="a file or folder of the kind the model was trained on (.npy/.npz, a folder of images, a "
                        "CSV/Parquet table with the model's columns): every example of it (an .npz's train part, "
                        "then its test part)")
    p.add_argument("--device", type=v.device, default="cpu")
    p.add_argument("--log-format", default="auto", choices=("auto", "console", "json"))
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def load_with_data(args: argparse.Namespace, role: str) -> tuple[Model, Any] | str:
    """The model of ``args.model_dir`` and the rows of ``args.data`` as it takes them (None without --data), or
    the one-line reason why not."""
    from gpuworker.data import DataError
    from gpuworker.export import ModelDirError
    from gpuworker.inference import InputError, Model, examples_of_file
    from gpuworker.train import check_device

    from ..cmdline.log_setup import configure

    configure(args.log_format, args.log_level, role=role)
    try:
        check_device(args.device)
        model = Model.load(args.model_dir, args.device)
    except (ModelDirError, ValueError) as exc:
        return str(exc)
    if args.data is None:
        return model, None
    try:
        rows = model.rows(examples_of_file(args.data, model), name=args.data)
    except (DataError, InputError) as exc:
        return str(exc)
    return model, rows


def main_encode(argv: Sequence[str] | None = None) -> int:
    """``evovae encode MODEL_DIR --data FILE --out latents.npy``."""
    import numpy as np

    p = v.OneLineParser(prog="evovae encode",
                        description="Encode every example of a file with a saved model: the means (and log-variances) "
                                    "of q(z|x).")
    add_model_data_options(p)
    p.add_argument("--out", type=v.new_file, required=True, metavar="FILE",
                   help="FILE.npy: the latent means [N, latent]; FILE.npz: arrays mean and log_var")
    args = v.parse_args(p, argv)
    if isinstance(args, int):
        return args
    suffix = Path(args.out).suffix.lower()
    if suffix not in (".npy", ".npz"):
        return _fail(p.prog, f"--out {args.out}: give a name ending in .npy (the latent means) or .npz (arrays mean "
                             "and log_var)")
    loaded = load_with_data(args, "encode")
    if isinstance(loaded, str):
        return _fail(p.prog, loaded)
    model, rows = loaded
    mean, log_var = model.encode_rows(rows)
    try:
        with open(args.out, "wb") as fh:
            if suffix == ".npy":
                np.save(fh, mean)
            else:
                np.savez(fh, mean=mean, log_var=log_var)
    except OSError as exc:
        return _fail(p.prog, f"cannot write {args.out}: {exc.strerror or exc}")
    what = "latent means" if suffix == ".npy" else "latent means and log-variances"
    examples = f"{len(mean)} example{'' if len(mean) == 1 else 's'}"
    print(f"wrote the {what} of {examples} of {args.data} (latent {model.latent}, {model.genotype}) to "
          f"{args.out}")
    return 0


def main_score(argv: Sequence[str] | None = None) -> int:
    """``evovae score MODEL_DIR --data FILE``: negative ELBO and negative IW bound, nats per example."""
    p = v.OneLineParser(prog="evovae score",
                        description="Score every example of a file with a saved model: the negative ELBO and the "
                                    "negative importance-weighted bound, in nats per example (lower is better).")
    add_model_data_options(p)
    p.add_argument("--k", type=v.whole(0, 1_000_000), default=100,
                   help="importance samples of the IW bound per example (default 100; papers use 5000; 0: skip it)")
    p.add_argument("--seed", type=v.SEED, default=0, help="seed of the z samples (default 0)")
    p.add_argument("--per-example", action="store_true",
                   help="print each example's figures as CSV (example,negative_elbo,negative_iw_bound_kK)")
    p.add_argument("--out", type=v.new_file, default=None, metavar="FILE.csv", help="write each example's figures here")
    args = v.parse_args(p, argv)
    if isinstance(args, int):
        return args
    loaded = load_with_data(args, "score")
    if isinstance(loaded, str):
        return _fail(p.prog, loaded)
    model, rows = loaded
    elbo = model.elbo_rows(rows, seed=args.seed)
    iw = model.iw_bound_rows(rows, k=args.k, seed=args.seed) if args.k else None
    header = ["example", "negative_elbo"] + ([f"negative_iw_bound_k{args.k}"] if iw is not None else [])
    table = [[str(i), f"{-float(elbo[i]):.6g}"] + ([f"{-float(iw[i]):.6g}"] if iw is not None else [])
             for i in range(len(elbo))]
    if args.out:
        try:
            with open(args.out, "w", newline="") as fh:
                _write(fh, header, table)
        except OSError as exc:
            return _fail(p.prog, f"cannot write {args.out}: {exc.strerror or exc}")
    units = "nats per example (standardised features)" if model.likelihood == "gaussian" else "nats per example"
    line = f"{args.data}: {len(elbo)} example{'' if len(elbo) == 1 else 's'}  negative ELBO {-float(elbo.mean()):.3f}"
    if iw is not None:
        line += f"  negative IW bound (k={args.k}) {-float(iw.mean()):.3f}"
    try:
        if args.per_example:
            _write(sys.stdout, header, table)
        print(f"{line}  {units}, by {model.genotype}" + (f"; per example in {args.out}" if args.out else ""))
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `| head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
    return 0


def _write(fh: Any, header: list[str], table: list[list[str]]) -> None:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(table)
