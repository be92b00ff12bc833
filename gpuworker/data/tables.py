"""Tables of numeric columns: CSV/TSV through the csv module, Parquet through pyarrow (where installed).

The csv module rather than pandas: it is in the standard library (pandas would be a large new dependency
for a reader of numbers), and reading cell by cell lets an error name the exact row, column and value.
A table has a header row of column names; ``columns`` chooses some (all by default); every chosen cell must
be a finite number (an empty cell, a word, NaN or infinity is an error naming its row and column).
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

__all__ = ["read_table"]


def read_table(path: Path, data: bytes, columns: tuple[str, ...] = ()) -> Raw:
    """The chosen columns of the table in ``data`` (the bytes of ``path``) as float32 rows."""
    if path.suffix.lower() in (".parquet", ".pq"):
        names, matrix = _parquet(path, data, columns)
    else:
        names, matrix = _csv(path, data, columns)
    if len(matrix) < 1:
        raise DataError(f"{path}: has a header but no rows of data")
    if not np.isfinite(matrix).all():
        raise DataError(f"{path}: holds numbers beyond the float32 range (about 3.4e38); rescale those columns")
    return Raw(str(path), digest(data), "table", matrix, None, (len(names),), 1.0, tuple(names))


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
    cell = text.strip()
    if not cell:
        raise DataError(f"{path}: line {line}, column {column!r} is empty; fill it or drop the row")
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{path}: column {column!r} is not numeric (line {line}: {cell[:40]!r}); choose numeric "
                        "columns with --columns NAME,NAME,...") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: line {line}, column {column!r} is {cell!r}; fill or drop rows without a finite "
                        "number")
    return value


def _csv(path: Path, data: bytes, columns: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
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
    try:
        for cells in reader:
            if not cells or cells == [""]:
                continue  # a blank line
            if len(cells) != len(header):
                raise DataError(f"{path}: line {reader.line_num} has {len(cells)} fields, the header {len(header)}; "
                                "every row needs one value per column")
            rows.append([_number(path, reader.line_num, header[i], cells[i]) for i in chosen])
    except csv.Error as exc:
        raise DataError(f"{path}: is not a readable CSV table (line {reader.line_num}: {exc})") from None
    return names, np.asarray(rows, dtype=np.float32).reshape(len(rows), len(names))


def _parquet(path: Path, data: bytes, columns: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
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
        if column.null_count:
            raise DataError(f"{path}: column {name!r} has {column.null_count} missing values; fill them or drop "
                            "those rows")
        values = column.to_numpy().astype(np.float64)
        if not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0])
            raise DataError(f"{path}: row {row + 1}, column {name!r} is {values[row]}; fill or drop rows without a "
                            "finite number")
        out[:, j] = values
    return names, out
