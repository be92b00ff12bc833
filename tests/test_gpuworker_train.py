"""The VAE and its trainer, on small synthetic data (fast) and on real Fashion-MNIST."""
import math

import pytest
import torch

from evo.evaluation import Candidate, Evaluation
from evo.genotype import parse_genotype
from evo.measurement import Measurement
from evo.spec import TrainSpec
from gpuworker.data import DataError, Splits, splits
from gpuworker.model import VAE, negative_elbo
from gpuworker.result import TrainResult
from gpuworker.train import evaluate, measure, train

SYNTH = TrainSpec(dataset="synthetic", epochs=2, val_size=500, train_subset=2000)


def test_vae_shapes_and_parameter_count_match_the_genotype():
    g = parse_genotype("200,500|20|1000,650,50")
    model = VAE(g, 784)
    x = torch.rand(7, 784)
    logits, mu, logvar = model(x)
    assert logits.shape == (7, 784) and mu.shape == (7, 20) and logvar.shape == (7, 20)
    assert model.parameter_count() == g.parameter_count(784)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [200, 500, 20, 20, 1000, 650, 50, 784]


def test_negative_elbo_is_bce_summed_plus_kl():
    x = torch.rand(3, 5)
    logits = torch.randn(3, 5)
    mu, logvar = torch.zeros(3, 2), torch.zeros(3, 2)
    recon, kl = negative_elbo(logits, x, mu, logvar)
    p = torch.sigmoid(logits)
    by_hand = -(x * p.log() + (1 - x) * (1 - p).log()).sum()
    assert torch.allclose(recon, by_hand, rtol=1e-5)
    assert kl.item() == pytest.approx(0.0, abs=1e-7)  # q == prior
    _, kl2 = negative_elbo(logits, x, torch.ones(3, 2), torch.zeros(3, 2))
    assert kl2.item() == pytest.approx(0.5 * 6)  # 0.5 * sum(mu^2)


def test_training_on_synthetic_data_learns_and_reports_everything():
    g = parse_genotype("200|10|200")
    progress = []
    result = evaluate(g, SYNTH, device="cpu", progress=progress.append, test=True)
    assert isinstance(result, TrainResult) and result.ok, result.error
    m = result.measurement
    assert isinstance(m, Measurement) and result.genotype == str(g)
    assert len(m.curve) == 2 and m.curve[1] < m.curve[0] and len(m.train_curve) == 2
    assert m.loss == m.curve[-1] == pytest.approx(m.recon + m.kl)
    assert m.params == g.parameter_count(256) and m.device == "cpu" and not m.fake
    assert set(m.test) == {"loss", "recon", "kl"} and math.isfinite(m.test["loss"]) and m.test_loss == m.test["loss"]
    assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(progress)
    untrained = VAE(g, 256)
    torch.manual_seed(0)
    assert m.loss < measure(untrained, splits(SYNTH).val)[0]


def test_training_is_deterministic_for_a_seed():
    g = parse_genotype("100|10|100")
    a, b = evaluate(g, SYNTH), evaluate(g, SYNTH)
    assert a.measurement.curve == b.measurement.curve
    assert evaluate(g, SYNTH.replace(seed=1)).measurement.curve != a.measurement.curve


def test_a_diverging_run_is_a_failed_result_not_an_exception():
    data = splits(SYNTH)
    poisoned = data.train.clone()
    poisoned[0, 0] = float("nan")
    _, result = train(parse_genotype("100|10|100"), SYNTH, Splits(poisoned, data.val, data.test, data.shape),
                      torch.device("cpu"))
    assert not result.ok and result.measurement.loss is None
    assert "diverged in epoch 1" in result.error


def test_validation_split_is_fixed_and_disjoint_from_training():
    a = splits(SYNTH)
    b = splits(SYNTH.replace(epochs=5))  # other training settings, same split
    assert torch.equal(a.val, b.val)
    rows = {tuple(r.tolist()) for r in a.val[:200]}
    assert not rows & {tuple(r.tolist()) for r in a.train}
    other = splits(SYNTH.replace(split_seed=1))
    assert not torch.equal(a.val, other.val)


