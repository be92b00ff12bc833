"""Data held in memory, made a file a search can name: written once into the run directory and fingerprinted,
so every worker reads it by path and checks it by SHA-256, as it would a file of the user's.

* a NumPy array or a torch tensor ``[N, ...]`` becomes ``data.npy`` (``numpy.save``: the same array gives the
  same bytes, so the same fingerprint, and a resumed search finds its data unchanged);
* a pandas DataFrame (anything with ``columns`` and ``to_numpy``) becomes ``data.csv``: its numeric columns
  (or those ``columns`` names), every value written with ``repr`` (a float64 read back is the same float);
* a path (a ``.npy``/``.npz`` file, a folder of images, a CSV/Parquet table) is used where it is.

Every refusal is an :class:`~evo.strategies.OptionError` naming the parameter (``data``, ``columns``).
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evo.strategies import OptionError

__all__ = ["Staged", "column_text", "stage"]


@dataclass(frozen=True)
class Staged:
    """Data ready to be named by a training spec: ``payload`` (the bytes of the file the search writes into its
    run directory as ``name``) or ``source`` (the user's own file or folder, used where it is)."""

    name: str
    payload: bytes | None = None
    source: Path | None = None
    columns: str = ""

    def path_in(self, run_dir: Path) -> Path:
        """Where the search reads the data: the user's path, or ``name`` in the run directory (absolute)."""
        return self.source if self.source is not None else run_dir.absolute() / self.name


def column_text(columns: str | Sequence[str] | None) -> str:
    """``columns`` (a list of names, or ``"a,b"``) as the training spec's ``"a,b"``."""
    if columns is None:
        return ""
    if isinstance(columns, str):
        return columns
    names = [str(c) for c in columns]
    bad = [n for n in names if "," in n or not n.strip() or n != n.strip()]
    if bad:
        raise OptionError("columns", f"column names may not be empty, hold a comma or start or end with a space: "
                                     f"{', '.join(map(repr, bad))}; rename them first")
    return ",".join(names)


def stage(data: Any, columns: str | Sequence[str] | None = None, missing: str = "error") -> Staged:
    """``data`` (array, tensor, DataFrame or path) as a file to search on (see the module's docstring). With
    ``missing`` ``drop`` or ``mean``, missing values (NaN, NA) pass through to the reader, which applies the rule;
    with ``error`` they are refused here."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data).expanduser()
        if not path.exists():
            raise OptionError("data", f"{path}: no such file or folder")
        return Staged(path.name, source=path.absolute(), columns=column_text(columns))
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):
        names, payload = _frame_csv(data, columns, missing)
        return Staged("data.csv", payload=payload, columns=",".join(names))
    if columns is not None:
        raise OptionError("columns", "chooses the columns of a DataFrame or of a table file; the data is an array")
    return Staged("data.npy", payload=_npy(_numbers(data, missing)))


def _numbers(data: Any, missing: str = "error") -> np.ndarray:
    if hasattr(data, "detach") and hasattr(data, "cpu"):  # a torch tensor, on any device
        tensor = data.detach().cpu()
        try:
            data = tensor.numpy()
        except TypeError:  # bfloat16 and friends: numpy has no such type
            data = tensor.float().numpy()
    try:
        array = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise OptionError("data", f"cannot be read as an array of numbers ({exc}); give a NumPy array, a torch "
                                  "tensor, a pandas DataFrame or a path") from None
    if array.dtype.kind not in "biuf":
        raise OptionError("data", f"holds {array.dtype} values; give numbers (uint8 pixels, integers or floats)")
    if array.ndim < 2 or len(array) == 0:
        raise OptionError("data", f"has shape {array.shape}; give [N, ...], one example per row, N >= 1 (N numbers "
                                  "of one feature: data.reshape(-1, 1))")
    if array.dtype.kind == "f":
        flat = array.reshape(len(array), -1)
        infinite = np.isinf(flat).any(axis=1)
        if infinite.any():
            raise OptionError("data", f"holds infinite values ({int(infinite.sum())} examples, the first at index "
                                      f"{int(np.flatnonzero(infinite)[0])}); remove them")
        gaps = np.isnan(flat).any(axis=1)
        if gaps.any() and missing == "error":
            raise OptionError("data", f"holds missing values (NaN) in {int(gaps.sum())} examples, the first at "
                                      f"index {int(np.flatnonzero(gaps)[0])}; pass missing='drop' to leave those "
                                      "examples out or missing='mean' to fill each with its feature's mean, or fill "
                                      "them first")
    return np.ascontiguousarray(array)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _frame_csv(frame: Any, columns: str | Sequence[str] | None, missing: str = "error") -> tuple[list[str], bytes]:
    """The chosen numeric columns of a DataFrame as CSV bytes (header, then one line per row; a missing value an
    empty cell)."""
    by_name: dict[str, Any] = {}
    for column in frame.columns:
        name = str(column)
        if name in by_name:
            raise OptionError("data", f"the DataFrame has two columns named {name!r}; rename one")
        by_name[name] = column
    wanted = column_text(columns)
    names = wanted.split(",") if wanted else list(by_name)
    column_text(names)  # names the spec can hold
    absent = [n for n in names if n not in by_name]
    if absent:
        shown = ", ".join(list(by_name)[:12]) + (" ..." if len(by_name) > 12 else "")
        raise OptionError("columns", f"no column {', '.join(map(repr, absent))}; the DataFrame's columns are {shown}")
    if not names:
        raise OptionError("data", "the DataFrame has no columns")
    values = np.empty((len(frame), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        series = frame[by_name[name]]
        kind = getattr(getattr(series, "dtype", None), "kind", "O")
        if kind not in "biuf":
            numeric = [n for n in by_name if getattr(frame[by_name[n]].dtype, "kind", "O") in "biuf"]
            raise OptionError("data", f"column {name!r} is not numeric ({series.dtype}); leave it out by naming the "
                                      f"columns to use, e.g. columns={numeric[:4]!r}")
        try:
            values[:, j] = series.to_numpy(dtype="float64", na_value=np.nan)
        except TypeError:  # a DataFrame-like object without pandas' na_value
            values[:, j] = np.asarray(series.to_numpy(), dtype=np.float64)
        infinite = np.flatnonzero(np.isinf(values[:, j]))
        if len(infinite):
            raise OptionError("data", f"column {name!r} has {len(infinite)} infinite values (the first in row "
                                      f"{int(infinite[0])}); replace them")
        missing_rows = np.flatnonzero(np.isnan(values[:, j]))
        if len(missing_rows) and missing == "error":
            raise OptionError("data", f"column {name!r} has {len(missing_rows)} missing values (the first in row "
                                      f"{int(missing_rows[0])}); pass missing='drop' to leave those rows out or "
                                      "missing='mean' to fill each with its column's mean, or drop or fill them "
                                      "first (data.dropna(), data.fillna(...))")
    if len(values) == 0:
        raise OptionError("data", "the DataFrame has no rows")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(["" if v != v else repr(v) for v in row] for row in values.tolist())  # NaN: an empty cell
    return names, text.getvalue().encode("utf-8")
