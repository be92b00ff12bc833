"""A folder of PNG/JPEG images as one uint8 array, decoded with Pillow (torchvision's own image library).

Pillow rather than torchvision.io: it is already installed with torchvision, decodes PNG and JPEG in every
mode (grey, palette, RGB, alpha, 16-bit grey), resizes with antialiasing, and keeps this module free of
torch, so the head checks a folder before it creates anything without importing torch.

The images are every ``.png``, ``.jpg`` and ``.jpeg`` file under the folder (any depth, names starting
with ``.`` skipped), in the order of their relative paths; with a ``train/`` subfolder, the images under
``train/`` are the training set and those under ``test/`` (if present) the test set, and nothing else is
read. All of one size, or ``image_hw`` = (H, W) to resize them all (bilinear, antialiased). Grey if every
image is grey (modes 1, L, LA, I;16, I), else RGB (grey ones repeated in the three channels; palette
images count as colour; alpha is dropped). 8-bit images come out as uint8 (divided by 255 for use); if any
is 16-bit, all come out as floats in [0, 1].
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .base import DataError
from .fingerprint import digest, listing_digest
from .formats import Raw

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["IMAGE_SUFFIXES", "read_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GREY = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"}
_DEEP = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.rglob("*")
         if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
         and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
        key=lambda p: p.relative_to(folder).as_posix())


def _open(path: Path) -> tuple[bytes, PILImage.Image]:
    """(bytes, a Pillow image with its header read) of ``path``; DataError if it is no image."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DataError(f"{path}: is not a PNG or JPEG image Pillow can read; replace or remove it") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    return data, image


def _decode(path: Path, image: PILImage.Image, colour: bool, size: tuple[int, int] | None) -> np.ndarray:
    """One image as [H, W] (grey) or [3, H, W] (colour): uint8, or float32 in [0, 1] for 16-bit grey."""
    from PIL import Image

    deep = image.mode in _DEEP and not colour
    try:
        image = image.convert("RGB" if colour else "F" if deep else "L")
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(image)
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt image data
        raise DataError(f"{path}: cannot be decoded ({str(exc).strip() or type(exc).__name__}): the file is "
                        "truncated or corrupt; replace or remove it") from None
    if deep:
        return np.clip(array / 65535.0, 0.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1)) if colour else array


def _stack(files: list[Path], opened: dict, colour: bool, size: tuple[int, int] | None) -> np.ndarray:
    arrays = [_decode(p, opened[p][1], colour, size) for p in files]
    if any(a.dtype != np.uint8 for a in arrays):
        arrays = [a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a for a in arrays]
    return np.stack(arrays)


def read_folder(folder: Path, image_hw: tuple[int, int] | None = None) -> Raw:
    """The images of ``folder`` (see the module's docstring); DataError with one line if unusable."""
    split = (folder / "train").is_dir()
    train_files = _images_under(folder / "train" if split else folder)
    test_files = _images_under(folder / "test") if split and (folder / "test").is_dir() else []
    if not train_files:
        where = folder / "train" if split else folder
        raise DataError(f"{where}: holds no .png or .jpg images; point --dataset at a folder of images")
    opened = {p: _open(p) for p in train_files + test_files}
    if image_hw is None:
        sizes: dict[tuple[int, int], Path] = {}
        for p, (_, image) in opened.items():
            sizes.setdefault(image.size, p)
        if len(sizes) > 1:
            (s1, p1), (s2, p2) = list(sizes.items())[:2]
            raise DataError(f"{folder}: images of different sizes ({p1.relative_to(folder)} is {s1[1]}x{s1[0]}, "
                            f"{p2.relative_to(folder)} is {s2[1]}x{s2[0]}); pass --image-size H,W to resize them all")
    colour = any(image.mode not in _GREY for _, image in opened.values())
    train = _stack(train_files, opened, colour, image_hw)
    test = _stack(test_files, opened, colour, image_hw) if test_files else None
    sha = listing_digest((p.relative_to(folder).as_posix(), digest(data)) for p, (data, _) in opened.items())
    scale = 255.0 if train.dtype == np.uint8 else 1.0
    if test is not None and test.dtype != train.dtype:  # 16-bit images on one side only: all floats in [0, 1]
        train, test = [a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a for a in (train, test)]
        scale = 1.0
    return Raw(str(folder), sha, "images", train, test, tuple(int(s) for s in train.shape[1:]), scale)
