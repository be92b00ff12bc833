"""Trained models on disk, and the commands that use them.

A model directory holds two files:

* ``weights.pt`` - ``torch.save`` of the model's ``state_dict`` and nothing
  else (tensors only), read back with ``torch.load(..., weights_only=True)``:
  loading never unpickles arbitrary objects;
* ``model.json`` - what the weights mean: the genotype in the paper's text form,
  the input shape, the training spec (with its likelihood), the data (kind,
  table columns, and for a Gaussian model the per-feature mean and standard
  deviation of the training split, to map samples back to the data's units),
  the losses (validation curve, final validation and test negative ELBO with
  their reconstruction and KL parts, and the importance-weighted bound when it
  was measured), the parameter count, the trainer version and the SHA-256 of
  ``weights.pt``.

:func:`load_model` checks all of it (format, checksum, every key and shape of
the state_dict against the VAE the genotype builds) and raises
:class:`ModelDirError` with the reason for a missing, corrupt, tampered or
foreign directory.

Commands (delegated from ``evovae``): ``evovae export`` retrains genotypes and
saves each under ``OUT/rank-N/``; ``evovae sample`` writes a PNG grid of
samples from p(x|z) (rows of a CSV for a table model); ``evovae reconstruct``
writes test examples beside their reconstructions.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog
import torch

from evo.genotype import Genotype, GenotypeError, parse_genotype
from evo.spec import TRAINER_VERSION, TrainSpec

from .data import Splits, splits
from .model import VAE
from .result import TrainResult
from .train import choose_device, measure_test, set_threads, train

__all__ = [
    "DATASET_SHAPES",
    "FORMAT",
    "FORMAT_VERSION",
    "ModelDirError",
    "export_best",
    "load_model",
    "retrain",
    "save_model",
    "standardisation_of",
    "train_and_save",
]

log = structlog.get_logger(__name__)

FORMAT = "evovae-model"
FORMAT_VERSION = 1
WEIGHTS = "weights.pt"
INFO = "model.json"

#: Image shape of each data set (C, H, W or H, W), for models saved without an explicit shape.
DATASET_SHAPES: dict[str, tuple[int, ...]] = {
    "fashion-mnist": (28, 28), "mnist": (28, 28), "kmnist": (28, 28), "cifar10": (3, 32, 32), "synthetic": (16, 16),
}


_UNITS = {
    "bernoulli": "nats per example (negative ELBO = BCE summed over values in [0, 1] + KL, one z sample; "
                 "iw_loss: negative importance-weighted bound)",
    "gaussian": "nats per example (negative ELBO = unit-variance Gaussian -log p(x|z) on standardised features + "
                "KL, one z sample; iw_loss: negative importance-weighted bound)",
}


class ModelDirError(ValueError):
    """A model directory that is missing, corrupt, tampered with or not an evovae model."""


# ------------------------------------------------------------------------------------------ saving

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _product(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def save_model(path_dir: str | Path, model: VAE, genotype: Genotype, spec: TrainSpec, result: TrainResult, *,
               input_shape: Sequence[int] | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``weights.pt`` (the state_dict) and ``model.json`` into ``path_dir``; return the info written.

    ``input_shape`` defaults to the built-in data set's image shape (:data:`DATASET_SHAPES`); ``data`` is
    :meth:`Splits.description` (kind, columns, standardisation), required for a Gaussian model.
    Both files are written to temporary names and renamed, so a crash never
    leaves a half-written model behind a valid ``model.json``.
    """
    if model.genotype != genotype:
        raise ValueError(f"the model was built from {model.genotype}, not {genotype}")
    if input_shape is None and not spec.builtin:
        raise ValueError("a model of your own data needs its input_shape")
    if spec.likelihood == "gaussian" and not (data and data.get("standardisation")):
        raise ValueError("a Gaussian model needs its data's standardisation (data=Splits.description())")
    shape = tuple(int(s) for s in (input_shape if input_shape is not None else DATASET_SHAPES[spec.dataset]))
    if _product(shape) != model.input_dim:
        raise ValueError(f"input shape {shape} has {_product(shape)} pixels, the model takes {model.input_dim}")
    path = Path(path_dir)
    path.mkdir(parents=True, exist_ok=True)
    figures = result.measurement  # finite or None, curves cut before a non-finite point
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    partial = path / f".{WEIGHTS}.{os.getpid()}.partial"
    torch.save(state, partial)
    info: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "genotype": str(genotype),
        "input_shape": list(shape),
        "input_dim": model.input_dim,
        "parameters": model.parameter_count(),
        "trainer_version": TRAINER_VERSION,
        "spec": spec.to_dict(),
        "data": data or {"kind": "images", "shape": list(shape), "columns": [], "likelihood": spec.likelihood,
                         "standardisation": None},
        "losses": {
            "unit": _UNITS[spec.likelihood],
            "validation": {"loss": figures.loss, "recon": figures.recon, "kl": figures.kl},
            "validation_curve": list(figures.curve),
            "train_curve": list(figures.train_curve),
            "test": figures.test,
        },
        "ok": result.ok,
        "error": result.error,
        "seconds": figures.seconds,
        "device": figures.device,
        "torch_version": torch.__version__,
        "weights": WEIGHTS,
        "weights_sha256": _sha256(partial),
    }
    os.replace(partial, path / WEIGHTS)
    partial_info = path / f".{INFO}.{os.getpid()}.partial"
    partial_info.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(partial_info, path / INFO)
    log.info("model.saved", path=str(path), genotype=str(genotype), parameters=info["parameters"])
    return info


