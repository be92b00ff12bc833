"""The built-in data sets, as uint8 tensors (torchvision; Debian's Fashion-MNIST package).

Fashion-MNIST is read from a torchvision root, else from Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``),
else downloaded when ``download`` is set. MNIST, KMNIST and CIFAR-10 come
through torchvision. ``synthetic`` is a small generated set for tests.
"""
from __future__ import annotations

import functools
import gzip
import os
import shutil
from pathlib import Path
from typing import Any

import structlog
import torch

from .base import DataError

__all__ = ["load_images"]

log = structlog.get_logger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _fashion_from_debian(root: Path) -> None:
    """Extract Debian's IDX .gz files into torchvision's layout under ``root``."""
    source = Path(os.environ.get("EVOVAE_FASHION_MNIST_DIR") or DEBIAN_FASHION_MNIST)
    raw = root / "FashionMNIST" / "raw"
    missing = [f"{name}.gz" for name in _IDX_FILES if not (source / f"{name}.gz").is_file()]
    if missing:
        return
    raw.mkdir(parents=True, exist_ok=True)
    for name in _IDX_FILES:
        if not (raw / name).is_file():
            partial = raw / f".{name}.{os.getpid()}.partial"
            with gzip.open(source / f"{name}.gz", "rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(partial, raw / name)  # atomic: a crash never leaves a truncated file behind
    log.info("data.extracted", dataset="fashion-mnist", source=str(source), root=str(root))


def _torchvision_set(name: str, root: Path, train: bool, download: bool) -> Any:  # a torchvision dataset (untyped)
    import torchvision.datasets as tvd

    cls = {"fashion-mnist": tvd.FashionMNIST, "mnist": tvd.MNIST, "kmnist": tvd.KMNIST, "cifar10": tvd.CIFAR10}[name]
    if name == "fashion-mnist" and not download:
        raw = root / "FashionMNIST" / "raw"
        if not all((raw / f).is_file() for f in _IDX_FILES):
            _fashion_from_debian(root)
    try:
        return cls(str(root), train=train, download=download)
    except RuntimeError as exc:
        folder = root / cls.__name__ if name != "cifar10" else root / "cifar-10-batches-py"
        hint = {
            "fashion-mnist": "install Debian's package (apt-get update && apt-get install dataset-fashion-mnist), "
            f"or put the four IDX files {', '.join(_IDX_FILES)} in {root / 'FashionMNIST' / 'raw'}",
        }.get(name, f"place the {cls.__name__} files under {folder}")
        raise DataError(
            f"data set {name!r} not found under {root} ({exc}); {hint}, or pass --download on a machine with internet"
        ) from None


def _synthetic(count: int, seed: int) -> torch.Tensor:
    """Blurry blobs on a 16x16 canvas: structured enough for a VAE to learn."""
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    centre = torch.rand(count, 2, generator=gen) * 10 + 3
    radius = torch.rand(count, 1, 1, generator=gen) * 3 + 1.5
    dist = (ys - centre[:, 0, None, None]) ** 2 + (xs - centre[:, 1, None, None]) ** 2
    images = torch.exp(-dist / (2 * radius**2))
    return (images * 255).round().to(torch.uint8)


@functools.lru_cache(maxsize=4)
def load_images(name: str, root: str, download: bool = False) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Train and test images of a data set as uint8 tensors [N, ...], read once per process."""
    if name == "synthetic":
        train, test = _synthetic(12000, 1), _synthetic(2000, 2)
        return train, test, tuple(train.shape[1:])
    images = []
    for split_is_train in (True, False):
        dataset = _torchvision_set(name, Path(root), split_is_train, download)
        data = torch.as_tensor(dataset.data)
        if data.dtype != torch.uint8:
            raise DataError(f"data set {name!r} has pixels of type {data.dtype}, expected uint8")
        if data.ndim == 4:  # CIFAR-10: N, H, W, C -> N, C, H, W
            data = data.permute(0, 3, 1, 2).contiguous()
        images.append(data)
    log.info("data.loaded", dataset=name, root=root, train=len(images[0]), test=len(images[1]))
    return images[0], images[1], tuple(images[0].shape[1:])
