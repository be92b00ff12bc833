"""Training per the paper's Algorithm 1, and ``evaluate(genotype, spec)``.

Adam (lr 1e-3), mini-batches of 128 drawn from tensors already on the device
(no DataLoader, no per-example work), loss = the negative ELBO: -log p(x|z)
(BCE summed over values for ``bernoulli``, unit-variance Gaussian on
standardised features for ``gaussian``) + KL. The validation negative ELBO
after each epoch is the curve; the last one is the loss the search sees
(fitness = 1 / loss). With ``spec.report_test`` the test split is measured too,
and with ``spec.iw_samples`` = k the importance-weighted bound (bounds.py).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import replace

import structlog
import torch

from evo.genotype import Genotype
from evo.measurement import Measurement
from evo.spec import TrainSpec

from .bounds import negative_iw_bound
from .checkpoints import Checkpoint, CheckpointStore
from .data import Splits, splits
from .model import VAE, negative_elbo
from .result import TrainResult

__all__ = ["check_device", "choose_device", "default_threads", "evaluate", "measure", "measure_test",
           "set_threads", "torch_environment", "train"]

log = structlog.get_logger(__name__)

Progress = Callable[[float], None]
_EVAL_BATCH = 2000


def torch_environment(device: str | None = None) -> dict[str, str]:
    """The torch version and the device a run would use (for reports)."""
    return {"torch": torch.__version__, "device": str(choose_device(device))}


def choose_device(name: str | None = None) -> torch.device:
    """CUDA when present (or the device named), else the CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(name: str | None) -> None:
    """ValueError (one line) unless ``name`` is a device this machine has (None: the default, always there),
    so a command refuses ``--device cuda`` on a machine without CUDA before it starts instead of failing
    in the first task."""
    if not name:
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type in ("cpu", "meta"):
        return
    backend = getattr(torch, device.type, None)
    if backend is not None and hasattr(backend, "is_available") and backend.is_available():
        count = backend.device_count() if hasattr(backend, "device_count") else 1
    else:
        count = 0
    if (device.index or 0) >= count:
        raise ValueError(f"--device {name}: this machine has {count} {device.type} device(s); "
                         "use --device cpu, or leave the option out")


