"""The user's own data as the trainer takes it: found on this node, checked against the head's fingerprint,
split and standardised (numpy only, no torch: the head runs the same checks before it creates anything).

Where a node finds the data of a task (``spec.dataset``, fingerprint ``spec.data_sha256``), in order:

1. a copy this process already read with that fingerprint (e.g. the worker's own ``--dataset``);
2. the path the head gave (the same path on every node, e.g. a shared mount);
3. ``DATA_ROOT/NAME``: the file or folder of that name under the node's ``--data-root``.

The first whose content has the fingerprint is used. A copy with other content is never used: the task is
refused with one line naming what was found (DataError), so a worker never trains on the wrong data.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evo.spec import TrainSpec

from .base import DataError
from .formats import Raw, read

__all__ = ["Prepared", "candidates", "fill_missing", "forget", "locate", "missing_rule", "prepare", "read_own",
           "standardisation", "usable_examples"]

_CACHE_SIZE = 4
_raw_cache: OrderedDict[tuple[str, str, str], Raw] = OrderedDict()
_known: dict[str, Path] = {}  # fingerprint -> a path on this node that had it when read


def read_own(path: str | Path, columns: str = "", image_size: str = "") -> Raw:
    """Read the data at ``path`` with these format options, and remember it by its fingerprint."""
    names = tuple(columns.split(",")) if columns else ()
    hw = tuple(int(v) for v in image_size.split(",")) if image_size else None
    raw = read(path, names, hw)  # type: ignore[arg-type]
    key = (raw.sha256, columns, image_size)
    _raw_cache[key] = raw
    _raw_cache.move_to_end(key)
    while len(_raw_cache) > _CACHE_SIZE:
        _raw_cache.popitem(last=False)
    _known[raw.sha256] = Path(path)
    return raw


def forget() -> None:
    """Forget every copy read so far: the next :func:`locate` reads from disk again."""
    _raw_cache.clear()
    _known.clear()


def candidates(spec: TrainSpec, data_root: str | Path | None = None) -> list[Path]:
    """Where this node looks for the data of ``spec`` (see the module's docstring), without duplicates."""
    given = Path(spec.dataset)
    found = [_known[spec.data_sha256]] if spec.data_sha256 in _known else []
    found.append(given)
    if data_root is not None:
        found.append(Path(data_root) / given.name)
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def locate(spec: TrainSpec, data_root: str | Path | None = None) -> Raw:
    """The data of ``spec`` on this node, with the head's fingerprint; DataError (one line) if there is none."""
    key = (spec.data_sha256, spec.columns, spec.image_size)
    if key in _raw_cache:
        _raw_cache.move_to_end(key)
        return _raw_cache[key]
    seen: list[str] = []
    for path in candidates(spec, data_root):
        if not path.exists():
            seen.append(f"{path}: no such file or folder")
            continue
        try:
            raw = read_own(path, spec.columns, spec.image_size)
        except DataError as exc:
            seen.append(str(exc))
            continue
        if raw.sha256 == spec.data_sha256:
            return raw
        seen.append(f"{path} has SHA-256 {raw.sha256[:12]}..., a different copy")
    name = Path(spec.dataset).name
    raise DataError(f"this node has no copy of the data {name} with the head's SHA-256 {spec.data_sha256[:12]}... "
                    f"({'; '.join(seen)}); copy the head's {name} there, or pass --data-root DIR holding it")


@dataclass(frozen=True)
class Prepared:
    """The fixed split of the data, as float32 rows: standardised for ``gaussian``, in [0, 1] for ``bernoulli``
    (``mean`` and ``std`` are then None). ``missing``: what the spec's missing rule did (None when the data
    has no missing values; see :func:`missing_rule`). ``available``: the training rows there were before
    ``train_subset`` (a subset larger than that is all of them)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    shape: tuple[int, ...]
    kind: str
    columns: tuple[str, ...]
    mean: np.ndarray | None
    std: np.ndarray | None
    missing: dict[str, Any] | None = None
    available: int = 0  # training rows before ``train_subset`` took its first N


def standardisation(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of ``train`` rows (float32); a constant feature gets std 1."""
    mean = train.mean(axis=0, dtype=np.float64)
    std = train.std(axis=0, dtype=np.float64)
    std[std < 1e-6] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def _rows(raw: Raw, part: np.ndarray) -> np.ndarray:
    rows = part.reshape(len(part), -1).astype(np.float32)
    if raw.scale != 1.0:
        rows /= np.float32(raw.scale)
    return rows


def _kind_of_gaps(raw: Raw) -> str:
    return "NA, empty or NaN cells" if raw.kind == "table" else "NaN values"


def usable_examples(raw: Raw, missing: str) -> int:
    """The examples of the training part the split is made of: with ``missing`` = ``drop`` those without a
    missing value, else all of them (what the default ``--val-size`` is a fifth of)."""
    if missing != "drop" or not raw.missing_cells:
        return len(raw.train)
    rows = raw.train.reshape(len(raw.train), -1)
    return int(len(rows) - np.isnan(rows).any(axis=1).sum()) if rows.dtype.kind == "f" else len(rows)


def _gaps(rows: np.ndarray) -> np.ndarray:
    """Which rows hold a missing value (NaN)."""
    return np.isnan(rows).any(axis=1)


def _refuse_missing(raw: Raw, rows: int) -> DataError:
    cells = f"{raw.missing_cells} missing value{'' if raw.missing_cells == 1 else 's'}"
    unit = ("row" if raw.kind == "table" else "example") + ("" if rows == 1 else "s")
    feature = "column" if raw.kind == "table" else "feature"
    return DataError(f"{raw.path}: {cells} ({_kind_of_gaps(raw)}) in {rows} {unit}, the first at "
                     f"{raw.first_missing}; pass --missing drop to leave those {unit} out, or --missing mean to fill "
                     f"each with its {feature}'s mean over the training split (or fill them in the file)")


def _fill_means(raw: Raw, train: np.ndarray) -> np.ndarray:
    """Each feature's mean over the training rows, ignoring missing values (DataError for a feature missing in
    every training row)."""
    present = ~np.isnan(train)
    counts = present.sum(axis=0)
    if (counts == 0).any():
        j = int(np.flatnonzero(counts == 0)[0])
        what = f"column {raw.columns[j]!r}" if raw.columns else f"value {j} of every example"
        raise DataError(f"{raw.path}: {what} is missing in every row of the training split, so --missing mean has "
                        "no mean to fill it with; leave it out (--columns) or use --missing drop")
    sums = np.where(present, train, 0.0).sum(axis=0, dtype=np.float64)
    return (sums / counts).astype(np.float32)


def missing_rule(raw: Raw, spec: TrainSpec, rows: int, fill: np.ndarray | None = None) -> dict[str, Any] | None:
    """What ``spec.missing`` did to the data (JSON-friendly, kept in a saved model's ``model.json`` as
    ``data.missing``): the rule, the missing cells and the examples holding them, and for ``mean`` the value
    each feature was filled with (in the data's own units). None for data without missing values."""
    if not raw.missing_cells:
        return None
    described: dict[str, Any] = {"rule": spec.missing, "cells": raw.missing_cells, "examples": rows}
    if fill is not None:
        described["fill"] = [float(v) for v in fill]
    return described


def _split(raw: Raw, spec: TrainSpec, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Indices of (training, validation, carved test or None) for ``n`` examples."""
    v, carve = spec.val_size, raw.test is None
    held = v * (2 if carve else 1)
    if held >= n:
        largest = (n - 1) // (2 if carve else 1)
        test_part = f" and a test split of {v} (the data has no test part of its own)" if carve else ""
        hint = f"pass --val-size {max(1, min(largest, n // 5))} (at most {largest})" if largest else "add examples"
        raise DataError(f"{raw.path}: {n} examples are too few for a validation split of {v}{test_part} with "
                        f"examples left to train on; {hint}")
    order = np.random.default_rng(spec.split_seed % 2**64).permutation(n)
    return order[held:], order[:v], order[v:held] if carve else None


def prepare(spec: TrainSpec, data_root: str | Path | None = None) -> Prepared:
    """Locate, split and (for ``gaussian``) standardise the data of ``spec``, as every worker will.

    Missing values (NaN: :attr:`Raw.missing_cells`) follow ``spec.missing``: ``error`` refuses the data in one
    line (the count, the examples, the first); ``drop`` leaves out every example holding one before the split
    (the permutation is of the complete examples); ``mean`` splits all examples, then fills each missing value
    with its feature's mean over the training split's present values (before ``train_subset``), in the
    training, validation and test splits alike."""
    raw = locate(spec, data_root)
    x = _rows(raw, raw.train)
    own_test = _rows(raw, raw.test) if raw.test is not None else None
    described = None
    if raw.missing_cells:
        gappy = int(_gaps(x).sum()) + (int(_gaps(own_test).sum()) if own_test is not None else 0)
        if spec.missing == "error":
            raise _refuse_missing(raw, gappy)
        if spec.missing == "drop":
            x = x[~_gaps(x)]
            own_test = own_test[~_gaps(own_test)] if own_test is not None else None
            if not len(x) or (own_test is not None and not len(own_test)):
                part = "training part" if not len(x) else "test part"
                raise DataError(f"{raw.path}: every example of its {part} holds a missing value, so --missing drop "
                                "leaves none; use --missing mean, or fill them in the file")
            described = missing_rule(raw, spec, gappy)
    train_idx, val_idx, test_idx = _split(raw, spec, len(x))
    test = x[test_idx] if test_idx is not None else own_test
    assert test is not None
    train, val = x[train_idx], x[val_idx]
    if raw.missing_cells and spec.missing == "mean":
        fill = _fill_means(raw, train)
        train, val, test = (np.where(np.isnan(part), fill, part).astype(np.float32) for part in (train, val, test))
        described = missing_rule(raw, spec, gappy, fill)
    mean = std = None
    if spec.likelihood == "bernoulli":
        low = float(min(train.min(), val.min(), test.min()))
        high = float(max(train.max(), val.max(), test.max()))
        if low < 0 or high > 1:
            raise DataError(f"{raw.path}: values run from {low:g} to {high:g}, outside the [0, 1] of --likelihood "
                            "bernoulli; use --likelihood gaussian (standardised), or scale the data to [0, 1]")
    else:
        mean, std = standardisation(train)
        train, val, test = ((part - mean) / std for part in (train, val, test))
    available = len(train)
    if spec.train_subset:
        train = train[:spec.train_subset]
    return Prepared(np.ascontiguousarray(train), np.ascontiguousarray(val), np.ascontiguousarray(test), raw.shape,
                    raw.kind, raw.columns, mean, std, described, available)


def fill_missing(rows: np.ndarray, missing: dict[str, Any] | None, where: str) -> np.ndarray:
    """New rows (float, in the data's own units, NaN where a value is missing) as a saved model takes them:
    with the model's ``data.missing`` rule ``mean`` each NaN becomes the training split's mean of its feature
    (``missing["fill"]``, stored with the model); otherwise rows with a missing value are a DataError of one
    line naming ``where`` (the file) and the first (dropping them would leave the rows out of line with their
    latents). For ``evovae encode``/``score`` and the Python API on data read after training."""
    gaps = np.isnan(rows)
    if not gaps.any():
        return rows
    fill = (missing or {}).get("fill")
    if fill is not None and len(fill) == rows.shape[1]:
        return np.where(gaps, np.asarray(fill, dtype=rows.dtype), rows)
    gappy = np.flatnonzero(gaps.any(axis=1))
    rule = (missing or {}).get("rule", "error")
    raise DataError(f"{where}: {int(gaps.sum())} missing values in {len(gappy)} rows (the first in row "
                    f"{int(gappy[0]) + 1}); the model was trained with --missing {rule}, which has no values to "
                    "fill them with: fill them or leave those rows out")
