"""Own data through training, export, sample and reconstruct (in process): scikit-learn's digits as a PNG
folder (Bernoulli) and its breast-cancer table as a CSV (Gaussian, standardised, rows written as CSV)."""
import csv
import json

import numpy as np
import pytest
import torch

from evo.cli.export import main_export, main_reconstruct, main_sample
from evo.genotype import parse_genotype
from evo.spec import TrainSpec
from gpuworker.data import read_own
from gpuworker.export import load_model, standardisation_of
from gpuworker.train import evaluate
from own_data_helpers import cancer_columns, write_cancer_csv, write_digits_png

COLUMNS = ",".join(cancer_columns())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    return {"png": write_digits_png(root), "csv": write_cancer_csv(root)}


@pytest.mark.slow
def test_a_table_trains_with_the_gaussian_likelihood_and_learns(files):
    raw = read_own(files["csv"], COLUMNS)
    spec = TrainSpec(dataset=str(files["csv"]), data_sha256=raw.sha256, columns=COLUMNS, likelihood="gaussian",
                     val_size=60, epochs=20, batch_size=32, report_test=True, iw_samples=20)
    result = evaluate(parse_genotype("100|5|100"), spec)
    assert result.ok, result.error
    m = result.measurement
    independent = 30 * (0.5 + 0.5 * np.log(2 * np.pi))   # a model that knows nothing: N(0, 1) per feature
    assert m.curve[-1] < m.curve[0] and m.loss < independent - 5, (m.loss, independent)
    assert m.test["iw_loss"] <= m.test["loss"] + 0.5 and m.epochs == 20


@pytest.mark.slow
def test_digits_from_png_train_with_bernoulli(files):
    raw = read_own(files["png"])
    spec = TrainSpec(dataset=str(files["png"]), data_sha256=raw.sha256, val_size=200, epochs=3)
    result = evaluate(parse_genotype("200|10|200"), spec, test=True)
    m = result.measurement
    assert result.ok and m.curve[-1] < m.curve[0] and 10 < m.loss < 64 * np.log(2)


@pytest.mark.slow
def test_export_sample_and_reconstruct_a_table_model(files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "models"
    argv = ["--genotype", "100|5|100", "--out", str(out), "--dataset", str(files["csv"]), "--columns", COLUMNS,
            "--val-size", "60", "--epochs", "5", "--iw-samples", "10"]
    assert main_export(argv) == 0
    printed = capsys.readouterr().out
    assert "rank-1" in printed and "IW bound, k=10" in printed
    info = json.loads((out / "rank-1" / "model.json").read_text())
    assert info["input_shape"] == [30] and info["data"]["kind"] == "table" and info["spec"]["likelihood"] == "gaussian"
    assert info["data"]["columns"] == cancer_columns() and set(info["losses"]["test"]) >= {"loss", "iw_loss"}
    _model, loaded = load_model(out / "rank-1")
    mean, _std = standardisation_of(loaded)
    table = np.loadtxt(files["csv"], delimiter=",", skiprows=1, usecols=range(30))
    assert torch.allclose(mean[0], torch.tensor(table[:, 0].mean(), dtype=torch.float32), rtol=0.05)

    monkeypatch.chdir(tmp_path)  # the default output, samples.csv for a table, lands here
    assert main_sample([str(out / "rank-1"), "--n", "50", "--seed", "1"]) == 0
    with open(tmp_path / "samples.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == cancer_columns() and len(rows) == 51
    sampled = np.array(rows[1:], dtype=float)
    radius = sampled[:, 0]                          # 'mean radius': about 6.9 to 28 in the data
    assert 5 < radius.mean() < 25 and (sampled[:, cancer_columns().index("mean area")] > 0).mean() > 0.9

    assert main_reconstruct([str(out / "rank-1"), "--n", "4", "--out", str(tmp_path / "r.csv")]) == 0
    with open(tmp_path / "r.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][0] == "row" and [r[0] for r in rows[1:3]] == ["original 0", "reconstruction 0"]
    assert len(rows) == 9 and any(float(v) > 100 for v in rows[1][1:])   # in the data's units again


@pytest.mark.slow
def test_export_sample_and_reconstruct_an_image_model(files, tmp_path):
    from PIL import Image

    out = tmp_path / "models"
    assert main_export(["--genotype", "100|5|100", "--out", str(out), "--dataset", str(files["png"]),
                        "--val-size", "200", "--epochs", "1"]) == 0
    assert main_sample([str(out / "rank-1"), "--n", "16", "--nrow", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size == (4 * 10 + 2, 4 * 10 + 2)
    assert main_reconstruct([str(out / "rank-1"), "--n", "8", "--nrow", "4", "--out", str(tmp_path / "r.png")]) == 0
    assert Image.open(tmp_path / "r.png").size == (4 * 10 + 2, 4 * 10 + 2)


def test_export_refuses_bad_data_in_one_line_before_creating_anything(tmp_path, files, capsys):
    out = tmp_path / "models"
    assert main_export(["--genotype", "100|5|100", "--out", str(out), "--dataset", str(files["csv"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "column 'diagnosis' is not numeric" in err and not out.exists()
    assert main_export(["--genotype", "100|5|100", "--out", str(out), "--dataset", str(files["csv"]),
                        "--columns", COLUMNS, "--val-size", "10000"]) == 2
    assert "too few for a validation split of 10000" in capsys.readouterr().err and not out.exists()