def default_threads(processes: int = 1) -> int:
    """The cores this process may use, shared among ``processes`` workers."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, processes))


def set_threads(threads: int | None = None) -> int:
    threads = threads or default_threads()
    torch.set_num_threads(threads)
    return threads


@torch.no_grad()
def measure(model: VAE, images: torch.Tensor) -> tuple[float, float, float]:
    """(negative ELBO, reconstruction, KL) per example of ``images``, one z sample each."""
    was_training = model.training
    model.eval()
    recon_sum = images.new_zeros(())
    kl_sum = images.new_zeros(())
    for start in range(0, len(images), _EVAL_BATCH):
        x = images[start:start + _EVAL_BATCH]
        out, mu, logvar = model(x)
        recon, kl = negative_elbo(out, x, mu, logvar, model.likelihood)
        recon_sum += recon
        kl_sum += kl
    model.train(was_training)
    n = len(images)
    recon_v, kl_v = recon_sum.item() / n, kl_sum.item() / n
    return recon_v + kl_v, recon_v, kl_v


def measure_test(model: VAE, data: Splits, iw_samples: int = 0, *, seed: int = 0,
                 tick: Callable[[], None] | None = None) -> dict[str, float]:
    """The test split's ``loss``, ``recon``, ``kl`` (negative ELBO, nats per example) and, for
    ``iw_samples`` = k > 0, ``iw_loss``: the negative importance-weighted bound with k samples."""
    loss, recon, kl = measure(model, data.test)
    test = {"loss": loss, "recon": recon, "kl": kl}
    if iw_samples:
        test["iw_loss"] = negative_iw_bound(model, data.test, iw_samples, seed=seed, tick=tick)
    return test


def train(genotype: Genotype, spec: TrainSpec, data: Splits, device: torch.device,
          progress: Progress | None = None,
          checkpoints: CheckpointStore | None = None) -> tuple[VAE | None, TrainResult]:
    """Train ``genotype`` on ``data`` as ``spec`` says. Never raises for a training failure: a loss that
    stops being finite, a runtime error or running out of memory returns a failed result with the reason
    (and the model as far as it got: None if it could not even be built).

    With ``checkpoints``, a run continues from the store's latest checkpoint of the same genotype and spec at
    fewer epochs (the result is the one a run from scratch gives; ``measurement.resumed_from`` says where it
    started) and leaves its own final state there for a later promotion."""
    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    model: VAE | None = None
    curve: list[float] = []
    train_curve: list[float] = []
    start = 0

    def failed(error: str, epochs: int) -> tuple[VAE | None, TrainResult]:
        figures = Measurement(curve=tuple(curve), train_curve=tuple(train_curve),
                              params=genotype.parameter_count(data.input_dim),
                              seconds=time.perf_counter() - started, device=str(device), epochs=epochs,
                              resumed_from=start)
        return model, TrainResult(str(genotype), False, figures, error)

    try:
        model = VAE(genotype, data.input_dim, spec.likelihood).to(device)
        # The fused Adam kernel (CPU and CUDA) cuts the optimiser step to a third of the for-each one.
        optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr, fused=True)
        shuffle = torch.Generator(device=device).manual_seed(spec.seed)
        resumed = checkpoints.latest_before(genotype, spec, device) if checkpoints is not None else None
        if resumed is not None:
            start = _restore(resumed.state, model, optimizer, shuffle, device, curve, train_curve)
        val = _epochs(model, optimizer, shuffle, spec, data, device, progress, curve, train_curve, start)
    except (RuntimeError, ValueError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if device.type == "cuda":
            torch.cuda.empty_cache()
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}"
        log.warning("train.failed", genotype=str(genotype), error=reason, epoch=len(train_curve) + 1)
        return failed(reason, len(train_curve))
    if not (math.isfinite(val[0]) and math.isfinite(train_curve[-1])):
        return failed(f"training diverged in epoch {len(curve)}: validation loss {val[0]}, training loss "
                      f"{train_curve[-1]} (not finite)", len(curve))
    if checkpoints is not None:
        checkpoints.save(genotype, spec, Checkpoint(len(curve), _state(model, optimizer, shuffle, device, curve,
                                                                       train_curve)))
    return model, TrainResult(str(genotype), True, Measurement(
        loss=val[0], recon=val[1], kl=val[2], curve=tuple(curve), train_curve=tuple(train_curve),
        params=model.parameter_count(), seconds=time.perf_counter() - started, device=str(device),
        epochs=len(curve), resumed_from=start))


def _state(model: VAE, optimizer: torch.optim.Optimizer, shuffle: torch.Generator, device: torch.device,
           curve: list[float], train_curve: list[float]) -> dict:
    """Everything the next epoch depends on: weights, Adam's moments, both RNGs, and the curves so far."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
             "shuffle": shuffle.get_state(), "curve": list(curve), "train_curve": list(train_curve)}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _restore(state: dict, model: VAE, optimizer: torch.optim.Optimizer, shuffle: torch.Generator,
             device: torch.device, curve: list[float], train_curve: list[float]) -> int:
    """Load a checkpoint's state; returns the epochs it had trained."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"].cpu())
    shuffle.set_state(state["shuffle"].cpu() if device.type == "cpu" else state["shuffle"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
    curve += [float(v) for v in state["curve"]]
    train_curve += [float(v) for v in state["train_curve"]]
    return len(curve)


def _epochs(model: VAE, optimizer: torch.optim.Optimizer, shuffle: torch.Generator, spec: TrainSpec,
            data: Splits, device: torch.device, progress: Progress | None, curve: list[float],
            train_curve: list[float], start: int = 0) -> tuple[float, float, float]:
    """Epochs ``start + 1`` to ``spec.epochs`` of Algorithm 1, appending to ``curve`` and ``train_curve``;
    stops after the first epoch whose loss is not finite. Returns the last validation (loss, recon, KL)."""
    images, n = data.train, len(data.train)
    steps = math.ceil(n / spec.batch_size)
    val = (math.nan, math.nan, math.nan)
    for epoch in range(start, spec.epochs):
        order = torch.randperm(n, device=device, generator=shuffle)
        total = images.new_zeros(())
        for step in range(steps):
            x = images[order[step * spec.batch_size:(step + 1) * spec.batch_size]]
            out, mu, logvar = model(x)
            recon, kl = negative_elbo(out, x, mu, logvar, spec.likelihood)
            loss = recon + kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            if progress is not None and step % 16 == 0:
                progress((epoch + step / steps) / spec.epochs)
        train_curve.append(total.item() / n)
        val = measure(model, data.val)
        curve.append(val[0])
        log.debug("train.epoch", genotype=str(model.genotype), epoch=epoch + 1, train_loss=train_curve[-1],
                  val_loss=val[0])
        if not math.isfinite(val[0]) or not math.isfinite(train_curve[-1]):
            return val
    if progress is not None:
        progress(1.0)
    return val


def evaluate(genotype: Genotype, spec: TrainSpec, *, device: torch.device | str | None = None,
             data_root: str | None = None, download: bool = False, progress: Progress | None = None,
             test: bool = False, checkpoints: CheckpointStore | None = None) -> TrainResult:
    """Train and validate one genotype; never raises for a training failure.

    The test split is measured when ``test`` or ``spec.report_test`` is set (and the importance-weighted
    bound when ``spec.iw_samples`` > 0). Data that cannot be had (DataError: missing, unreadable, not the
    head's copy) does raise: no genotype could be evaluated, and the caller must say what to do.
    """
    device = choose_device(str(device) if device else None)
    data = splits(spec, device, data_root, download)
    model, result = train(genotype, spec, data, device, progress, checkpoints)
    if model is not None and result.ok and (test or spec.report_test):
        tick = (lambda: progress(1.0)) if progress is not None else None
        try:
            measured = measure_test(model, data, spec.iw_samples, seed=spec.seed, tick=tick)
        except (RuntimeError, MemoryError) as exc:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            reason = f"measuring the test split failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            log.warning("train.failed", genotype=str(genotype), error=reason)
            lost = replace(result.measurement, loss=None, recon=None, kl=None)
            return replace(result, ok=False, measurement=lost, error=reason)
        result = replace(result, measurement=result.measurement.with_test(measured))
    return result
