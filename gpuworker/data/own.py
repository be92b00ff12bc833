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

import numpy as np

from evo.spec import TrainSpec

from .base import DataError
from .formats import Raw, read

__all__ = ["Prepared", "candidates", "forget", "locate", "prepare", "read_own", "standardisation"]

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
    (``mean`` and ``std`` are then None)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    shape: tuple[int, ...]
    kind: str
    columns: tuple[str, ...]
    mean: np.ndarray | None
    std: np.ndarray | None


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
    """Locate, split and (for ``gaussian``) standardise the data of ``spec``, as every worker will."""
    raw = locate(spec, data_root)
    x = _rows(raw, raw.train)
    train_idx, val_idx, test_idx = _split(raw, spec, len(x))
    test = x[test_idx] if test_idx is not None else _rows(raw, raw.test)  # type: ignore[arg-type]
    train, val = x[train_idx], x[val_idx]
    mean = std = None
    if spec.likelihood == "bernoulli":
        low, high = float(min(x.min(), test.min())), float(max(x.max(), test.max()))
        if low < 0 or high > 1:
            raise DataError(f"{raw.path}: values run from {low:g} to {high:g}, outside the [0, 1] of --likelihood "
                            "bernoulli; use --likelihood gaussian (standardised), or scale the data to [0, 1]")
    else:
        mean, std = standardisation(train)
        train, val, test = ((part - mean) / std for part in (train, val, test))
    if spec.train_subset > len(train):
        raise DataError(f"--train-subset {spec.train_subset}: {raw.path} has only {len(train)} training examples "
                        f"after the {len(val)} of the validation split; give at most {len(train)}, or 0 for all")
    if spec.train_subset:
        train = train[:spec.train_subset]
    return Prepared(np.ascontiguousarray(train), np.ascontiguousarray(val), np.ascontiguousarray(test), raw.shape,
                    raw.kind, raw.columns, mean, std)
