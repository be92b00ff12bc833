"""Small saved models, trained in a second on data written here, for the tests of the Python API's Model and of
``evovae encode / score / reconstruct --data``: 6x6 uint8 "images" (Bernoulli) and a 3-column table (Gaussian)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from evo.genotype import parse_genotype
from evo.spec import TrainSpec
from gpuworker.data import read_own
from gpuworker.export import train_and_save

TABLE_COLUMNS = ("height", "weight", "age")


def blob_images(n: int = 300, seed: int = 0, size: int = 6) -> np.ndarray:
    """``n`` uint8 images of ``size`` x ``size``: a bright square at a random place on a dark ground."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), dtype=np.uint8)
    for image, (r, c) in zip(images, rng.integers(0, size - 2, (n, 2)), strict=True):
        image[r:r + 3, c:c + 3] = 230
    return images + rng.integers(0, 20, images.shape, dtype=np.uint8)


def people(n: int = 400, seed: int = 0) -> np.ndarray:
    """Rows of (height cm, weight kg, age years), weight following height."""
    rng = np.random.default_rng(seed)
    height = rng.normal(170, 10, n)
    return np.stack([height, 0.9 * height - 85 + rng.normal(0, 6, n), rng.uniform(20, 70, n)], axis=1)


def write_table(path: Path, rows: np.ndarray, columns: tuple[str, ...] = TABLE_COLUMNS,
                extra: dict[str, list[str]] | None = None) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*columns, *(extra or {})])
        for i, row in enumerate(rows):
            writer.writerow([repr(float(v)) for v in row] + [values[i] for values in (extra or {}).values()])
    return path


def image_model(directory: Path, genotype: str = "50|4|50", epochs: int = 2) -> Path:
    """A model of :func:`blob_images` saved in ``directory/images-model``; the data in ``directory/blobs.npy``."""
    data = directory / "blobs.npy"
    np.save(data, blob_images())
    spec = TrainSpec(dataset=str(data), data_sha256=read_own(data).sha256, val_size=50, epochs=epochs, batch_size=32)
    out = directory / "images-model"
    train_and_save(parse_genotype(genotype), spec, out, device="cpu")
    return out


def table_model(directory: Path, genotype: str = "50|2|50", epochs: int = 5) -> Path:
    """A Gaussian model of :func:`people` saved in ``directory/table-model``; the data in ``directory/people.csv``."""
    data = write_table(directory / "people.csv", people())
    columns = ",".join(TABLE_COLUMNS)
    spec = TrainSpec(dataset=str(data), data_sha256=read_own(data, columns).sha256, columns=columns,
                     likelihood="gaussian", val_size=50, epochs=epochs, batch_size=32)
    out = directory / "table-model"
    train_and_save(parse_genotype(genotype), spec, out, device="cpu")
    return out
