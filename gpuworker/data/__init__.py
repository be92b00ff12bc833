"""Data sets: the built-in ones (torchvision, Debian's Fashion-MNIST) and the user's own (NumPy files,
folders of images, CSV/Parquet tables), fingerprinted, split once and held on the device.

The parts that read, fingerprint, check and split the user's own data need only numpy (and Pillow, the csv
module, pyarrow), so the head imports them without torch: ``DataError``, ``default_root``, ``read``,
``read_own``, ``locate``, ``prepare``. The torch parts - ``Splits``, ``splits`` (tensors on a device) and
``load_images`` (the built-in sets) - are imported when first asked for.
"""
from __future__ import annotations

import importlib
from typing import Any

from .base import DataError, default_root
from .formats import Raw, read
from .own import Prepared, locate, prepare, read_own

__all__ = ["DataError", "Prepared", "Raw", "Splits", "default_root", "load_images", "locate", "prepare", "read",
           "read_own", "splits"]

#: name -> the torch module that defines it, imported on first use
_TORCH_NAMES = {"Splits": "tensors", "splits": "tensors", "load_images": "builtin"}


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_TORCH_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
