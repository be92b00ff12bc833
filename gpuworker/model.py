"""The VAE a genotype describes: linear layers with ReLU, Gaussian latent."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from evo.genotype import Genotype

__all__ = ["VAE", "negative_elbo"]


def _mlp(widths: tuple[int, ...], input_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    previous = input_dim
    for width in widths:
        layers += [nn.Linear(previous, width), nn.ReLU()]
        previous = width
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Encoder MLP -> (mu, log-variance) heads; decoder MLP -> logits of the pixels."""

    def __init__(self, genotype: Genotype, input_dim: int) -> None:
        super().__init__()
        self.genotype = genotype
        self.input_dim = input_dim
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
        """Logits of p(x|z); ``torch.sigmoid`` of them are pixel means."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def negative_elbo(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, KL) summed over the batch, in nats.

    Reconstruction is binary cross-entropy summed over pixels on continuous
    pixels in [0, 1] (from logits, for stability); KL is KL(q(z|x) || N(0, I)).
    """
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return recon, kl
