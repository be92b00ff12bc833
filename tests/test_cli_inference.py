"""``evovae encode``, ``evovae score`` and ``evovae reconstruct --data`` on new files of the kind a model was trained
on (.npy, .npz, a PNG folder, a CSV table with its columns in another order), each checked against the Python
API's Model on the same examples; data of another shape or without the model's columns is one line, exit 2."""
from __future__ import annotations

import csv

import numpy as np
import pytest

import evovae
from evo.cli.app import main
from model_helpers import TABLE_COLUMNS, blob_images, image_model, people, table_model, write_table


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("inference")
    new = blob_images(50, seed=11)
    np.save(root / "new.npy", new)
    np.savez(root / "new.npz", train=new[:30], test=new[30:])
    (root / "png").mkdir()
    for i, image in enumerate(new):
        Image.fromarray(image).save(root / "png" / f"{i:03d}.png")
    np.save(root / "small.npy", blob_images(5, size=5))
    rows = people(20, seed=5)
    write_table(root / "shuffled.csv", rows[:, [2, 0, 1]], ("age", "height", "weight"),
                extra={"name": [f"p{i}" for i in range(20)]})
    write_table(root / "no-age.csv", rows[:, :2], ("height", "weight"))
    return {"root": root, "images": image_model(root), "table": table_model(root), "new": new, "rows": rows}


def forget_data() -> None:
    from gpuworker.data import own, tensors

    own.forget()
    tensors._cache.clear()


def run(argv, capsys) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_encode_writes_the_latent_means_of_a_new_file_in_any_of_its_forms(files, capsys):
    root, model_dir = files["root"], str(files["images"])
    expected = evovae.load_model(model_dir).encode(files["new"])
    for source in ("new.npy", "new.npz", "png"):
        out = root / f"latents-{source}.npy"
        status, printed, err = run(["encode", model_dir, "--data", str(root / source), "--out", str(out)], capsys)
        assert status == 0, err
        assert "wrote the latent means of 50 examples" in printed and f"to {out}" in printed
        assert np.allclose(np.load(out), expected.mean, atol=1e-6), source  # an .npz: train, then test
    np.save(root / "one.npy", files["new"][0])  # one example, unbatched
    status, printed, err = run(["encode", model_dir, "--data", str(root / "one.npy"), "--out", str(root / "z1.npy")],
                               capsys)
    assert status == 0 and "wrote the latent means of 1 example of" in printed, err
    assert np.load(root / "z1.npy").shape == (1, expected.mean.shape[1])
    status, printed, err = run(["score", model_dir, "--data", str(root / "one.npy")], capsys)
    assert status == 0 and ": 1 example  negative ELBO" in printed, err
    both = root / "latents.npz"
    assert run(["encode", model_dir, "--data", str(root / "new.npy"), "--out", str(both)], capsys)[0] == 0
    with np.load(both) as saved:
        assert np.allclose(saved["mean"], expected.mean) and np.allclose(saved["log_var"], expected.log_var)


def test_a_table_model_encodes_a_new_table_by_column_name(files, capsys):
    root, model_dir = files["root"], str(files["table"])
    out = root / "people.npy"
    status, _, err = run(["encode", model_dir, "--data", str(root / "shuffled.csv"), "--out", str(out)], capsys)
    assert status == 0, err
    assert np.allclose(np.load(out), evovae.load_model(model_dir).encode(files["rows"]).mean, atol=1e-5)
    status, _, err = run(["reconstruct", model_dir, "--data", str(root / "shuffled.csv"), "--out",
                          str(root / "people-recon.csv")], capsys)
    assert status == 0, err
    with open(root / "people-recon.csv") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["row", *TABLE_COLUMNS] and len(table) == 1 + 2 * 20  # every row and its reconstruction
    assert abs(float(table[1][1]) - files["rows"][0, 0]) < 1e-3                # in cm, as written


