"""Missing values in own data (issue 19.3): a penguins-like CSV written here, with NA cells in the spellings
people and pandas write (NA, empty, NaN, null, N/A, <NA>), read as missing and named as such; ``--missing
error|drop|mean`` on every command that takes own data; the rule in the training spec (and so in task ids
and on the wire: every worker applies it); the fill values stored with an exported model."""
from __future__ import annotations

import argparse
import csv
import json
import subprocess

import numpy as np
import pytest

from distributed_helpers import PYTHON, REPO, free_port_pair
from evo.genotype import parse_genotype
from evo.spec import TrainSpec, task_id
from gpuworker.data import DataError, prepare, read, read_own
from gpuworker.data.own import fill_missing, forget
from gpuworker.data.tables import MISSING, is_missing
from gpuworker.data_options import DataOptionError, data_fields

NUMERIC = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")
COLUMNS = ",".join(NUMERIC)
HEADER = ["species", "island", *NUMERIC, "sex", "year"]
ROWS = 150
#: (row, column) -> the text of a missing cell; rows count from 0 (the file's line is row + 2)
GAPS = {(3, 0): "NA", (3, 1): "NA", (3, 2): "NA", (3, 3): "NA", (10, 1): "", (20, 3): "NaN", (33, 2): "null",
        (40, 0): "N/A", (57, 3): "<NA>", (120, 1): " nan "}


def penguins(directory, gaps=GAPS, name="penguins.csv"):
    """A Palmer-penguins-like table: two text columns, four numeric ones with missing cells, a sex column with NA
    (never chosen), a year."""
    rng = np.random.default_rng(7)
    path = directory / name
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for row in range(ROWS):
            values = [f"{rng.normal(44, 5):.1f}", f"{rng.normal(17, 2):.1f}", str(int(rng.normal(200, 14))),
                      str(int(rng.normal(4200, 800)))]
            for (r, c), text in gaps.items():
                if r == row:
                    values[c] = text
            writer.writerow(["Adelie", "Torgersen", *values, "NA" if row % 9 == 0 else "female", "2007"])
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return penguins(tmp_path_factory.mktemp("penguins"))


def spec(raw, **kw):
    return TrainSpec(dataset=raw.path, data_sha256=raw.sha256, columns=COLUMNS, likelihood="gaussian",
                     **{"val_size": 20, **kw})


@pytest.mark.parametrize("text", [*sorted(MISSING), "NAN", "+nan", "  NA  "])
def test_the_spellings_of_a_missing_value(text):
    assert is_missing(text)


@pytest.mark.parametrize("text", ["0", "-1.5", "inf", "NA1", "n.a.", "missing", "?"])
def test_numbers_and_words_are_not_missing(text):
    assert not is_missing(text)


def test_missing_cells_are_read_as_missing_and_counted(table):
    raw = read(table, columns=NUMERIC)
    assert raw.kind == "table" and raw.train.shape == (ROWS, 4)
    assert raw.missing_cells == len(GAPS)
    assert raw.first_missing == "line 5, column 'bill_length_mm' ('NA')"
    gaps = {(int(r), int(c)) for r, c in zip(*np.nonzero(np.isnan(raw.train)), strict=True)}
    assert gaps == set(GAPS)


def test_by_default_missing_values_are_refused_in_one_line_with_the_count_and_the_first(table):
    raw = read_own(table, COLUMNS)
    with pytest.raises(DataError) as err:
        prepare(spec(raw))
    message = str(err.value)
    assert "\n" not in message and str(table) in message
    assert f"{len(GAPS)} missing values (NA, empty or NaN cells) in 7 rows" in message
    assert "the first at line 5, column 'bill_length_mm' ('NA')" in message
    assert "--missing drop" in message and "--missing mean" in message
    assert "not numeric" not in message


