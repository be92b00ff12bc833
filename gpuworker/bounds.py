"""The importance-weighted bound on log p(x) (Burda, Grosse & Salakhutdinov 2016, "IWAE").

For k samples z_i ~ q(z|x)::

    log p(x) >= L_k(x) = log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)

L_1 is the ELBO in expectation (with the KL term sampled instead of in closed form), and
L_1 <= L_k <= L_m <= log p(x) in expectation for k <= m: the bound tightens as k grows. The field compares
VAEs by -L_5000 in nats per example. Computed in chunks of samples, each folded into a running logsumexp,
so k = 5000 needs no more memory than one chunk (about ``max_rows`` decoder rows at a time).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .model import VAE, reconstruction_nll

__all__ = ["iw_log_likelihood", "negative_iw_bound"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@torch.no_grad()
def iw_log_likelihood(model: VAE, x: torch.Tensor, k: int, *, generator: torch.Generator | None = None,
                      max_rows: int = 8192) -> torch.Tensor:
    """L_k(x) for each row of ``x`` (nats), drawing ``k`` samples per row in chunks of at most
    ``max_rows`` decoder rows."""
    if type(k) is not int or k < 1:
        raise ValueError(f"the number of importance samples must be an integer >= 1, got {k!r}")
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    rows, latent = mu.shape
    log_q_const = -0.5 * logvar.sum(-1) - latent * _HALF_LOG_2PI  # log q(z|x) = this - 0.5 * ||eps||^2
    chunk = max(1, max_rows // max(1, rows))
    total = torch.full((rows,), -math.inf, device=x.device, dtype=mu.dtype)
    for start in range(0, k, chunk):
        count = min(chunk, k - start)
        eps = torch.randn(count, rows, latent, generator=generator, device=x.device, dtype=mu.dtype)
        z = mu + std * eps
        out = model.decode(z.reshape(count * rows, latent)).reshape(count, rows, -1)
        log_px_z = -reconstruction_nll(out, x.expand(count, *x.shape), model.likelihood)
        log_pz = -0.5 * z.pow(2).sum(-1) - latent * _HALF_LOG_2PI
        log_qz = log_q_const - 0.5 * eps.pow(2).sum(-1)
        total = torch.logaddexp(total, torch.logsumexp(log_px_z + log_pz - log_qz, dim=0))
    return total - math.log(k)


@torch.no_grad()
def negative_iw_bound(model: VAE, images: torch.Tensor, k: int, *, seed: int = 0, batch: int = 256,
                      max_rows: int = 8192, tick: Callable[[], None] | None = None) -> float:
    """-L_k averaged over the rows of ``images``: nats per example (lower is better). ``tick`` is called
    after each batch of rows (the worker's hook to heartbeat progress and to stop)."""
    was_training = model.training
    model.eval()
    device = images.device
    generator = torch.Generator(device=device).manual_seed(seed)
    total = 0.0
    for start in range(0, len(images), batch):
        total += float(iw_log_likelihood(model, images[start:start + batch], k, generator=generator,
                                         max_rows=max_rows).sum())
        if tick is not None:
            tick()
    model.train(was_training)
    return -total / len(images)
