"""``evovae export``, ``evovae sample``, ``evovae reconstruct``: the command lines of
:mod:`gpuworker.export` (model directories: save, load, retrain, sample, reconstruct)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


from ..genotype import GenotypeError, parse_genotype
from ..spec import DATASETS, TrainSpec

from gpuworker.data import splits
from gpuworker.export import ModelDirError, export_best, load_model
from gpuworker.train import set_threads

__all__ = ["main_export", "main_reconstruct", "main_sample"]


def _log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", default="auto", choices=("auto", "console", "json"))
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))


def _configure(args: argparse.Namespace, role: str) -> None:
    from .log_setup import configure

    configure(args.log_format, args.log_level, role=role)


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def main_sample(argv: Sequence[str] | None = None) -> int:
    """``evovae sample MODEL_DIR``: a PNG grid of sigmoid(decode(z)), z ~ N(0, I)."""
    from gpuworker.figures import as_images, save_grid, sample_images

    p = argparse.ArgumentParser(prog="evovae sample", description="Draw samples from p(x|z), z ~ N(0, I).")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--out", default="samples.png", help="PNG to write (default samples.png)")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--nrow", type=int, default=8, help="images per row (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    _log_options(p)
    args = p.parse_args(argv)
    _configure(args, "sample")
    if args.n < 1 or args.nrow < 1:
        return _fail(p.prog, "--n and --nrow must be >= 1")
    try:
        model, info = load_model(args.model_dir, args.device)
    except ModelDirError as exc:
        return _fail(p.prog, str(exc))
    images = as_images(sample_images(model, args.n, args.seed), info["input_shape"])
    save_grid(images, args.out, nrow=args.nrow)
    print(f"wrote {args.n} samples of {info['genotype']} to {args.out}")
    return 0


def main_reconstruct(argv: Sequence[str] | None = None) -> int:
    """``evovae reconstruct MODEL_DIR``: test images (odd rows) above their reconstructions (even rows)."""
    from gpuworker.data import DataError
    from gpuworker.figures import as_images, reconstruction_rows, save_grid

    p = argparse.ArgumentParser(prog="evovae reconstruct",
                                description="Write test images beside their reconstructions (mean decode of mu).")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--out", default="recon.png", help="PNG to write (default recon.png)")
    p.add_argument("--n", type=int, default=32, help="test images (default 32, the first N of the test set)")
    p.add_argument("--nrow", type=int, default=8, help="images per row (default 8)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    p.add_argument("--device", default="cpu")
    _log_options(p)
    args = p.parse_args(argv)
    _configure(args, "reconstruct")
    if args.n < 1 or args.nrow < 1:
        return _fail(p.prog, "--n and --nrow must be >= 1")
    try:
        model, info = load_model(args.model_dir, args.device)
        spec = TrainSpec.from_dict(info["spec"])
        test = splits(spec, "cpu", args.data_root, args.download).test
    except (ModelDirError, DataError) as exc:
        return _fail(p.prog, str(exc))
    if test.shape[1] != model.input_dim:
        return _fail(p.prog, f"test images have {test.shape[1]} pixels, the model takes {model.input_dim}")
    rows = reconstruction_rows(model, test[:args.n], nrow=args.nrow)
    save_grid(as_images(rows, info["input_shape"]), args.out, nrow=args.nrow)
    print(f"wrote {min(args.n, len(test))} test images and their reconstructions by {info['genotype']} to {args.out}")
    return 0


def main_export(argv: Sequence[str] | None = None) -> int:
    """``evovae export --genotype G [...] --out DIR``: retrain and save each genotype as OUT/rank-N/."""
    from gpuworker.data import DataError

    p = argparse.ArgumentParser(prog="evovae export",
                                description="Retrain genotypes (best first) and save them as OUT/rank-N/.")
    p.add_argument("--genotype", action="append", default=[], metavar="G",
                   help="a genotype in the paper's notation, e.g. '850|20|1000' (repeat, best first)")
    p.add_argument("--run", default=None, metavar="RUN_DIR",
                   help="instead of --genotype: the best --top genotypes of a search's run directory, on its data "
                        "set, split and training settings (only --epochs differs)")
    p.add_argument("--top", type=int, default=3, help="with --run: how many of the best to export (default 3)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20, the paper's retraining)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-subset", type=int, default=0, metavar="N")
    p.add_argument("--val-size", type=int, default=10_000)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--processes", type=int, default=1, help="retrain this many models at once (CPU; default 1)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (per process)")
    _log_options(p)
    args = p.parse_args(argv)
    _configure(args, "export")
    if bool(args.run) == bool(args.genotype):
        return _fail(p.prog, "give either --run RUN_DIR or --genotype G (one or more), not both or neither")
    if args.run:
        from ..head.journal import JournalError, RunJournal
        from ..selection import rank

        try:
            journal = RunJournal.open(args.run)
        except JournalError as exc:
            return _fail(p.prog, str(exc))
        try:
            best = rank(journal.results().values())[:max(1, args.top)]
        finally:
            journal.close()
        if not best:
            return _fail(p.prog, f"{args.run} has no successful evaluation to export yet")
        args.genotype = [str(e.genotype) for e in best]
        for key in ("dataset", "batch_size", "lr", "seed", "train_subset", "val_size", "split_seed"):
            setattr(args, key, journal.config.get(key, getattr(args, key)))
    try:
        genotypes = [parse_genotype(g) for g in args.genotype]
        spec = TrainSpec(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, train_subset=args.train_subset, val_size=args.val_size,
                         split_seed=args.split_seed)
    except (GenotypeError, ValueError) as exc:
        return _fail(p.prog, str(exc))
    if args.processes < 1:
        return _fail(p.prog, "--processes must be >= 1")
    if args.processes == 1:
        set_threads(args.threads or None)
    try:
        splits(spec, "cpu", args.data_root, args.download)  # fail fast on missing data
        infos = export_best(genotypes, spec, args.out, args.epochs, device=args.device, data_root=args.data_root,
                            download=args.download, processes=args.processes)
    except DataError as exc:
        return _fail(p.prog, str(exc))
    for n, info in enumerate(infos, 1):
        losses = info["losses"]
        test = losses["test"].get("loss")
        test_text = f"{test:.2f}" if test is not None else "n/a"
        val = losses["validation"]["loss"]
        val_text = f"{val:.2f}" if val is not None else f"failed: {info['error']}"
        print(f"rank-{n}  {info['genotype']:<28} params {info['parameters']:>10,}  val {val_text}  "
              f"test {test_text}  -> {info['path']}")
    return 0
