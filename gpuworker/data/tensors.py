"""The fixed train/validation/test split of a spec's data, as float tensors on the device (cached per process).

Built-in sets: ``val_size`` images carved from the training set by ``torch.randperm`` seeded with
``split_seed``, the data set's own test set kept for reports. Own data: split and standardised by
:func:`gpuworker.data.own.prepare` (numpy), then moved to the device. With ``likelihood='gaussian'`` every
feature is standardised with the mean and standard deviation of the training split; they travel with the
Splits (and so with a saved model) to map samples back.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

from evo.spec import TrainSpec

from .base import DataError, default_root
from .builtin import load_images
from .own import prepare, standardisation

__all__ = ["Splits", "splits"]

log = structlog.get_logger(__name__)

_CACHE_SIZE = 4
_cache: OrderedDict[tuple, Splits] = OrderedDict()


@dataclass(frozen=True)
class Splits:
    """Training, validation and test examples, flattened to rows of floats: in [0, 1] for ``bernoulli``,
    standardised (``mean``, ``std`` per feature, of the training split) for ``gaussian``."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    shape: tuple[int, ...]
    likelihood: str = "bernoulli"
    kind: str = "images"
    columns: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    missing: dict[str, Any] | None = None

    @property
    def input_dim(self) -> int:
        return int(self.train.shape[1])

    def description(self) -> dict[str, Any]:
        """What a saved model needs to know of its data (JSON-friendly): kind, shape, columns, standardisation,
        and what the missing rule did (``missing``: rule, cells, examples, and for ``mean`` the fill values in
        the data's units; None when the data had no missing values)."""
        return {"kind": self.kind, "shape": list(self.shape), "columns": list(self.columns),
                "likelihood": self.likelihood,
                "standardisation": {"mean": list(self.mean), "std": list(self.std)} if self.mean else None,
                "missing": self.missing}


def _builtin(spec: TrainSpec, root: str, download: bool, device: str) -> Splits:
    train_u8, test_u8, shape = load_images(spec.dataset, root, download)
    if spec.val_size >= len(train_u8):
        raise DataError(f"val_size {spec.val_size} leaves no training images out of {len(train_u8)} in "
                        f"{spec.dataset!r}; pass a smaller --val-size")
    if spec.train_subset > len(train_u8) - spec.val_size:
        raise DataError(f"--train-subset {spec.train_subset}: {spec.dataset!r} has only "
                        f"{len(train_u8) - spec.val_size} training images after the {spec.val_size} of the "
                        f"validation split; give at most that, or 0 for all")
    order = torch.randperm(len(train_u8), generator=torch.Generator().manual_seed(spec.split_seed))
    val_idx, train_idx = order[:spec.val_size], order[spec.val_size:]

    def to_device(images: torch.Tensor) -> torch.Tensor:
        return images.reshape(len(images), -1).to(device=device, dtype=torch.float32).div_(255.0)

    if spec.likelihood == "bernoulli":
        subset = train_idx[:spec.train_subset] if spec.train_subset else train_idx
        return Splits(to_device(train_u8[subset]), to_device(train_u8[val_idx]), to_device(test_u8), shape)
    train = to_device(train_u8[train_idx])
    mean, std = (torch.from_numpy(v).to(device) for v in standardisation(train.cpu().numpy()))
    train_part, val_part, test_part = ((part - mean) / std
                                       for part in (train, to_device(train_u8[val_idx]), to_device(test_u8)))
    if spec.train_subset:
        train_part = train_part[:spec.train_subset]
    return Splits(train_part, val_part, test_part, shape, "gaussian", "images", (), tuple(mean.tolist()),
                  tuple(std.tolist()))


def _own(spec: TrainSpec, root: str, device: str) -> Splits:
    p = prepare(spec, root)

    def to_device(rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(rows).to(device=device)

    mean = tuple(float(v) for v in p.mean) if p.mean is not None else ()
    std = tuple(float(v) for v in p.std) if p.std is not None else ()
    return Splits(to_device(p.train), to_device(p.val), to_device(p.test), p.shape, spec.likelihood, p.kind,
                  p.columns, mean, std, p.missing)


def splits(spec: TrainSpec, device: torch.device | str = "cpu", root: str | Path | None = None,
           download: bool = False) -> Splits:
    """The fixed train/validation/test split of ``spec`` on ``device`` (cached per process).

    Own data is keyed by its fingerprint, not its path: a hit is the very data the head fingerprinted."""
    root = str(root or default_root())
    data = ((spec.data_sha256, spec.columns, spec.image_size, spec.missing) if not spec.builtin
            else (spec.dataset, root, download))
    key = (*data, spec.likelihood, spec.val_size, spec.split_seed, spec.train_subset, str(device))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    made = _builtin(spec, root, download, str(device)) if spec.builtin else _own(spec, root, str(device))
    log.info("data.split", dataset=spec.dataset, kind=made.kind, likelihood=made.likelihood, train=len(made.train),
             validation=len(made.val), test=len(made.test), features=made.input_dim)
    _cache[key] = made
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return made