def test_missing_data_names_the_files_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOVAE_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        splits(TrainSpec(dataset="fashion-mnist"), root=tmp_path / "empty")
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and "apt-get install dataset-fashion-mnist" in message


# The genotypes of the paper's Table I and the one its code logged.
TABLE_I = ["850|20|1000", "200,500|20|1000,650,50", "1000|60|700,750"]


@pytest.mark.slow
@pytest.mark.parametrize("text", TABLE_I)
def test_table_one_genotypes_train_on_real_fashion_mnist(text):
    spec = TrainSpec(dataset="fashion-mnist", epochs=1, train_subset=512, val_size=512)
    result = evaluate(parse_genotype(text), spec, device="cpu")
    assert result.ok, result.error
    assert 100 < result.measurement.loss < 600  # nats per image: between a good VAE and an untrained one


def test_gaussian_reconstruction_is_the_unit_variance_negative_log_density():
    x, out = torch.randn(3, 5), torch.randn(3, 5)
    recon, kl = negative_elbo(out, x, torch.zeros(3, 2), torch.zeros(3, 2), "gaussian")
    by_hand = -torch.distributions.Normal(out, 1.0).log_prob(x).sum()
    assert torch.allclose(recon, by_hand, rtol=1e-5) and kl.item() == pytest.approx(0.0, abs=1e-7)
    assert recon.item() > 0  # >= D/2 log(2 pi) per example: the loss the search sees stays positive


def test_every_result_carries_epochs_seconds_and_flat_test_figures():
    g = parse_genotype("100|10|100")
    result = evaluate(g, SYNTH.replace(report_test=True, iw_samples=5))
    metrics = result.measurement.to_dict()                      # what the wire carries
    assert result.ok and metrics["epochs"] == 2 and metrics["seconds"] > 0
    assert {"test_loss", "test_recon", "test_kl", "test_iw_loss"} <= set(metrics) and "test" not in metrics
    assert metrics["test_loss"] == pytest.approx(metrics["test_recon"] + metrics["test_kl"])
    assert metrics["test_iw_loss"] < metrics["test_loss"] + 1.0  # a bound at least as tight, up to noise
    assert Measurement.from_dict(metrics) == result.measurement  # and what the head reads back
    assert set(result.measurement.test) == {"loss", "recon", "kl", "iw_loss"}
    plain = evaluate(g, SYNTH).measurement.to_dict()
    assert not any(key.startswith("test_") for key in plain) and plain["curve"] == metrics["curve"]


def test_a_diverged_run_reports_the_epoch_it_diverged_in():
    data = splits(SYNTH)
    poisoned = data.train.clone()
    poisoned[0, 0] = float("nan")
    _, result = train(parse_genotype("100|10|100"), SYNTH.replace(epochs=3), Splits(poisoned, data.val, data.test,
                                                                                   data.shape), torch.device("cpu"))
    assert not result.ok and result.measurement.epochs == 1 and result.measurement.to_dict()["epochs"] == 1
    assert result.measurement.curve == ()                       # the diverged epoch's loss is not a point
    evaluation = Evaluation.of(Candidate(parse_genotype("100|10|100"), 3), result.ok, result.measurement,
                               result.error)
    assert (evaluation.ok, evaluation.epochs, evaluation.epochs_trained) == (False, 3, 1)
    assert "diverged in epoch 1" in evaluation.error


def test_a_model_too_large_to_build_is_a_failed_result_with_no_epochs():
    huge = parse_genotype(f"{2**40}|10|100")
    model, result = train(huge, SYNTH, splits(SYNTH), torch.device("cpu"))
    assert model is None and not result.ok and result.measurement.epochs == 0 and result.error
