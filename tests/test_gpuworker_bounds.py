"""The importance-weighted bound (gpuworker.bounds) against the ELBO and against log p(x) computed by
quadrature, for a VAE with a one-dimensional latent trained on real digits (both likelihoods)."""
import math

import pytest
import torch

from evo.genotype import parse_genotype
from evo.spec import TrainSpec
from gpuworker.bounds import iw_log_likelihood, negative_iw_bound
from gpuworker.data import read_own, splits
from gpuworker.model import VAE, kl_divergence, reconstruction_nll
from gpuworker.train import measure, train
from own_data_helpers import write_digits_npz

ROWS = 40


@pytest.fixture(scope="module", params=["bernoulli", "gaussian"])
def trained(request, tmp_path_factory):
    """A 64|1|64 VAE trained 3 epochs on digits, and 40 test rows."""
    path = write_digits_npz(tmp_path_factory.mktemp("digits"))
    raw = read_own(path)
    spec = TrainSpec(dataset=str(path), data_sha256=raw.sha256, epochs=3, val_size=200, likelihood=request.param)
    data = splits(spec)
    model, result = train(parse_genotype("64|1|64"), spec, data, torch.device("cpu"))
    assert result.ok, result.error
    assert result.measurement.epochs == 3 and len(result.measurement.curve) == 3   # trained the epochs asked
    return model.eval(), data.test[:ROWS]


@torch.no_grad()
def log_px_by_quadrature(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log of the integral of p(x|z) N(z; 0, 1) dz over a fine grid of the one latent."""
    z = torch.linspace(-9, 9, 6001)
    dz = float(z[1] - z[0])
    out = model.decode(z[:, None])                                    # [Z, D]
    shape = (len(z), len(x), x.shape[1])
    log_px_z = -reconstruction_nll(out[:, None, :].expand(shape), x[None].expand(shape), model.likelihood)
    log_pz = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(log_px_z + log_pz[:, None], dim=0) + math.log(dz)


@torch.no_grad()
def elbo(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """The ELBO per row with the KL term in closed form, averaged over many z samples of the reconstruction."""
    mu, logvar = model.encode(x)
    torch.manual_seed(1)
    recon = torch.stack([reconstruction_nll(model.decode(model.reparameterize(mu, logvar)), x, model.likelihood)
                         for _ in range(400)]).mean(0)
    return -(recon + kl_divergence(mu, logvar))


@pytest.mark.slow
def test_the_bound_tightens_with_k_towards_log_px(trained):
    model, x = trained
    exact = log_px_by_quadrature(model, x).mean().item()
    lower = elbo(model, x).mean().item()
    gen = torch.Generator().manual_seed(0)
    bound = {k: sum(iw_log_likelihood(model, x, k, generator=gen).mean().item() for _ in range(3)) / 3
             for k in (1, 10, 100, 2000)}
    noise = 0.02  # nats: the Monte Carlo error of these means
    assert bound[1] < bound[10] + noise and bound[10] < bound[100] + noise and bound[100] < bound[2000] + noise
    assert lower < bound[100] and bound[2000] <= exact + noise, (lower, bound, exact)
    assert exact - bound[2000] <= 0.25 * (exact - lower) + noise, (lower, bound, exact)


@pytest.mark.slow
def test_k_equal_one_is_the_elbo_in_expectation(trained):
    model, x = trained
    gen = torch.Generator().manual_seed(2)
    draws = torch.stack([iw_log_likelihood(model, x, 1, generator=gen) for _ in range(300)])  # [300, rows]
    mean, sem = draws.mean().item(), draws.mean(1).std().item() / math.sqrt(len(draws))
    assert abs(mean - elbo(model, x).mean().item()) < 4 * sem + 0.02, (mean, sem)


@pytest.mark.slow
def test_chunking_over_samples_changes_memory_not_the_bound(trained):
    model, x = trained
    small = iw_log_likelihood(model, x, 500, generator=torch.Generator().manual_seed(3), max_rows=ROWS * 7)
    large = iw_log_likelihood(model, x, 500, generator=torch.Generator().manual_seed(4), max_rows=1 << 20)
    assert abs(small.mean().item() - large.mean().item()) < 0.05                 # 72 chunks or one
    one = iw_log_likelihood(model, x[:3], 500, generator=torch.Generator().manual_seed(5), max_rows=1)
    assert abs(one.mean().item() - large[:3].mean().item()) < 0.3                # one sample per chunk


@pytest.mark.slow
def test_negative_bound_per_example_for_the_field_k(trained):
    model, x = trained
    ticks = []
    k5000 = negative_iw_bound(model, x, 5000, seed=0, batch=16, tick=lambda: ticks.append(1))
    assert len(ticks) == math.ceil(ROWS / 16)
    assert k5000 == pytest.approx(-log_px_by_quadrature(model, x).mean().item(), abs=0.1)
    assert k5000 < measure(model, x)[0]                          # tighter than the one-sample ELBO
    assert negative_iw_bound(model, x, 50, seed=7) == negative_iw_bound(model, x, 50, seed=7)


def test_bad_k_is_refused():
    model = VAE(parse_genotype("8|1|8"), 4)
    with pytest.raises(ValueError, match="importance samples"):
        iw_log_likelihood(model, torch.rand(2, 4), 0)
