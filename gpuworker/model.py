"""The VAE a genotype describes: linear layers with ReLU, Gaussian latent, Bernoulli or Gaussian decoder."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from evo.genotype import Genotype
from evo.spec import LIKELIHOODS

__all__ = ["VAE", "kl_divergence", "negative_elbo", "reconstruction_nll"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _mlp(widths: tuple[int, ...], input_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    previous = input_dim
    for width in widths:
        layers += [nn.Linear(previous, width), nn.ReLU()]
        previous = width
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Encoder MLP -> (mu, log-variance) heads; decoder MLP -> the parameters of p(x|z): the logits of the
    values (``bernoulli``) or the means of a unit-variance Gaussian on standardised features (``gaussian``).
    Both likelihoods have the same layers, so a state_dict does not say which one it was trained with."""

    def __init__(self, genotype: Genotype, input_dim: int, likelihood: str = "bernoulli") -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
        self.genotype = genotype
        self.input_dim = input_dim
        self.likelihood = likelihood
        self.encoder = _mlp(genotype.encoder, input_dim)
        self.mu = nn.Linear(genotype.encoder[-1], genotype.latent)
        self.logvar = nn.Linear(genotype.encoder[-1], genotype.latent)
        decoder = _mlp(genotype.decoder, genotype.latent)
        decoder.append(nn.Linear(genotype.decoder[-1], input_dim))
        self.decoder = decoder

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's output: logits (``bernoulli``) or means (``gaussian``); see :meth:`mean`."""
        return self.decoder(z)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z): sigmoid of the logits, or the Gaussian's mean (standardised units)."""
        out = self.decode(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def reconstruction_nll(out: torch.Tensor, x: torch.Tensor, likelihood: str = "bernoulli") -> torch.Tensor:
    """-log p(x|z) of each row, in nats: binary cross-entropy summed over the values (from logits), or the
    unit-variance Gaussian's 0.5 * ||x - mean||^2 + D/2 * log(2 pi)."""
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)
    return 0.5 * (x - out).pow(2).sum(-1) + x.shape[-1] * _HALF_LOG_2PI


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) of each row, in nats (closed form)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def negative_elbo(out: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  likelihood: str = "bernoulli") -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, KL) summed over the batch, in nats.

    Reconstruction is -log p(x|z) for one z sample: binary cross-entropy summed over the values in [0, 1]
    (from logits, for stability), or the unit-variance Gaussian negative log-density of standardised
    features; KL is KL(q(z|x) || N(0, I)).
    """
    if likelihood == "bernoulli":
        recon = F.binary_cross_entropy_with_logits(out, x, reduction="sum")
    else:
        recon = 0.5 * (x - out).pow(2).sum() + x.numel() * _HALF_LOG_2PI
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return recon, kl