# ----------------------------------------------------------------------------------------- loading

def _read_info(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ModelDirError(f"{path}: no such model directory")
    if not path.is_dir():
        raise ModelDirError(f"{path}: not a directory (a model directory holds {INFO} and {WEIGHTS})")
    info_path = path / INFO
    if not info_path.is_file():
        raise ModelDirError(f"{path}: not an evovae model directory ({INFO} is missing; "
                            "write one with `evovae export` or gpuworker.export.save_model)")
    try:
        info = json.loads(info_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{info_path}: corrupt ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise ModelDirError(f"{info_path}: not an evovae model description (format {found!r}, expected {FORMAT!r})")
    version = info.get("format_version")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise ModelDirError(f"{info_path}: model format version {version!r} is not one this evovae reads "
                            f"(1..{FORMAT_VERSION}); upgrade evovae")
    return info


def _check_info(path: Path, info: dict[str, Any]) -> tuple[Genotype, tuple[int, ...], TrainSpec]:
    where = path / INFO
    try:
        genotype = parse_genotype(info.get("genotype"))
    except GenotypeError as exc:
        raise ModelDirError(f"{where}: {exc}") from None
    shape = info.get("input_shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 3
            or not all(type(s) is int and s > 0 for s in shape)):
        raise ModelDirError(f"{where}: input_shape {shape!r} is not a list of 1 to 3 positive integers")
    if info.get("input_dim") != _product(shape):
        raise ModelDirError(f"{where}: input_dim {info.get('input_dim')!r} does not match input_shape {shape}")
    try:
        spec = TrainSpec.from_dict(info.get("spec") or {})
    except (TypeError, ValueError) as exc:
        raise ModelDirError(f"{where}: bad training spec: {exc}") from None
    if spec.likelihood == "gaussian":
        standardisation_of(info, where)  # a Gaussian model is useless without it
    return genotype, tuple(shape), spec


def standardisation_of(info: dict[str, Any], where: str | Path = INFO) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The per-feature (mean, std) a Gaussian model's data was standardised with (None for Bernoulli)."""
    if (info.get("spec") or {}).get("likelihood", "bernoulli") != "gaussian":
        return None
    data = info.get("data")
    stats = data.get("standardisation") if isinstance(data, dict) else None
    dim = info.get("input_dim")
    missing = f"{where}: a Gaussian model needs data.standardisation with mean and std lists"
    if not isinstance(stats, dict):
        raise ModelDirError(missing)
    try:
        mean = torch.tensor(stats["mean"], dtype=torch.float32)
        std = torch.tensor(stats["std"], dtype=torch.float32)
    except (TypeError, KeyError, ValueError, RuntimeError):
        raise ModelDirError(missing) from None
    if mean.shape != (dim,) or std.shape != (dim,) or not torch.isfinite(mean).all() or not (std > 0).all():
        raise ModelDirError(f"{where}: data.standardisation needs {dim} finite means and {dim} positive stds")
    return mean, std


def _read_state(path: Path, info: dict[str, Any]) -> dict[str, torch.Tensor]:
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ModelDirError(f"{path}: {WEIGHTS} is missing")
    expected = info.get("weights_sha256")
    actual = _sha256(weights)
    if actual != expected:
        raise ModelDirError(f"{weights}: SHA-256 {actual[:16]}... does not match {INFO} "
                            f"({str(expected)[:16]}...): the weights were changed or corrupted after saving")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for non-tensor objects, RuntimeError for a broken archive
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelDirError(f"{weights}: cannot be read as a tensors-only state_dict ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelDirError(f"{weights}: does not hold a state_dict (a mapping of names to tensors)")
    return state


def load_model(path_dir: str | Path, device: torch.device | str = "cpu") -> tuple[VAE, dict[str, Any]]:
    """The VAE saved in ``path_dir`` (in eval mode, on ``device``) and its ``model.json``.

    Raises :class:`ModelDirError` for a directory that is missing, corrupt,
    tampered with or foreign: the state_dict must have exactly the keys and
    shapes of the VAE its genotype builds.
    """
    path = Path(path_dir)
    info = _read_info(path)
    genotype, shape, spec = _check_info(path, info)
    state = _read_state(path, info)
    model = VAE(genotype, _product(shape), spec.likelihood)
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(set(wanted) - set(got)), sorted(set(got) - set(wanted))
    wrong = [f"{k} {got[k]} (expected {wanted[k]})" for k in sorted(set(wanted) & set(got)) if got[k] != wanted[k]]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        if wrong:
            parts.append(f"wrong shapes {'; '.join(wrong[:4])}{' ...' if len(wrong) > 4 else ''}")
        raise ModelDirError(f"{path / WEIGHTS}: does not fit genotype {genotype} with {_product(shape)} inputs: "
                            + "; ".join(parts))
    if any(not torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise ModelDirError(f"{path / WEIGHTS}: holds non-finite weights")
    model.load_state_dict(state, strict=True)
    if info.get("trainer_version") != TRAINER_VERSION:
        log.warning("model.trainer_version", path=str(path), saved=info.get("trainer_version"),
                    current=TRAINER_VERSION)
    return model.to(device).eval(), info


# --------------------------------------------------------------------------------------- retraining

def retrain(genotype: Genotype, spec: TrainSpec, *, device: torch.device | str | None = None,
            data_root: str | Path | None = None, download: bool = False) -> tuple[VAE | None, TrainResult, Splits]:
    """Train ``genotype`` as ``spec`` says and measure it on the test set (with the importance-weighted
    bound when ``spec.iw_samples`` > 0).

    Returns the model (None if it could not be built), its result (``result.test`` filled when training
    succeeded) and the data it was trained on. A training failure is a failed result, not an exception.
    """
    device = choose_device(str(device) if device else None)
    data = splits(spec, device, data_root, download)
    model, result = train(genotype, spec, data, device)
    if model is not None and result.ok:
        test = measure_test(model, data, spec.iw_samples, seed=spec.seed)
        result = replace(result, measurement=result.measurement.with_test(test))
    log.info("retrain.done", genotype=str(genotype), epochs=spec.epochs, ok=result.ok,
             val_loss=result.measurement.loss, test_loss=result.measurement.test_loss,
             seconds=round(result.measurement.seconds, 2))
    return model, result, data


def train_and_save(genotype: Genotype | str, spec: TrainSpec, path_dir: str | Path, *,
                   device: torch.device | str | None = None, data_root: str | Path | None = None,
                   download: bool = False) -> dict[str, Any]:
    """:func:`retrain` then :func:`save_model`; returns the ``model.json`` written, plus ``path``."""
    genotype = parse_genotype(genotype) if isinstance(genotype, str) else genotype
    model, result, data = retrain(genotype, spec, device=device, data_root=data_root, download=download)
    if model is None:  # not even built (out of memory): an untrained model stands in, marked failed
        model = VAE(genotype, data.input_dim, spec.likelihood)
    info = save_model(path_dir, model, genotype, spec, result, input_shape=data.shape, data=data.description())
    return {**info, "path": str(path_dir)}


def _pool_init(threads: int, log_format: str, log_level: str) -> None:
    """Set up a spawned retraining process: torch threads and structlog (to stderr)."""
    from evo.cmdline.log_setup import configure

    configure(log_format, log_level, role="retrain")
    set_threads(threads)


def _job(genotype: str, spec: dict, path_dir: str, device: str | None, data_root: str | None,
         download: bool) -> dict[str, Any]:
    """One retraining in a pool process (plain arguments in, plain dict out)."""
    return train_and_save(genotype, TrainSpec.from_dict(spec), path_dir, device=device, data_root=data_root,
                          download=download)


def retrain_many(jobs: Sequence[tuple[Genotype | str, TrainSpec, str | Path]], *, device: str | None = None,
                 data_root: str | Path | None = None, download: bool = False, processes: int = 1,
                 threads_each: int | None = None, log_format: str = "json",
                 log_level: str = "warning") -> list[dict[str, Any]]:
    """Run :func:`train_and_save` for every ``(genotype, spec, path_dir)``, in order of the results.

    With ``processes > 1`` the jobs run in that many fresh (spawned) processes,
    ``threads_each`` torch threads each, largest models first; the results come
    back in the order of ``jobs``. ``log_format``/``log_level`` configure
    structlog in those processes.
    """
    plain = [(str(g), spec.to_dict(), str(p), device, str(data_root) if data_root else None, download)
             for g, spec, p in jobs]
    if processes <= 1 or len(plain) <= 1:
        return [train_and_save(g, TrainSpec.from_dict(s), p, device=d, data_root=r, download=dl)
                for g, s, p, d, r, dl in plain]
    import multiprocessing

    threads = threads_each or max(1, (os.cpu_count() or 1) // processes)
    order = sorted(range(len(plain)), key=lambda i: -parse_genotype(plain[i][0]).parameter_count(784))
    results: list[dict[str, Any] | None] = [None] * len(plain)
    with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_pool_init, initargs=(threads, log_format, log_level)) as pool:
        futures = {i: pool.submit(_job, *plain[i]) for i in order}
        for i, future in futures.items():
            results[i] = future.result()
    return [r for r in results if r is not None]


def export_best(genotypes: Sequence[Genotype | str], spec: TrainSpec, out_dir: str | Path, epochs: int, *,
                device: str | None = None, data_root: str | Path | None = None, download: bool = False,
                processes: int = 1) -> list[dict[str, Any]]:
    """Retrain each genotype (best first) for ``epochs`` epochs with ``spec``'s data and
    seed, and save it under ``out_dir/rank-N/`` (N from 1). Also writes
    ``out_dir/export.json`` listing the ranks. Returns each model's info."""
    if not genotypes:
        raise ValueError("nothing to export: no genotypes given")
    parsed = [parse_genotype(g) if isinstance(g, str) else g for g in genotypes]
    retrain_spec = spec.replace(epochs=epochs)
    out = Path(out_dir)
    jobs = [(g, retrain_spec, out / f"rank-{n}") for n, g in enumerate(parsed, 1)]
    infos = retrain_many(jobs, device=device, data_root=data_root, download=download, processes=processes)
    index = {
        "spec": retrain_spec.to_dict(),
        "models": [{"rank": n, "path": f"rank-{n}", "genotype": info["genotype"],
                    "validation_loss": info["losses"]["validation"]["loss"],
                    "test_loss": info["losses"]["test"].get("loss"), "parameters": info["parameters"]}
                   for n, info in enumerate(infos, 1)],
    }
    (out / "export.json").write_text(json.dumps(index, indent=2) + "\n")
    return infos


# ------------------------------------------------------------------------------------------ commands
