"""Reading the user's own data into numpy arrays (numpy, Pillow, the csv module; no torch).

One entry point, :func:`read`, for the three forms (docs/data.md says them precisely):

* a NumPy file: ``.npy`` (one array) or ``.npz`` (arrays ``train`` and optionally ``test``, or ``x``), of
  any shape [N, ...]; uint8 (divided by 255), bool, integers or floats;
* a folder of PNG/JPEG images (:mod:`.images`);
* a table: CSV/TSV (the csv module) or Parquet (pyarrow, where installed) of numeric columns (:mod:`.tables`).

Every file is read into memory once and its fingerprint taken from those same bytes, so the data parsed is
exactly the data fingerprinted. Anything unusable is a :class:`DataError` of one line naming the file and
what to do.
"""
from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DataError
from .fingerprint import digest

__all__ = ["ARRAY_SUFFIXES", "Raw", "TABLE_SUFFIXES", "read"]

ARRAY_SUFFIXES = (".npy", ".npz")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


@dataclass(frozen=True)
class Raw:
    """Data as read, before any split: ``train`` [N, ...] (and ``test``, when the data has its own).

    ``kind`` is ``array``, ``images`` or ``table``; ``shape`` one example's shape; ``scale`` what the values
    are divided by to be used (255 for 8-bit pixels, else 1); ``columns`` a table's column names.
    ``missing_cells`` counts the missing values (NaN in ``train`` and ``test``: a table's NA or empty cells,
    a float array's NaN), ``first_missing`` says where the first is (``line 5, column 'x' ('NA')``); the
    training spec's ``missing`` rule decides what becomes of them (:func:`gpuworker.data.own.prepare`)."""

    path: str
    sha256: str
    kind: str
    train: np.ndarray
    test: np.ndarray | None
    shape: tuple[int, ...]
    scale: float = 1.0
    columns: tuple[str, ...] = ()
    missing_cells: int = 0
    first_missing: str = ""

    @property
    def default_likelihood(self) -> str:
        """``gaussian`` for tables and for arrays with values outside [0, 1]; ``bernoulli`` for images."""
        if self.kind == "table":
            return "gaussian"
        if self.scale != 1.0:
            return "bernoulli"
        parts = [self.train] if self.test is None else [self.train, self.test]
        inside = all(part.size == 0 or (np.nanmin(part, initial=0.0) >= 0 and np.nanmax(part, initial=1.0) <= 1)
                     for part in parts)
        return "bernoulli" if inside else "gaussian"


def read(path: str | Path, columns: tuple[str, ...] = (), image_hw: tuple[int, int] | None = None) -> Raw:
    """Read the data at ``path`` (a file or a folder of images); DataError with one line if it is unusable."""
    path = Path(path)
    if path.is_dir():
        if columns:
            raise DataError(f"{path}: --columns only applies to tables (CSV, Parquet), not to a folder of images")
        from .images import read_folder

        return read_folder(path, image_hw)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; check the path (a worker also looks under its --data-root)")
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES + TABLE_SUFFIXES:
        raise DataError(f"{path}: unknown format {suffix or '(no suffix)'}; evovae reads .npy and .npz arrays, "
                        ".csv, .tsv and .parquet tables, and folders of .png/.jpg images")
    if image_hw is not None:
        raise DataError(f"{path}: --image-size only applies to a folder of images")
    data = _read_bytes(path)
    if suffix in TABLE_SUFFIXES:
        from .tables import read_table

        return read_table(path, data, columns)
    if columns:
        raise DataError(f"{path}: --columns only applies to tables (CSV, Parquet), not to a NumPy file")
    train, test, name = _read_npz(path, data) if suffix == ".npz" else (_load_npy(path, data), None, "")
    return _as_raw(path, digest(data), train, test, name)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_npy(path: Path, data: bytes, member: str = "") -> np.ndarray:
    where = f"{path}{f' (array {member!r})' if member else ''}"
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{where}: holds Python objects, not numbers; save a numeric array "
                            "(numpy.save(path, array.astype('float32')))") from None
        raise DataError(f"{where}: cannot be read as a NumPy array ({_first_line(exc)}): is it truncated? "
                        "write it again with numpy.save") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{where}: cannot be read as a NumPy array ({_first_line(exc)}); write it again with "
                        "numpy.save") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{where}: is not a single NumPy array; use .npz for several")
    return array