def test_data_of_another_shape_or_without_the_columns_is_one_line(files, capsys):
    root = files["root"]
    cases = [
        (files["images"], "small.npy", "small.npy: examples of shape (5, 5); the model 50|4|50 was trained on "
                                       "examples of shape (6, 6)"),
        (files["images"], "shuffled.csv", "shuffled.csv: a table; the model 50|4|50 was trained on arrays of shape "
                                          "(6, 6)"),
        (files["table"], "no-age.csv", "no-age.csv: no column 'age'; its columns are height, weight"),
        (files["table"], "new.npy", "new.npy: examples of shape (6, 6); the model takes rows of 3 columns (height, "
                                    "weight, age)"),
    ]
    for model_dir, data, words in cases:
        for command in ("encode", "score", "reconstruct"):
            out = ["--out", str(root / f"x-{command}.npy")] if command != "score" else []
            status, printed, err = run([command, str(model_dir), "--data", str(root / data), *out], capsys)
            assert status == 2 and printed == "", (command, data)
            assert err.count("\n") == 1 and err.startswith(f"evovae {command}: error: ") and words in err, err
            assert not (root / f"x-{command}.npy").exists()
    status, _, err = run(["encode", str(files["images"]), "--data", str(root / "new.npy"), "--out",
                          str(root / "z.csv")], capsys)
    assert status == 2 and ".npy (the latent means) or .npz" in err
    status, _, err = run(["encode", str(files["images"]), "--data", str(root / "missing.npy"), "--out",
                          str(root / "z.npy")], capsys)
    assert status == 2 and "no such file or folder" in err


def test_score_prints_the_mean_bounds_and_writes_each_examples(files, capsys):
    root, model_dir = files["root"], str(files["images"])
    model = evovae.load_model(model_dir)
    elbo, bound = model.elbo(files["new"], seed=3), model.iw_bound(files["new"], k=20, seed=3)
    status, printed, err = run(["score", model_dir, "--data", str(root / "new.npz"), "--k", "20", "--seed", "3",
                                "--out", str(root / "scores.csv")], capsys)
    assert status == 0, err
    assert f"negative ELBO {-elbo.mean():.3f}" in printed and f"negative IW bound (k=20) {-bound.mean():.3f}" in printed
    with open(root / "scores.csv") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["example", "negative_elbo", "negative_iw_bound_k20"] and len(table) == 51
    assert np.allclose([float(r[1]) for r in table[1:]], -elbo, rtol=1e-5)
    assert np.allclose([float(r[2]) for r in table[1:]], -bound, rtol=1e-5)
    status, printed, _ = run(["score", model_dir, "--data", str(root / "new.npy"), "--k", "0", "--per-example"],
                             capsys)
    lines = printed.splitlines()
    assert status == 0 and lines[0] == "example,negative_elbo" and len(lines) == 52 and "IW" not in lines[-1]


def test_reconstruct_writes_a_new_files_reconstructions(files, capsys):
    root, model_dir = files["root"], str(files["images"])
    out = root / "recon.npy"
    status, printed, err = run(["reconstruct", model_dir, "--data", str(root / "png"), "--out", str(out)], capsys)
    assert status == 0, err
    assert "reconstructions of 50 examples" in printed
    assert np.allclose(np.load(out), evovae.load_model(model_dir).reconstruct(files["new"]), atol=1e-6)
    picture = root / "recon.png"
    status, printed, err = run(["reconstruct", model_dir, "--data", str(root / "new.npy"), "--out", str(picture),
                                "--n", "16"], capsys)
    assert status == 0 and picture.stat().st_size > 0 and "wrote 16 examples of" in printed, err


def test_reconstruct_without_data_whose_training_file_moved_says_what_to_do(files, capsys, tmp_path):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(files["table"], model_dir)
    data = files["root"] / "people.csv"
    moved = tmp_path / "people-moved.csv"
    data.rename(moved)
    forget_data()  # as in a new process: nothing read before
    try:
        status, _, err = run(["reconstruct", str(model_dir), "--out", str(tmp_path / "r.csv")], capsys)
    finally:
        moved.rename(data)
    assert status == 2 and "--data FILE" in err and "head" not in err and "node" not in err
    assert run(["reconstruct", str(model_dir), "--out", str(tmp_path / "r.csv")], capsys)[0] == 0


@pytest.mark.slow
def test_score_per_example_into_a_pipe_closed_early_ends_quietly(files):
    """``evovae score ... --per-example | head -1``: the reader closes the pipe; no BrokenPipeError traceback."""
    import subprocess
    import sys

    root, model_dir = files["root"], str(files["images"])
    many = root / "many.npy"  # more lines than a pipe holds (64 KiB): the writer meets the closed pipe
    np.save(many, np.concatenate([files["new"]] * 100))
    score = subprocess.Popen([sys.executable, "-m", "evo.cli", "score", model_dir, "--data", str(many),
                              "--k", "0", "--per-example", "--log-level", "warning"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert score.stdout is not None and score.stdout.readline().startswith(b"example")
    score.stdout.close()  # as head -1 does
    _, err = score.communicate(timeout=120)
    assert score.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
