"""Pictures (and rows) of trained VAEs, and of training runs.

Image grids go through ``torchvision.utils.make_grid`` / ``save_image``;
curves through matplotlib's Agg backend (no display needed); a table model's
samples and reconstructions are rows of a CSV (the csv module). Every function
takes plain tensors or numbers and a path, so the experiment, the export CLI
and the tests draw the same pictures.

Decoded values are the means of p(x|z) (sigmoid of the logits for Bernoulli,
the Gaussian's mean for Gaussian), mapped back to the data's units with the
model's standardisation (``mean``, ``std``) when it has one.
"""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Normal

from .model import VAE

Standardisation = tuple[torch.Tensor, torch.Tensor] | None

__all__ = [
    "as_images",
    "destandardise",
    "grid_size",
    "manifold_images",
    "plot_curves",
    "reconstruction_rows",
    "reconstruction_table",
    "reconstructions",
    "sample_images",
    "save_grid",
    "write_rows",
]


def as_images(flat: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Rows of pixels -> an image batch [N, C, H, W] (a 2-D ``shape`` is one channel)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ValueError(f"image shape must be (H, W) or (C, H, W), got {shape}")
    return flat.detach().reshape(len(flat), *shape).clamp(0.0, 1.0).cpu()


def grid_size(count: int, image_hw: tuple[int, int], nrow: int, padding: int = 2) -> tuple[int, int]:
    """(width, height) in pixels of the grid :func:`save_grid` writes for ``count`` images."""
    cols = min(nrow, count)
    rows = -(-count // nrow)
    h, w = image_hw
    return cols * (w + padding) + padding, rows * (h + padding) + padding


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, padding: int = 2,
              pad_value: float = 1.0) -> Path:
    """Write an image batch [N, C, H, W] in [0, 1] as one PNG grid, ``nrow`` images a row."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, str(path), nrow=nrow, padding=padding, pad_value=pad_value)
    return path


def destandardise(rows: torch.Tensor, standardisation: Standardisation) -> torch.Tensor:
    """Rows in the model's (standardised) units back in the data's: ``rows * std + mean``."""
    if standardisation is None:
        return rows
    mean, std = (v.to(rows.device) for v in standardisation)
    return rows * std + mean


@torch.no_grad()
def sample_images(model: VAE, count: int, seed: int = 0, standardisation: Standardisation = None) -> torch.Tensor:
    """``count`` draws of the mean of p(x|z), z ~ N(0, I), as rows in the data's units."""
    if count < 1:
        raise ValueError(f"the number of samples must be >= 1, got {count}")
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(count, model.genotype.latent, generator=generator).to(device)
    return destandardise(model.mean(z), standardisation)


@torch.no_grad()
def reconstructions(model: VAE, rows: torch.Tensor, standardisation: Standardisation = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(originals, reconstructions) in the data's units: the mean decode of mu for each row of ``rows``
    (rows as the model sees them: standardised for a Gaussian model)."""
    model.eval()
    x = rows.to(next(model.parameters()).device)
    mu, _ = model.encode(x)
    return destandardise(x, standardisation), destandardise(model.mean(mu), standardisation)


def reconstruction_table(model: VAE, rows: torch.Tensor, standardisation: Standardisation = None
                         ) -> tuple[torch.Tensor, list[str]]:
    """Each row of ``rows`` followed by its reconstruction, in the data's units, with a label for each
    (``original i``, ``reconstruction i``): what ``evovae reconstruct`` writes for a model of a table."""
    x, recon = reconstructions(model, rows, standardisation)
    labels = [f"{kind} {i}" for i in range(len(x)) for kind in ("original", "reconstruction")]
    return torch.stack([x, recon], dim=1).reshape(2 * len(x), -1), labels


@torch.no_grad()
def reconstruction_rows(model: VAE, images: torch.Tensor, nrow: int = 8,
                        standardisation: Standardisation = None) -> torch.Tensor:
    """Originals and their reconstructions (the mean decode of mu) as rows,
    alternating: ``nrow`` originals, then the same ``nrow`` reconstructed, and so on.
    A last short row is padded with blank (zero) images."""
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    x, recon = reconstructions(model, images, standardisation)
    rows = []
    for start in range(0, len(x), nrow):
        for part in (x[start:start + nrow], recon[start:start + nrow]):
            if len(part) < nrow:
                part = torch.cat([part, part.new_zeros(nrow - len(part), part.shape[1])])
            rows.append(part)
    return torch.cat(rows)


def write_rows(rows: torch.Tensor, columns: Sequence[str], path: str | Path,
               labels: Sequence[str] | None = None, label_name: str = "row") -> Path:
    """Write ``rows`` as a CSV with a header of ``columns`` (``x0, x1, ...`` when empty); with ``labels``,
    a first column ``label_name`` holding each row's label."""
    values = rows.detach().cpu().tolist()
    names = list(columns) or [f"x{i}" for i in range(rows.shape[1])]
    if len(names) != rows.shape[1]:
        raise ValueError(f"{len(names)} column names for rows of {rows.shape[1]} values")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(([label_name] if labels is not None else []) + names)
        for i, row in enumerate(values):
            writer.writerow(([labels[i]] if labels is not None else []) + [f"{v:.6g}" for v in row])
    return path


@torch.no_grad()
def manifold_images(model: VAE, steps: int = 20, standardisation: Standardisation = None) -> torch.Tensor:
    """The learned 2-D manifold (the paper's Fig. 4): decode z = Phi^-1(u) for a
    ``steps`` x ``steps`` grid of u over the unit square (cell centres, so no
    infinite z). Row-major, z1 rising left to right, z2 falling top to bottom."""
    if model.genotype.latent != 2:
        raise ValueError(f"a manifold grid needs a 2-D latent space, {model.genotype} has {model.genotype.latent}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    model.eval()
    device = next(model.parameters()).device
    u = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    z = Normal(0.0, 1.0).icdf(u).float()
    z2, z1 = torch.meshgrid(z.flip(0), z, indexing="ij")
    grid = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1).to(device)
    return destandardise(model.mean(grid), standardisation)


def plot_curves(series: Mapping[str, Sequence[float]], path: str | Path, *, title: str,
                xlabel: str = "epoch", ylabel: str = "validation negative ELBO (nats/image)",
                styles: Mapping[str, Mapping[str, Any]] | None = None, x_start: int = 1) -> Path:
    """One labelled line per entry of ``series`` (x = x_start, x_start + 1, ...), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=110)
    try:
        for label, values in series.items():
            xs = list(range(x_start, x_start + len(values)))
            ax.plot(xs, list(values), label=label, **dict((styles or {}).get(label, {"marker": "o", "markersize": 3})))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