def test_the_command_line_refuses_it_before_anything_is_created(table, tmp_path, monkeypatch, capsys):
    from evo.cli.app import main

    monkeypatch.chdir(tmp_path)
    status = main(["search", "--in-process", "--dataset", str(table), "--columns", COLUMNS, "--run-dir", "run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "10 missing values" in err[0] and "line 5" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_drop_leaves_out_the_rows_with_a_missing_value_before_the_split(table):
    raw = read_own(table, COLUMNS)
    p = prepare(spec(raw, missing="drop"))
    assert len(p.train) + len(p.val) + len(p.test) == ROWS - 7
    assert (len(p.val), len(p.test)) == (20, 20)
    assert all(np.isfinite(part).all() for part in (p.train, p.val, p.test))
    assert p.missing == {"rule": "drop", "cells": len(GAPS), "examples": 7}
    # the default validation split is a fifth of the rows that are kept
    args = argparse.Namespace(dataset=str(table), columns=COLUMNS, image_size="", missing="drop", val_size=None,
                              data_root=None)
    assert data_fields(args)["missing"] == "drop" and args.val_size == (ROWS - 7) // 5


def test_mean_fills_with_the_training_split_means_in_every_split(table):
    raw = read_own(table, COLUMNS)
    p = prepare(spec(raw, missing="mean"))
    assert len(p.train) + len(p.val) + len(p.test) == ROWS
    assert all(np.isfinite(part).all() for part in (p.train, p.val, p.test))
    fill = np.asarray(p.missing["fill"], dtype=np.float32)
    assert p.missing["rule"] == "mean" and p.missing["cells"] == len(GAPS) and p.missing["examples"] == 7
    # the training split, back in the data's units: the filled cells hold the mean of the present ones
    train = p.train * p.std + p.mean
    order = np.random.default_rng(0).permutation(ROWS)  # the split every node makes (split_seed 0)
    rows = raw.train[order[40:]]
    gaps = np.isnan(rows)
    assert gaps.any()
    np.testing.assert_allclose(fill, np.nanmean(rows, axis=0), rtol=1e-5)
    np.testing.assert_allclose(train[gaps], np.broadcast_to(fill, rows.shape)[gaps], rtol=1e-4)
    np.testing.assert_allclose(train[~gaps], rows[~gaps], rtol=1e-4, atol=1e-3)


def test_a_column_missing_in_every_training_row_cannot_be_filled(tmp_path):
    gaps = {(row, 2): "NA" for row in range(ROWS)}
    raw = read_own(penguins(tmp_path, gaps), COLUMNS)
    with pytest.raises(DataError, match="column 'flipper_length_mm' is missing in every row of the training split"):
        prepare(spec(raw, missing="mean"))
    with pytest.raises(DataError, match="every example of its training part holds a missing value"):
        prepare(spec(raw, missing="drop"))


def test_the_rule_is_part_of_the_spec_and_of_the_task_id_only_when_given(table):
    raw = read_own(table, COLUMNS)
    default = spec(raw)
    assert "missing" not in default.to_dict() and "missing" not in default.canonical  # old task ids unchanged
    assert TrainSpec.from_dict(default.to_dict()) == default
    g = parse_genotype("8|2|8")
    ids = {rule: task_id(g, spec(raw, missing=rule)) for rule in ("error", "drop", "mean")}
    assert len(set(ids.values())) == 3
    assert spec(raw, missing="mean").to_dict()["missing"] == "mean"
    builtin = TrainSpec(dataset="synthetic")
    assert task_id(g, builtin) == task_id(g, TrainSpec.from_dict({**builtin.to_dict()}))
    with pytest.raises(ValueError, match="missing must be one of error, drop, mean"):
        spec(raw, missing="zero")
    with pytest.raises(ValueError, match="missing only apply to data of your own"):
        TrainSpec(dataset="synthetic", missing="drop")


def test_a_worker_applies_the_rule_it_reads_from_the_wire(table):
    """A worker gets the spec as a dict (the wire's form) and reads the data afresh: it trains on exactly the
    rows the head checked."""
    raw = read_own(table, COLUMNS)
    for rule in ("drop", "mean"):
        head = prepare(spec(raw, missing=rule))
        forget()  # a fresh worker process: nothing read yet
        wire = json.loads(json.dumps(spec(raw, missing=rule).to_dict()))
        worker = prepare(TrainSpec.from_dict(wire))
        for part in ("train", "val", "test", "mean", "std"):
            assert np.array_equal(getattr(head, part), getattr(worker, part)), (rule, part)
        assert head.missing == worker.missing


def test_nan_in_a_float_array_is_missing_too(tmp_path):
    rows = np.random.default_rng(1).normal(size=(200, 3)).astype(np.float32)
    rows[7, 1] = np.nan
    np.save(tmp_path / "a.npy", rows)
    raw = read_own(tmp_path / "a.npy")
    assert raw.missing_cells == 1 and raw.first_missing == "example 7, value 1 (NaN)"
    base = TrainSpec(dataset=raw.path, data_sha256=raw.sha256, val_size=20, likelihood="gaussian")
    with pytest.raises(DataError, match=r"1 missing value \(NaN values\) in 1 example, the first at example 7"):
        prepare(base)
    assert np.isfinite(prepare(base.replace(missing="mean")).train).all()
    assert prepare(base.replace(missing="drop")).missing["examples"] == 1


def test_parquet_nulls_and_nan_are_missing(tmp_path, table):
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (Parquet is optional: pip install pyarrow)")
    import pyarrow.parquet as pq

    csv_raw = read(table, columns=NUMERIC)
    columns = {}
    for j, name in enumerate(NUMERIC):
        values = [None if np.isnan(v) else float(v) for v in csv_raw.train[:, j]]
        if j == 3:
            values[20] = float("nan")  # a NaN, not a null
        columns[name] = pa.array(values, type=pa.float64())
    pq.write_table(pa.table(columns), tmp_path / "p.parquet")
    raw = read(tmp_path / "p.parquet")
    assert raw.missing_cells == len(GAPS) and raw.first_missing == "row 4, column 'bill_length_mm' (null)"
    assert np.array_equal(np.isnan(raw.train), np.isnan(csv_raw.train))


def test_missing_is_an_option_of_every_command_that_takes_own_data(capsys):
    from evo.cli import compare, experiment
    from evo.cli.app import _parser, _subparser
    from evo.cli.export import main_export
    from gpuworker.cli import build_parser

    app = _parser()
    parsers = [_subparser(app, "train"), _subparser(app, "search"), compare._parser(),
               next(a for a in experiment._parser()._actions if a.dest == "experiment").choices["paper"]]
    for parser in parsers:
        action = next(a for a in parser._actions if "--missing" in a.option_strings)
        assert tuple(action.choices) == ("error", "drop", "mean") and action.default is None
    try:
        main_export(["--help"])
    except SystemExit:
        pass
    assert "--missing {error,drop,mean}" in capsys.readouterr().out
    # a worker takes the rule from each task
    assert not any("--missing" in a.option_strings for a in build_parser()._actions)
    with pytest.raises(DataOptionError, match="--missing only applies to data of your own"):
        data_fields(argparse.Namespace(dataset="fashion-mnist", missing="mean"))


def test_new_rows_are_filled_as_the_model_was_trained():
    rows = np.array([[1.0, np.nan], [np.nan, 4.0], [5.0, 6.0]], dtype=np.float32)
    filled = fill_missing(rows, {"rule": "mean", "cells": 3, "examples": 2, "fill": [10.0, 20.0]}, "new.csv")
    assert filled.tolist() == [[1.0, 20.0], [10.0, 4.0], [5.0, 6.0]]
    assert fill_missing(rows[2:], None, "new.csv") is not None
    with pytest.raises(DataError, match=r"new.csv: 2 missing values in 2 rows \(the first in row 1\); the model was "
                                        r"trained with --missing drop"):
        fill_missing(rows, {"rule": "drop", "cells": 3, "examples": 2}, "new.csv")


def evovae(*argv: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "evo.cli", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                               "HOME": str(cwd)})


@pytest.mark.slow
def test_an_exported_model_keeps_the_fill_values_and_reconstructs(table, tmp_path):
    done = evovae("export", "--genotype", "16|2|16", "--dataset", str(table), "--columns", COLUMNS, "--missing",
                  "mean", "--epochs", "2", "--out", "m", "--log-level", "warning", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    info = json.loads((tmp_path / "m" / "rank-1" / "model.json").read_text())
    assert info["spec"]["missing"] == "mean"
    raw = read_own(table, COLUMNS)
    expected = prepare(TrainSpec.from_dict(info["spec"]))
    assert info["data"]["missing"] == expected.missing and len(info["data"]["missing"]["fill"]) == 4
    again = evovae("reconstruct", "m/rank-1", "--log-level", "warning", cwd=tmp_path)
    assert again.returncode == 0 and "recon.csv" in again.stdout, again.stderr
    assert raw.missing_cells == len(GAPS)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_search_over_zeromq_trains_every_task_with_the_rule(table, tmp_path):
    """Local workers (separate processes over ZeroMQ) read the table themselves and apply the spec's rule."""
    done = evovae("search", "--local-workers", "2", "--bind", f"tcp://127.0.0.1:{free_port_pair()}", "--dataset",
                  str(table), "--columns", COLUMNS, "--missing", "drop", "--population", "2", "--offspring", "2",
                  "--generations", "2", "--epochs", "1", "--max-layers", "1", "--width-max", "100",
                  "--output", "result.json", "--log-level", "warning", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["spec"]["missing"] == "drop" and result["spec"]["val_size"] == (ROWS - 7) // 5
    assert len(result["evaluations"]) == 4 and all(e["error"] == "" for e in result["evaluations"])
    assert all(e["genotype"].split("|")[1] in {"1", "2", "3"} for e in result["evaluations"])  # latent < 4 columns