def _read_npz(path: Path, data: bytes) -> tuple[np.ndarray, np.ndarray | None, str]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}
        if "train" in names:
            wanted = ["train", "test"] if "test" in names else ["train"]
        elif "x" in names:
            wanted = ["x"]
        else:
            found = ", ".join(repr(n) for n in sorted(names)) or "none"
            raise DataError(f"{path}: expected arrays 'train' (and optionally 'test') or 'x', found {found}; "
                            "save with numpy.savez(path, train=..., test=...)")
        arrays = [_load_npy(path, archive.read(names[name]), name) for name in wanted]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as a NumPy .npz archive ({_first_line(exc)}): is it truncated? "
                        "write it again with numpy.savez") from None
    return arrays[0], arrays[1] if len(arrays) > 1 else None, wanted[0]


def _checked(path: Path, name: str, array: np.ndarray) -> np.ndarray:
    """``array`` as uint8 pixels or float32 numbers, or a DataError (``name``: the npz member, "" for .npy)."""
    name = f"array {name!r}" if name else "the array"
    if array.ndim < 2 or array.shape[0] < 1:
        raise DataError(f"{path}: {name} has shape {array.shape}; expected [N, ...] with N >= 1 examples "
                        "of one or more values each")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: {name} holds {array.dtype} values; expected numbers (uint8 pixels, "
                        "integers or floats)")
    if array.dtype.kind == "f":  # NaN is a missing value (the spec's missing rule); infinity is refused
        infinite = np.isinf(array.reshape(len(array), -1)).any(axis=1)
        if infinite.any():
            first = int(np.flatnonzero(infinite)[0])
            raise DataError(f"{path}: {name} holds infinite values (first in example {first}); remove or fill "
                            "them")
    if array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = np.ascontiguousarray(array.transpose(0, 3, 1, 2))  # N, H, W, C -> N, C, H, W
    if array.dtype == np.uint8:
        return array
    return array.astype(np.float32)  # bool, integers and floats: numbers as they are


def _as_raw(path: Path, sha: str, train: np.ndarray, test: np.ndarray | None, name: str) -> Raw:
    train = _checked(path, name, train)
    if test is not None:
        test = _checked(path, "test", test)
        if test.shape[1:] != train.shape[1:]:
            raise DataError(f"{path}: 'test' examples have shape {test.shape[1:]}, 'train' ones {train.shape[1:]}; "
                            "save both with one shape")
        if (test.dtype == np.uint8) != (train.dtype == np.uint8):
            raise DataError(f"{path}: 'train' is {train.dtype} and 'test' is {test.dtype}; save both as uint8 "
                            "pixels or both as numbers")
    scale = 255.0 if train.dtype == np.uint8 else 1.0  # uint8 is 8-bit pixels; 0/1 data is stored as bool
    cells, first = 0, ""
    for part_name, part in (("", train), ("test", test)):
        if part is None or part.dtype.kind != "f":
            continue
        gaps = np.isnan(part.reshape(len(part), -1))
        count = int(gaps.sum())
        if count and not first:
            example = int(np.flatnonzero(gaps.any(axis=1))[0])
            value = int(np.flatnonzero(gaps[example])[0])
            first = f"{f'array {part_name!r} ' if part_name else ''}example {example}, value {value} (NaN)"
        cells += count
    return Raw(str(path), sha, "array", train, test, tuple(int(s) for s in train.shape[1:]), scale, (), cells, first)
