"""``evovae export``, ``evovae sample``, ``evovae reconstruct``: the command lines of
:mod:`gpuworker.export` (model directories: save, load, retrain, sample, reconstruct)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gpuworker.data import splits
from gpuworker.data_options import DATA_KEYS, DataOptionError, add_data_options, spec_from_args
from gpuworker.export import ModelDirError, export_best, load_model
from gpuworker.train import check_device, set_threads

from ..cmdline import validate as v
from ..genotype import GenotypeError, parse_genotype
from ..spec import TrainSpec

__all__ = ["main_export", "main_reconstruct", "main_sample"]


def _log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", default="auto", choices=("auto", "console", "json"))
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))


def _configure(args: argparse.Namespace, role: str) -> None:
    from ..cmdline.log_setup import configure

    configure(args.log_format, args.log_level, role=role)


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


#: what --out may end in: the image formats the grids are written in (Pillow's), or a table's rows
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _output(info: dict, out: str | None, stem: str) -> str:
    """``--out`` for this model (default STEM.png, or STEM.csv for a model of a table); ValueError (one line)
    for a name it cannot be written as."""
    table = _is_table(info)
    if out is None:
        return f"{stem}.csv" if table else f"{stem}.png"
    suffix = Path(out).suffix.lower()
    if table and suffix != ".csv":
        raise ValueError(f"--out {out}: a model of a table writes rows as CSV; give a name ending in .csv")
    if not table and suffix not in _IMAGE_SUFFIXES:
        raise ValueError(f"--out {out}: a model of images writes a picture; give a name ending in "
                         f"{', '.join(_IMAGE_SUFFIXES)}")
    return out


def _cannot_write(exc: OSError, out: str | None) -> str:
    return f"cannot write {exc.filename or out}: {exc.strerror or exc}"


def _is_table(info: dict) -> bool:
    return len(info["input_shape"]) == 1


def _columns(info: dict) -> list[str]:
    data = info.get("data")
    return list(data.get("columns") or []) if isinstance(data, dict) else []


def main_sample(argv: Sequence[str] | None = None) -> int:
    """``evovae sample MODEL_DIR``: a PNG grid of the means of p(x|z), z ~ N(0, I); rows of a CSV for a table."""
    from gpuworker.export import standardisation_of
    from gpuworker.figures import as_images, sample_images, save_grid, write_rows

    p = v.OneLineParser(prog="evovae sample", description="Draw samples from p(x|z), z ~ N(0, I).")
    p.add_argument("model_dir", type=v.existing_dir, metavar="MODEL_DIR")
    p.add_argument("--out", type=v.file_to_create, default=None,
                   help="file to write (default samples.png; samples.csv for a model of a table)")
    p.add_argument("--n", type=v.whole(1, 10_000), default=64, help="number of samples, 1 to 10000 (default 64)")
    p.add_argument("--nrow", type=v.whole(1, 1000), default=8, help="images per row, 1 to 1000 (default 8)")
    p.add_argument("--seed", type=v.SEED, default=0)
    p.add_argument("--device", type=v.device, default="cpu")
    _log_options(p)
    args = v.parse_args(p, argv)  # each value checked: one line and status 2 for a bad one
    if isinstance(args, int):
        return args
    _configure(args, "sample")
    try:
        check_device(args.device)
        model, info = load_model(args.model_dir, args.device)
        out = _output(info, args.out, "samples")
    except (ModelDirError, ValueError) as exc:
        return _fail(p.prog, str(exc))
    rows = sample_images(model, args.n, args.seed, standardisation_of(info))
    try:
        if _is_table(info):
            written = write_rows(rows, _columns(info), out)
        else:
            written = save_grid(as_images(rows, info["input_shape"]), out, nrow=args.nrow)
    except OSError as exc:
        return _fail(p.prog, _cannot_write(exc, args.out))
    print(f"wrote {args.n} samples of {info['genotype']} to {written}")
    return 0


def main_reconstruct(argv: Sequence[str] | None = None) -> int:
    """``evovae reconstruct MODEL_DIR``: test examples (or those of ``--data FILE``) beside their reconstructions
    (PNG rows, or CSV rows); ``--out FILE.npy`` writes the reconstructions themselves."""
    from gpuworker.data import DataError
    from gpuworker.export import standardisation_of
    from gpuworker.figures import as_images, reconstruction_rows, reconstruction_table, save_grid, write_rows

    from .inference import existing_data, load_with_data

    p = v.OneLineParser(prog="evovae reconstruct",
                        description="Write examples beside their reconstructions (mean decode of mu): the model's "
                                    "test split, or every example of --data FILE.")
    p.add_argument("model_dir", type=v.existing_dir, metavar="MODEL_DIR")
    p.add_argument("--data", type=existing_data, default=None, metavar="FILE",
                   help="reconstruct the examples of this file or folder, of the kind the model was trained on "
                        "(default: the test split of the model's own data)")
    p.add_argument("--out", type=v.file_to_create, default=None,
                   help="file to write (default recon.png; recon.csv for a model of a table); FILE.npy: the "
                        "reconstructions as an array [N, ...] in the data's units")
    p.add_argument("--n", type=v.whole(1, 10_000_000), default=None,
                   help="examples (default: 32 for a picture; with --data every example for .npy and .csv; the first "
                        "N of the test set otherwise)")
    p.add_argument("--nrow", type=v.whole(1, 1000), default=8, help="images per row, 1 to 1000 (default 8)")
    p.add_argument("--data-root", type=v.data_root, default=None,
                   help="where the model's data is looked for besides its recorded path (see docs/data.md)")
    p.add_argument("--download", action="store_true")
    p.add_argument("--device", type=v.device, default="cpu")
    _log_options(p)
    args = v.parse_args(p, argv)  # each value checked: one line and status 2 for a bad one
    if isinstance(args, int):
        return args
    loaded = load_with_data(args, "reconstruct")
    if isinstance(loaded, str):
        return _fail(p.prog, loaded)
    model, rows = loaded
    info = model.info
    as_array = args.out is not None and Path(args.out).suffix.lower() == ".npy"
    try:
        out = args.out if as_array else _output(info, args.out, "recon")
    except ValueError as exc:
        return _fail(p.prog, str(exc))
    if rows is None:
        spec = TrainSpec.from_dict(info["spec"])
        try:
            rows = splits(spec, "cpu", args.data_root, args.download).test
        except DataError as exc:
            message = str(exc)
            if not spec.builtin and "no copy of the data" in message:  # the head's words: say them for this command
                message = (f"the test split of this model is carved from its training data {spec.dataset}, which is "
                           f"not there or has changed since (SHA-256 {spec.data_sha256[:12]}...); reconstruct a file "
                           "of your own with --data FILE, or give --data-root DIR holding a copy")
            return _fail(p.prog, message)
        if rows.shape[1] != model.input_dim:
            return _fail(p.prog, f"test examples have {rows.shape[1]} values, the model takes {model.input_dim}")
        rows = rows.to(model.device)
    whole = args.data is not None and (as_array or _is_table(info))
    count = args.n or (len(rows) if whole else 32)
    rows = rows[:count]
    source = args.data or "test examples"
    try:
        if as_array:
            import numpy as np

            Path(out).parent.mkdir(parents=True, exist_ok=True)
            np.save(out, model.reconstruct_rows(rows))
            examples = f"{len(rows)} example{'' if len(rows) == 1 else 's'}"
            print(f"wrote the reconstructions of {examples} of {source} by {info['genotype']} to {out}")
            return 0
        stats = standardisation_of(info)
        if _is_table(info):
            table, labels = reconstruction_table(model.vae, rows, stats)
            written = write_rows(table, _columns(info), out, labels=labels)
        else:
            grid = reconstruction_rows(model.vae, rows, nrow=args.nrow, standardisation=stats)
            written = save_grid(as_images(grid, info["input_shape"]), out, nrow=args.nrow)
    except OSError as exc:
        return _fail(p.prog, _cannot_write(exc, args.out))
    print(f"wrote {len(rows)} {'examples of ' + source if args.data else source} and their reconstructions by "
          f"{info['genotype']} to {written}")
    return 0


def main_export(argv: Sequence[str] | None = None) -> int:
    """``evovae export --genotype G [...] --out DIR``: retrain and save each genotype as OUT/rank-N/."""
    from gpuworker.data import DataError

    p = v.OneLineParser(prog="evovae export",
                        description="Retrain genotypes (best first) and save them as OUT/rank-N/.")
    p.add_argument("--genotype", action="append", type=v.genotype(bounded=True), default=[], metavar="G",
                   help="a genotype in the paper's notation, e.g. '850|20|1000' (repeat, best first)")
    p.add_argument("--run", type=v.existing_dir, default=None, metavar="RUN_DIR",
                   help="instead of --genotype: the best --top genotypes of a search's run directory, on its data "
                        "set, split and training settings (only --epochs differs)")
    p.add_argument("--top", type=v.whole(1, 1000), default=3,
                   help="with --run: how many of the best to export, 1 to 1000 (default 3)")
    p.add_argument("--out", type=v.dir_to_create, required=True, metavar="DIR")
    p.add_argument("--epochs", type=v.EPOCHS, default=20, help="training epochs (default 20, the paper's retraining)")
    p.add_argument("--batch-size", type=v.BATCH_SIZE, default=128)
    p.add_argument("--lr", type=v.LEARNING_RATE, default=1e-3)
    p.add_argument("--seed", type=v.SEED, default=0)
    p.add_argument("--train-subset", type=v.TRAIN_SUBSET, default=0, metavar="N")
    p.add_argument("--val-size", type=v.VAL_SIZE, default=None,
                   help="validation examples (default as for evovae train: 10,000, or a fifth of own data's)")
    p.add_argument("--split-seed", type=v.SEED, default=0)
    p.add_argument("--iw-samples", type=v.whole(0, 1_000_000), default=0, metavar="K",
                   help="also measure the test split's importance-weighted bound with K samples (the field: 5000)")
    add_data_options(p)
    p.add_argument("--device", type=v.device, default=None)
    p.add_argument("--processes", type=v.whole(1, 256), default=1,
                   help="retrain this many models at once (CPU; 1 to 256, default 1)")
    p.add_argument("--threads", type=v.THREADS, default=0, help="torch CPU threads (per process)")
    _log_options(p)
    args = v.parse_args(p, argv)  # each value checked: one line and status 2 for a bad one
    if isinstance(args, int):
        return args
    _configure(args, "export")
    if bool(args.run) == bool(args.genotype):
        return _fail(p.prog, "give either --run RUN_DIR or --genotype G (one or more), not both or neither")
    if args.run:
        from ..head.journal import JournalError, RunJournal
        from ..search_config import SearchConfig
        from ..selection import rank

        try:
            journal = RunJournal.open(args.run, readonly=True)  # a head may be running it
        except JournalError as exc:
            return _fail(p.prog, str(exc))
        try:
            best = rank(journal.results().values())[:max(1, args.top)]
        finally:
            journal.close()
        if not best:
            return _fail(p.prog, f"{args.run} has no successful evaluation to export yet")
        args.genotype = [str(e.genotype) for e in best]
        stored = SearchConfig.from_dict(journal.config).spec  # the run's training spec (any journal form)
        for key in ("batch_size", "lr", "seed", "train_subset", "val_size", "split_seed", *DATA_KEYS):
            setattr(args, key, getattr(stored, key))
    try:
        check_device(args.device)
        genotypes = [parse_genotype(g) for g in args.genotype]
        spec = spec_from_args(args, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              train_subset=args.train_subset, val_size=args.val_size, split_seed=args.split_seed,
                              report_test=args.iw_samples > 0, iw_samples=args.iw_samples)
    except (GenotypeError, DataOptionError, ValueError) as exc:
        return _fail(p.prog, str(exc))
    if args.processes == 1:
        set_threads(args.threads or None)
    try:
        splits(spec, "cpu", args.data_root, args.download)  # fail fast on missing data
    except DataError as exc:
        return _fail(p.prog, str(exc))
    try:  # made now, when everything was checked: an --out that cannot be made fails before any training
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(p.prog, f"--out {args.out}: cannot create it ({exc.strerror or exc})")
    try:
        infos = export_best(genotypes, spec, args.out, args.epochs, device=args.device, data_root=args.data_root,
                            download=args.download, processes=args.processes)
    except DataError as exc:
        return _fail(p.prog, str(exc))
    for n, info in enumerate(infos, 1):
        losses = info["losses"]
        test = losses["test"].get("loss")
        test_text = f"{test:.2f}" if test is not None else "n/a"
        if losses["test"].get("iw_loss") is not None:
            test_text += f" (IW bound, k={spec.iw_samples}: {losses['test']['iw_loss']:.2f})"
        val = losses["validation"]["loss"]
        val_text = f"{val:.2f}" if val is not None else f"failed: {info['error']}"
        print(f"rank-{n}  {info['genotype']:<28} params {info['parameters']:>10,}  val {val_text}  "
              f"test {test_text}  -> {info['path']}")
    return 0
