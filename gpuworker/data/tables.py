"""Tables of numeric columns: CSV/TSV through the csv module, Parquet through pyarrow (where installed).

The csv module rather than pandas: it is in the standard library (pandas would be a large new dependency
for a reader of numbers), and reading cell by cell lets an error name the exact row, column and value.
A table has a header row of column names; ``columns`` chooses some (all by default); every chosen cell must
be a finite number or a missing value (a word or infinity is an error naming its row and column). Missing
values - an empty cell and pandas' spellings of NA (:data:`MISSING`), NaN in any case, a Parquet null or
NaN - are read as NaN and counted (``Raw.missing_cells``, ``Raw.first_missing``); what becomes of them is
the training spec's ``missing`` rule, applied when the data is split (:func:`gpuworker.data.own.prepare`).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from .base import DataError
from .fingerprint import digest
from .formats import Raw

__all__ = ["MISSING", "is_missing", "read_table"]

#: The texts of a missing value (after stripping blanks): pandas' default ``na_values``, so a table pandas
#: wrote (``to_csv`` writes an empty cell) or reads with NA reads the same here; NaN in any case counts too.
MISSING = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def is_missing(cell: str) -> bool:
    """Whether the text of a cell is a missing value (:data:`MISSING`, or NaN in any spelling)."""
    text = cell.strip()
    return text in MISSING or text.lstrip("+-").lower() == "nan"


def read_table(path: Path, data: bytes, columns: tuple[str, ...] = ()) -> Raw:
    """The chosen columns of the table in ``data`` (the bytes of ``path``) as float32 rows."""
    if path.suffix.lower() in (".parquet", ".pq"):
        names, matrix, first = _parquet(path, data, columns)
    else:
        names, matrix, first = _csv(path, data, columns)
    if len(matrix) < 1:
        raise DataError(f"{path}: has a header but no rows of data")
    if np.isinf(matrix).any():
        raise DataError(f"{path}: holds numbers beyond the float32 range (about 3.4e38); rescale those columns")
    cells = int(np.isnan(matrix).sum())
    return Raw(str(path), digest(data), "table", matrix, None, (len(names),), 1.0, tuple(names), cells,
               first if cells else "")


def _chosen(path: Path, header: list[str], columns: tuple[str, ...]) -> list[int]:
    if not columns:
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            raise DataError(f"{path}: the header names {', '.join(map(repr, duplicates))} more than once; rename "
                            "them or choose columns with --columns")
        return list(range(len(header)))
    missing = [name for name in columns if name not in header]
    if missing:
        shown = ", ".join(header[:12]) + (" ..." if len(header) > 12 else "")
        raise DataError(f"{path}: no column {', '.join(map(repr, missing))}; its columns are {shown}")
    return [header.index(name) for name in columns]


def _number(path: Path, line: int, column: str, text: str) -> float:
    """The number in a cell; NaN for a missing value (:func:`is_missing`)."""
    cell = text.strip()
    if is_missing(cell):
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{path}: column {column!r} is not numeric (line {line}: {cell[:40]!r}); choose numeric "
                        "columns with --columns NAME,NAME,...") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: line {line}, column {column!r} is {cell!r}, not a finite number; fill or drop "
                        "such rows")
    return value


def _where(place: str, column: str, text: str) -> str:
    """How an error names the first missing value: ``line 5, column 'bill_length_mm' ('NA')``."""
    return f"{place}, column {column!r} ({'empty' if not text.strip() else repr(text.strip()[:20])})"


def _csv(path: Path, data: bytes, columns: tuple[str, ...]) -> tuple[list[str], np.ndarray, str]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: is not UTF-8 text (byte {exc.start}); save the table as UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise DataError(f"{path}: is empty; a table needs a header row of column names and rows of numbers") from None
    except csv.Error as exc:
        raise DataError(f"{path}: is not a readable CSV table ({exc})") from None
    chosen = _chosen(path, header, columns)
    names = [header[i] for i in chosen]
    rows: list[list[float]] = []
    first = ""
    try:
        for cells in reader:
            if not cells or cells == [""]:
                continue  # a blank line
            if len(cells) != len(header):
                raise DataError(f"{path}: line {reader.line_num} has {len(cells)} fields, the header {len(header)}; "
                                "every row needs one value per column")
            row = [_number(path, reader.line_num, header[i], cells[i]) for i in chosen]
            if not first and any(math.isnan(value) for value in row):
                i = next(i for i, value in zip(chosen, row, strict=True) if math.isnan(value))
                first = _where(f"line {reader.line_num}", header[i], cells[i])
            rows.append(row)
    except csv.Error as exc:
        raise DataError(f"{path}: is not a readable CSV table (line {reader.line_num}: {exc})") from None
    return names, np.asarray(rows, dtype=np.float32).reshape(len(rows), len(names)), first


def _parquet(path: Path, data: bytes, columns: tuple[str, ...]) -> tuple[list[str], np.ndarray, str]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow); or save the table as "
                        "CSV") from None
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot be read as Parquet ({str(exc).strip().splitlines()[0]}): is it "
                        "truncated?") from None
    header = list(table.column_names)
    names = [header[i] for i in _chosen(path, header, columns)]
    out = np.empty((table.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        column = table.column(name)
        kind = column.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise DataError(f"{path}: column {name!r} is not numeric ({kind}); choose numeric columns with "
                            "--columns NAME,NAME,...")
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # a null becomes NaN: missing
        if np.isinf(values).any():
            row = int(np.flatnonzero(np.isinf(values))[0])
            raise DataError(f"{path}: row {row + 1}, column {name!r} is {values[row]}, not a finite number; fill or "
                            "drop such rows")
        out[:, j] = values
    first = ""
    rows = np.flatnonzero(np.isnan(out).any(axis=1))
    if len(rows):
        row = int(rows[0])
        j = int(np.flatnonzero(np.isnan(out[row]))[0])
        null = not table.column(names[j])[row].is_valid
        first = f"row {row + 1}, column {names[j]!r} ({'null' if null else 'NaN'})"
    return names, out, first
