"""Real data nobody here made, written in the forms evovae reads: scikit-learn's bundled digits
(1797 8x8 images, 17 grey levels) as an .npz and as a PNG folder, and its bundled breast-cancer
table (569 rows x 30 numeric features, plus the diagnosis as a letter) as a CSV. Offline: the data
ships inside scikit-learn's wheel."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

DIGITS_TRAIN = 1500  # the first 1500 digits train, the other 297 are the test part


def digits_u8() -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.round(load_digits().images / 16.0 * 255.0).astype(np.uint8)


def write_digits_npz(directory: Path, name: str = "digits.npz") -> Path:
    images = digits_u8()
    path = directory / name
    np.savez(path, train=images[:DIGITS_TRAIN], test=images[DIGITS_TRAIN:])
    return path


def write_digits_png(directory: Path, name: str = "digits-png", count: int | None = None) -> Path:
    """The digits as PNG files under NAME/train/ and NAME/test/ (the first ``count`` only, if given)."""
    from PIL import Image

    images = digits_u8()[:count]
    root = directory / name
    for i, image in enumerate(images):
        part = root / ("train" if i < DIGITS_TRAIN else "test")
        part.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(part / f"{i:04d}.png")
    return root


def cancer_columns() -> list[str]:
    from sklearn.datasets import load_breast_cancer

    return [str(name) for name in load_breast_cancer().feature_names]


def write_cancer_csv(directory: Path, name: str = "cancer.csv", diagnosis: bool = True) -> Path:
    """The breast-cancer table; with ``diagnosis`` a last, non-numeric column of M/B."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    path = directory / name
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(cancer_columns() + (["diagnosis"] if diagnosis else []))
        for row, target in zip(data.data, data.target, strict=True):
            writer.writerow([repr(float(v)) for v in row] + (["MB"[target]] if diagnosis else []))
    return path
