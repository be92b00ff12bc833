"""A saved model as a Python object: raw data in, the stored preprocessing applied, numbers out.

:class:`Model` wraps the VAE of a model directory (:func:`gpuworker.export.load_model`) with what its
``model.json`` says about the data it was trained on, so a caller passes examples in the form they were
trained on and never redoes the preprocessing by hand:

* images and arrays: ``[N, *input_shape]`` (or ``[N, input_dim]`` flattened, or one example of
  ``input_shape``); uint8 values are 8-bit pixels and are divided by 255, other numbers are taken as they are
  (as the readers of gpuworker/data take them). A model with the Bernoulli likelihood takes values in [0, 1].
* tables: rows in the table's own units, as a DataFrame-like object with the stored columns (chosen by name,
  others ignored) or an array of ``[N, D]`` in the stored column order.

A model with the Gaussian likelihood standardises every input with the training split's per-feature mean and
standard deviation (``model.json``, ``data.standardisation``) and maps what it decodes back to the data's units.

Anything a model cannot take is an :class:`InputError` (a ValueError) of one line naming what differs: the
shape, the columns, the value range, a NaN.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .bounds import iw_log_likelihood
from .export import load_model, standardisation_of
from .figures import destandardise, reconstructions, sample_images
from .model import VAE, kl_divergence, reconstruction_nll

__all__ = ["Encoding", "InputError", "Model", "examples_of_file"]

_BATCH = 1024      # rows per forward pass
_IW_BATCH = 256    # rows per importance-weighted batch (times k decoder rows, chunked inside)


class InputError(ValueError):
    """Data a model cannot take (another shape, other columns, values out of range, NaN): one line."""


class Encoding(NamedTuple):
    """The encoder's Gaussian q(z|x) for each example: ``mean`` and ``log_var`` (the log-variance, as the network
    outputs it), each ``[N, latent]``; ``var`` and ``std`` derived from it."""

    mean: np.ndarray
    log_var: np.ndarray

    @property
    def var(self) -> np.ndarray:
        return np.exp(self.log_var)

    @property
    def std(self) -> np.ndarray:
        return np.exp(0.5 * self.log_var)


def _product(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


class Model:
    """A trained VAE and its data's preprocessing (see the module's docstring). Load one with :meth:`load`."""

    def __init__(self, vae: VAE, info: dict[str, Any], path: str | os.PathLike[str] | None = None) -> None:
        self.vae = vae.eval()
        self.info = info
        self.path = Path(path) if path is not None else None
        data = info.get("data")
        data = data if isinstance(data, dict) else {}
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in info["input_shape"])
        self.kind: str = str(data.get("kind") or "images")
        self.columns: tuple[str, ...] = tuple(data.get("columns") or ())
        stats = standardisation_of(info)
        self._stats = stats
        self.standardisation: tuple[np.ndarray, np.ndarray] | None = (
            None if stats is None else (stats[0].numpy().copy(), stats[1].numpy().copy()))

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Model:
        """The model saved in the directory ``path`` (``evovae export`` or a search result's export), on
        ``device``. ModelDirError (a ValueError) for a missing, corrupt, tampered or foreign directory."""
        vae, info = load_model(Path(path), device)
        return cls(vae, info, path)

    # -- what it is ---------------------------------------------------------------------------
    @property
    def genotype(self) -> str:
        return str(self.vae.genotype)

    @property
    def latent(self) -> int:
        return self.vae.genotype.latent

    @property
    def input_dim(self) -> int:
        return self.vae.input_dim

    @property
    def likelihood(self) -> str:
        return self.vae.likelihood

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path is not None else ""
        what = f"{len(self.columns)} columns" if self.kind == "table" else f"examples of {self.input_shape}"
        return f"<evovae Model {self.genotype} ({self.likelihood}, {what}){where}>"

    # -- raw data -> the rows the network takes ----------------------------------------------------
    def _array(self, x: Any, name: str) -> np.ndarray:
        if hasattr(x, "columns") and hasattr(x, "to_numpy"):  # a DataFrame (pandas, or alike)
            return self._frame(x, name)
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            x = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
            return x.numpy()
        try:
            array = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name}: cannot be read as an array of numbers ({exc})") from None
        return array

    def _frame(self, frame: Any, name: str) -> np.ndarray:
        names = [str(c) for c in frame.columns]
        if self.kind != "table":
            raise InputError(f"{name}: a table (columns {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}); "
                             f"this model was trained on {self.kind} of shape {self.input_shape}: pass an array")
        missing = [c for c in self.columns if c not in names]
        if missing:
            raise InputError(f"{name}: no column {', '.join(map(repr, missing))}; the model takes the columns "
                             f"{', '.join(self.columns)}")
        by_name = {str(c): c for c in frame.columns}
        out = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        for j, column in enumerate(self.columns):
            series = frame[by_name[column]]
            kind = getattr(getattr(series, "dtype", None), "kind", "O")
            if kind not in "biuf":
                raise InputError(f"{name}: column {column!r} is not numeric ({series.dtype})")
            try:
                out[:, j] = series.to_numpy(dtype="float64", na_value=np.nan)
            except TypeError:  # not pandas: no na_value
                out[:, j] = np.asarray(series.to_numpy(), dtype=np.float64)
        return out

    def _shaped(self, array: np.ndarray, name: str) -> np.ndarray:
        """``array`` as ``[N, input_dim]``: a batch of the stored shape, flattened rows, channels-last images,
        or one example; InputError naming the shapes otherwise."""
        shape, dim = self.input_shape, self.input_dim
        if array.dtype.kind not in "biuf":
            raise InputError(f"{name}: holds {array.dtype} values; the model takes numbers")
        if array.shape == shape:
            array = array[None]  # one example
        if array.ndim < 2 or len(array) == 0:
            raise InputError(f"{name}: shape {array.shape}: give [N, ...], one or more examples of {shape}")
        if array.shape[1:] == shape or array.shape[1:] == (dim,):
            return array.reshape(len(array), dim)
        if len(shape) == 3 and array.ndim == 4 and array.shape[1:] == (shape[1], shape[2], shape[0]):
            return np.ascontiguousarray(array.transpose(0, 3, 1, 2)).reshape(len(array), dim)  # channels last
        if self.kind == "table":
            named = f" ({', '.join(self.columns)})" if self.columns else ""
            given = (f"rows of {array.shape[1]} values" if array.ndim == 2 else
                     f"examples of shape {tuple(array.shape[1:])}")
            raise InputError(f"{name}: {given}; the model takes rows of {dim} columns{named}")
        raise InputError(f"{name}: examples of shape {tuple(array.shape[1:])}; the model {self.genotype} was "
                         f"trained on examples of shape {shape}")

    def rows(self, x: Any, name: str = "x") -> torch.Tensor:
        """Raw examples ``x`` as the network takes them: float rows ``[N, input_dim]`` on the model's device,
        pixels divided by 255, standardised for a Gaussian model. ``name`` is what an error calls ``x``."""
        array = self._shaped(self._array(x, name), name)
        if array.dtype == np.uint8 and self.kind != "table":
            values = array.astype(np.float32) / np.float32(255.0)
        else:
            values = array.astype(np.float32)
        values = self._filled(values, name)
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            first = int(np.flatnonzero(~finite)[0])
            raise InputError(f"{name}: holds infinite values (first in example {first}); remove them")
        if self.likelihood == "bernoulli":
            low, high = float(values.min()), float(values.max())
            if low < 0 or high > 1:
                raise InputError(f"{name}: values run from {low:g} to {high:g}; this model was trained on values in "
                                 "[0, 1]: pass uint8 pixels (divided by 255 here) or floats in [0, 1]")
        rows = torch.from_numpy(values).to(self.device)
        if self._stats is not None:
            mean, std = (v.to(rows.device) for v in self._stats)
            rows = (rows - mean) / std
        return rows

    def _filled(self, values: np.ndarray, name: str) -> np.ndarray:
        """``values`` (the data's units) with each missing value (NaN) filled as training filled it: with the
        training split's mean of its feature when the model was trained with the missing rule ``mean``
        (``model.json``, ``data.missing.fill``); otherwise a missing value is an InputError naming the first."""
        gaps = np.isnan(values)
        if not gaps.any():
            return values
        data = self.info.get("data")
        missing = data.get("missing") if isinstance(data, dict) else None
        fill = missing.get("fill") if isinstance(missing, dict) else None
        if fill is not None and len(fill) == values.shape[1]:
            return np.where(gaps, np.asarray(fill, dtype=values.dtype), values)
        rule = missing.get("rule", "error") if isinstance(missing, dict) else "error"
        gappy = np.flatnonzero(gaps.any(axis=1))
        raise InputError(f"{name}: {int(gaps.sum())} missing values (NaN) in {len(gappy)} examples (the first in "
                         f"example {int(gappy[0])}); the model was trained with the missing rule {rule!r}, which has "
                         "no values to fill them with: fill them or leave those examples out")

    def _examples(self, rows: torch.Tensor) -> np.ndarray:
        """Decoded rows (the data's units) as ``[N, *input_shape]``."""
        return rows.detach().cpu().numpy().reshape(len(rows), *self.input_shape)

    # -- the model ------------------------------------------------------------------------------
    def encode(self, x: Any) -> Encoding:
        """q(z|x) of each example: :class:`Encoding` (``mean``, ``log_var``; ``.var``, ``.std``), ``[N, latent]``."""
        return self.encode_rows(self.rows(x))

    @torch.no_grad()
    def encode_rows(self, rows: torch.Tensor) -> Encoding:
        """:meth:`encode` of rows already made by :meth:`rows`."""
        means, log_vars = [], []
        for start in range(0, len(rows), _BATCH):
            mu, logvar = self.vae.encode(rows[start:start + _BATCH])
            means.append(mu.cpu())
            log_vars.append(logvar.cpu())
        return Encoding(torch.cat(means).numpy(), torch.cat(log_vars).numpy())

    @torch.no_grad()
    def decode(self, z: Any) -> np.ndarray:
        """The mean of p(x|z) for each latent vector of ``z`` ``[N, latent]``, in the data's units, as
        ``[N, *input_shape]`` (in [0, 1] for a Bernoulli model)."""
        latent = z.detach().cpu().float().numpy() if isinstance(z, torch.Tensor) else np.asarray(z, dtype=np.float32)
        if latent.ndim == 1 and latent.shape == (self.latent,):
            latent = latent[None]
        if latent.ndim != 2 or latent.shape[1] != self.latent or len(latent) == 0:
            raise InputError(f"z: shape {latent.shape}; the model's latent space has {self.latent} dimensions: "
                             f"give [N, {self.latent}]")
        if not np.isfinite(latent).all():
            raise InputError("z: holds NaN or infinite values")
        zs = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32)).to(self.device)
        out = torch.cat([self.vae.mean(zs[start:start + _BATCH]) for start in range(0, len(zs), _BATCH)])
        return self._examples(destandardise(out, self._stats))

    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        """``n`` draws of the mean of p(x|z), z ~ N(0, I), in the data's units, ``[n, *input_shape]`` (as
        ``evovae sample`` draws them)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"n: the number of samples must be an integer >= 1, got {n!r}")
        return self._examples(sample_images(self.vae, n, seed, self._stats))

    def reconstruct(self, x: Any) -> np.ndarray:
        """The mean of p(x|z) at z = the encoder's mean, for each example of ``x``, in the data's units
        (``[N, *input_shape]``; floats in [0, 1] for a Bernoulli model, whatever ``x``'s type)."""
        return self.reconstruct_rows(self.rows(x))

    def reconstruct_rows(self, rows: torch.Tensor) -> np.ndarray:
        """:meth:`reconstruct` of rows already made by :meth:`rows`."""
        parts = [reconstructions(self.vae, rows[start:start + _BATCH], self._stats)[1]
                 for start in range(0, len(rows), _BATCH)]
        return self._examples(torch.cat(parts))

    def elbo(self, x: Any, *, seed: int = 0) -> np.ndarray:
        """The evidence lower bound log p(x) >= E_q[log p(x|z)] - KL(q(z|x) || p(z)) of each example, in nats
        (one z sample per example, drawn with ``seed``; KL in closed form). Higher is better; the loss the
        search minimises is its negative, averaged. For a Gaussian model the nats are those of the standardised
        features (see docs/api.md)."""
        return self.elbo_rows(self.rows(x), seed=seed)

    @torch.no_grad()
    def elbo_rows(self, rows: torch.Tensor, *, seed: int = 0) -> np.ndarray:
        """:meth:`elbo` of rows already made by :meth:`rows`."""
        generator = torch.Generator(device=rows.device).manual_seed(seed)
        out = []
        for start in range(0, len(rows), _BATCH):
            part = rows[start:start + _BATCH]
            mu, logvar = self.vae.encode(part)
            eps = torch.randn(mu.shape, generator=generator, device=rows.device, dtype=mu.dtype)
            decoded = self.vae.decode(mu + torch.exp(0.5 * logvar) * eps)
            nll = reconstruction_nll(decoded, part, self.likelihood)
            out.append(-(nll + kl_divergence(mu, logvar)).cpu())
        return torch.cat(out).double().numpy()

    def iw_bound(self, x: Any, *, k: int = 100, seed: int = 0) -> np.ndarray:
        """The importance-weighted bound L_k = log (1/k) sum_i p(x, z_i) / q(z_i|x) of each example, in nats
        (Burda et al. 2016): below log p(x), above the ELBO in expectation, tighter as ``k`` grows (papers use
        5000). Higher is better."""
        self._check_k(k)
        return self.iw_bound_rows(self.rows(x), k=k, seed=seed)

    @staticmethod
    def _check_k(k: object) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k: the number of importance samples must be an integer >= 1, got {k!r}")

    @torch.no_grad()
    def iw_bound_rows(self, rows: torch.Tensor, *, k: int = 100, seed: int = 0) -> np.ndarray:
        """:meth:`iw_bound` of rows already made by :meth:`rows`."""
        self._check_k(k)
        generator = torch.Generator(device=rows.device).manual_seed(seed)
        parts = [iw_log_likelihood(self.vae, rows[start:start + _IW_BATCH], k, generator=generator).cpu()
                 for start in range(0, len(rows), _IW_BATCH)]
        return torch.cat(parts).double().numpy()


def examples_of_file(path: str | Path, model: Model) -> np.ndarray:
    """Every example of the data file or folder ``path`` (a new file of the kind ``model`` was trained on), as
    read by gpuworker/data (the training part, then the test part where the file has one): uint8 pixels or
    float32 numbers, ``[N, ...]``. A table is read with the model's columns (a missing one is named), a folder of
    images resized as the model's were (its ``image_size``); DataError (one line) for a file that cannot be read.
    The shape is checked by :meth:`Model.rows`."""
    from evo.spec import TrainSpec

    from .data import read
    from .data.formats import TABLE_SUFFIXES

    path = Path(path)
    spec = TrainSpec.from_dict(model.info.get("spec") or {})
    table = path.is_file() and path.suffix.lower() in TABLE_SUFFIXES
    if table and model.kind != "table":
        kind = "images" if model.kind == "images" else "arrays"
        raise InputError(f"{path}: a table; the model {model.genotype} was trained on {kind} of shape "
                         f"{model.input_shape}: give a NumPy file or a folder of images")
    columns = model.columns if table and model.kind == "table" else ()
    raw = read(path, columns, spec.image_hw if path.is_dir() else None)
    return raw.train if raw.test is None else np.concatenate([raw.train, raw.test])
