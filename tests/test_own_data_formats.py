"""Reading own data (gpuworker.data, numpy only): the three forms on real scikit-learn data, fingerprints by
content, the split and standardisation every worker makes, and one clear line for each kind of bad file."""
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from evo.spec import TrainSpec
from gpuworker.data import DataError, prepare, read, read_own
from own_data_helpers import (
    DIGITS_TRAIN,
    cancer_columns,
    digits_u8,
    write_cancer_csv,
    write_digits_npz,
    write_digits_png,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    return {"npz": write_digits_npz(root), "png": write_digits_png(root), "csv": write_cancer_csv(root),
            "root": root}


def spec_of(raw, **kw):
    return TrainSpec(dataset=raw.path, data_sha256=raw.sha256, **kw)


def test_the_readers_need_no_torch():
    code = ("import sys, gpuworker.data as d, gpuworker.data.images, gpuworker.data.tables, gpuworker.data_options;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_npz_of_digits_keeps_its_train_and_test_parts(data):
    raw = read(data["npz"])
    images = digits_u8()
    assert raw.kind == "array" and raw.shape == (8, 8) and raw.scale == 255.0
    assert np.array_equal(raw.train, images[:DIGITS_TRAIN]) and np.array_equal(raw.test, images[DIGITS_TRAIN:])
    assert raw.default_likelihood == "bernoulli"
    p = prepare(spec_of(raw, val_size=200))
    assert (len(p.train), len(p.val), len(p.test)) == (DIGITS_TRAIN - 200, 200, len(images) - DIGITS_TRAIN)
    assert p.train.shape[1] == 64 and p.train.min() >= 0 and p.train.max() == 1.0 and p.mean is None


def test_png_folder_decodes_to_the_same_pixels_as_the_array(data):
    raw = read(data["png"])
    assert raw.kind == "images" and raw.shape == (8, 8)
    assert np.array_equal(raw.train, digits_u8()[:DIGITS_TRAIN]) and len(raw.test) == len(digits_u8()) - DIGITS_TRAIN


def test_csv_of_breast_cancer_is_standardised_on_the_training_split(data):
    names = cancer_columns()
    raw = read(data["csv"], columns=tuple(names))
    assert raw.kind == "table" and raw.shape == (30,) and raw.columns == tuple(names) and raw.test is None
    assert raw.default_likelihood == "gaussian"
    p = prepare(spec_of(raw, columns=",".join(names), likelihood="gaussian", val_size=50))
    assert (len(p.train), len(p.val), len(p.test)) == (569 - 100, 50, 50)   # the test part carved like val
    assert np.allclose(p.train.mean(axis=0), 0, atol=1e-4) and np.allclose(p.train.std(axis=0), 1, atol=1e-3)
    assert not np.allclose(p.val.mean(axis=0), 0, atol=1e-4)                # stats of the training split only
    chosen = prepare(spec_of(read(data["csv"], columns=("mean radius", "worst area")),
                             columns="mean radius,worst area", likelihood="gaussian", val_size=50))
    assert chosen.train.shape[1] == 2 and chosen.columns == ("mean radius", "worst area")


def test_split_is_fixed_by_split_seed(data):
    raw = read_own(data["csv"], ",".join(cancer_columns()))
    spec = spec_of(raw, columns=",".join(cancer_columns()), likelihood="gaussian", val_size=50)
    a, b = prepare(spec), prepare(spec.replace(epochs=9))
    assert np.array_equal(a.val, b.val) and np.array_equal(a.test, b.test)
    assert not np.array_equal(a.val, prepare(spec.replace(split_seed=1)).val)
    assert len(prepare(spec.replace(train_subset=100)).train) == 100


def test_a_folder_fingerprint_is_its_content_not_its_place(data, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(data["png"], copy)
    assert read(copy).sha256 == read(data["png"]).sha256
    image = np.asarray(Image.open(copy / "train" / "0007.png")).copy()
    image[0, 0] ^= 1
    Image.fromarray(image).save(copy / "train" / "0007.png")
    assert read(copy).sha256 != read(data["png"]).sha256
    (copy / "train" / "notes.txt").write_text("not an image: neither read nor fingerprinted")
    shutil.copy(copy / "train" / "0007.png", copy / "train" / "0007b.png")
    assert read(copy).sha256 != read(data["png"]).sha256 and len(read(copy).train) == DIGITS_TRAIN + 1


def test_mixed_sizes_need_image_size_and_colour_makes_rgb(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(folder / "a.png")
    Image.fromarray(np.full((10, 12), 100, np.uint8)).save(folder / "b.png")
    with pytest.raises(DataError, match=r"different sizes .*--image-size H,W") as err:
        read(folder)
    assert str(folder) in str(err.value)
    raw = read(folder, image_hw=(6, 6))
    assert raw.shape == (6, 6) and raw.train[0, 0, 0] == 200
    Image.fromarray(np.zeros((8, 8, 3), np.uint8) + np.array([255, 0, 0], np.uint8)).save(folder / "c.jpg")
    rgb = read(folder, image_hw=(6, 6))
    assert rgb.shape == (3, 6, 6) and list(rgb.train[0, :, 0, 0]) == [200, 200, 200]


def test_sixteen_bit_grey_images_become_floats_in_unit_range(tmp_path):
    folder = tmp_path / "deep"
    folder.mkdir()
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(folder / "a.png")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(folder / "b.png")
    raw = read(folder)
    assert raw.train.dtype == np.float32 and raw.scale == 1.0 and raw.train.max() == 1.0


def test_float_arrays_outside_the_unit_range_default_to_gaussian(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(50, 3)))
    raw = read(tmp_path / "x.npy")
    assert raw.default_likelihood == "gaussian" and raw.shape == (3,)
    with pytest.raises(DataError, match=r"outside the \[0, 1\] of --likelihood bernoulli; use --likelihood gaussian"):
        prepare(spec_of(raw, val_size=5))
    np.save(tmp_path / "nhwc.npy", np.zeros((4, 5, 6, 3), np.uint8))
    assert read(tmp_path / "nhwc.npy").shape == (3, 5, 6)        # channels last -> first


def _bad(tmp_path, kind):
    """Write one bad file of ``kind``; return (path, options for read, a piece of the expected message)."""
    digits = digits_u8()
    if kind == "missing":
        return tmp_path / "nowhere.npz", {}, "no such file or folder"
    if kind == "truncated npy":
        np.save(tmp_path / "t.npy", digits)
        data = (tmp_path / "t.npy").read_bytes()
        (tmp_path / "t.npy").write_bytes(data[:len(data) // 2])
        return tmp_path / "t.npy", {}, "is it truncated?"
    if kind == "truncated npz":
        np.savez(tmp_path / "t.npz", train=digits)
        data = (tmp_path / "t.npz").read_bytes()
        (tmp_path / "t.npz").write_bytes(data[:len(data) - 100])
        return tmp_path / "t.npz", {}, "is it truncated?"
    if kind == "npz without train":
        np.savez(tmp_path / "w.npz", images=digits)
        return tmp_path / "w.npz", {}, "expected arrays 'train' (and optionally 'test') or 'x', found 'images'"
    if kind == "objects":
        np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
        return tmp_path / "o.npy", {}, "holds Python objects"
    if kind == "infinite array":
        np.save(tmp_path / "n.npy", np.array([[0.5, 0.1], [0.1, -np.inf]]))  # NaN is missing (test_own_data_missing)
        return tmp_path / "n.npy", {}, "infinite values (first in example 1)"
    if kind == "one-dimensional":
        np.save(tmp_path / "v.npy", np.arange(10.0))
        return tmp_path / "v.npy", {}, "expected [N, ...]"
    if kind == "non-numeric column":
        return write_cancer_csv(tmp_path), {}, "column 'diagnosis' is not numeric (line 2: 'M'); choose numeric"
    if kind == "inf in table":  # NaN and an empty cell are missing values (test_own_data_missing)
        path = write_cancer_csv(tmp_path, diagnosis=False)
        lines = path.read_text().splitlines()
        lines[5] = "inf," + lines[5].split(",", 1)[1]
        path.write_text("\n".join(lines) + "\n")
        return path, {}, "line 6, column 'mean radius' is 'inf', not a finite number"
    if kind == "ragged row":
        path = tmp_path / "r.csv"
        path.write_text("a,b\n1,2\n3\n")
        return path, {}, "line 3 has 1 fields, the header 2"
    if kind == "unknown column":
        return write_cancer_csv(tmp_path), {"columns": ("radius",)}, "no column 'radius'; its columns are mean radius"
    if kind == "corrupt png":
        folder = write_digits_png(tmp_path, count=20)
        data = (folder / "train" / "0003.png").read_bytes()
        (folder / "train" / "0003.png").write_bytes(data[:len(data) // 2])
        return folder, {}, "0003.png: cannot be decoded"
    if kind == "not an image":
        folder = write_digits_png(tmp_path, count=5)
        (folder / "train" / "0001.png").write_text("hello")
        return folder, {}, "0001.png: is not a PNG or JPEG image"
    if kind == "empty folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", {}, "holds no .png or .jpg images"
    if kind == "unknown suffix":
        (tmp_path / "x.xlsx").write_bytes(b"PK")
        return tmp_path / "x.xlsx", {}, "unknown format .xlsx"
    if kind == "columns on an array":
        return write_digits_npz(tmp_path), {"columns": ("a",)}, "--columns only applies to tables"
    raise AssertionError(kind)


BAD = ["missing", "truncated npy", "truncated npz", "npz without train", "objects", "infinite array", "one-dimensional",
       "non-numeric column", "inf in table", "ragged row", "unknown column", "corrupt png",
       "not an image", "empty folder", "unknown suffix", "columns on an array"]


@pytest.mark.parametrize("kind", BAD)
def test_each_bad_file_is_one_line_naming_it(tmp_path, kind):
    path, options, piece = _bad(tmp_path, kind)
    with pytest.raises(DataError) as err:
        read(path, **options)
    message = str(err.value)
    assert piece in message and str(path) in message and "\n" not in message, message


def test_too_few_rows_for_the_split_says_what_val_size_fits(data):
    raw = read_own(data["csv"], ",".join(cancer_columns()))
    with pytest.raises(DataError) as err:
        prepare(spec_of(raw, columns=",".join(cancer_columns()), likelihood="gaussian"))   # val_size 10,000
    message = str(err.value)
    assert "569 examples are too few for a validation split of 10000 and a test split of 10000" in message
    assert "pass --val-size 113 (at most 284)" in message and str(data["csv"]) in message


def test_parquet_where_pyarrow_is_installed(data, tmp_path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path = tmp_path / "t.parquet"
        path.write_bytes(b"PAR1")
        with pytest.raises(DataError, match=r"reading Parquet needs pyarrow \(pip install pyarrow\)"):
            read(path)
        return
    names = cancer_columns()
    csv_raw = read(data["csv"], columns=tuple(names))
    table = pa.table({n: csv_raw.train[:, i].astype(np.float64) for i, n in enumerate(names)} | {"d": ["x"] * 569})
    pq.write_table(table, tmp_path / "t.parquet")
    raw = read(tmp_path / "t.parquet", columns=tuple(names))
    assert raw.kind == "table" and np.array_equal(raw.train, csv_raw.train)
    with pytest.raises(DataError, match="column 'd' is not numeric"):
        read(tmp_path / "t.parquet")


def test_locate_refuses_a_copy_with_other_content(data, tmp_path):
    from gpuworker.data.own import forget, locate

    raw = read(data["npz"])
    forget()  # as a fresh worker process: no copy read yet
    changed = tmp_path / "digits.npz"
    images = digits_u8()
    images[0, 0, 0] ^= 1
    np.savez(changed, train=images[:DIGITS_TRAIN], test=images[DIGITS_TRAIN:])
    spec = TrainSpec(dataset=str(tmp_path / "gone" / "digits.npz"), data_sha256=raw.sha256, val_size=200)
    with pytest.raises(DataError) as err:
        locate(spec, tmp_path)  # found by name under the data root, but not the head's copy
    assert "has SHA-256" in str(err.value) and "a different copy" in str(err.value)
    assert "pass --data-root DIR holding it" in str(err.value)
    shutil.copy(data["npz"], changed)
    assert locate(spec, tmp_path).sha256 == raw.sha256
