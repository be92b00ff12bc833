"""Training per the paper's Algorithm 1, and ``evaluate(genotype, spec)``.

Adam (lr 1e-3), mini-batches of 128 drawn from tensors already on the device
(no DataLoader, no per-image work), loss = BCE summed over pixels + KL. The
validation negative ELBO after each epoch is the curve; the last one is the
loss the search sees (fitness = 1 / loss).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import structlog
import torch

from evo.genotype import Genotype
from evo.spec import TrainSpec

from .data import Splits, splits
from .model import VAE, negative_elbo

__all__ = ["TrainResult", "choose_device", "default_threads", "evaluate", "measure", "set_threads", "train"]

log = structlog.get_logger(__name__)

Progress = Callable[[float], None]
_EVAL_BATCH = 2000


@dataclass(frozen=True)
class TrainResult:
    """Everything one training run measured. Losses are nats per image."""

    genotype: str
    ok: bool
    loss: float | None = None
    recon: float | None = None
    kl: float | None = None
    curve: tuple[float, ...] = ()
    train_curve: tuple[float, ...] = ()
    params: int = 0
    seconds: float = 0.0
    device: str = ""
    error: str = ""
    test: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """The figures as plain values (msgpack- and JSON-friendly)."""
        data = asdict(self)
        data["curve"] = list(self.curve)
        data["train_curve"] = list(self.train_curve)
        return data


def choose_device(name: str | None = None) -> torch.device:
    """CUDA when present (or the device named), else the CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    """(negative ELBO, reconstruction, KL) per image of ``images``, one z sample each."""
    was_training = model.training
    model.eval()
    recon_sum = images.new_zeros(())
    kl_sum = images.new_zeros(())
    for start in range(0, len(images), _EVAL_BATCH):
        x = images[start:start + _EVAL_BATCH]
        logits, mu, logvar = model(x)
        recon, kl = negative_elbo(logits, x, mu, logvar)
        recon_sum += recon
        kl_sum += kl
    model.train(was_training)
    n = len(images)
    recon_v, kl_v = recon_sum.item() / n, kl_sum.item() / n
    return recon_v + kl_v, recon_v, kl_v


def train(genotype: Genotype, spec: TrainSpec, data: Splits, device: torch.device,
          progress: Progress | None = None) -> tuple[VAE, TrainResult]:
    """Train ``genotype`` on ``data`` as ``spec`` says. Raises on runtime errors;
    a run whose loss stops being finite returns a failed result."""
    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    model = VAE(genotype, data.input_dim).to(device)
    # The fused Adam kernel (CPU and CUDA) cuts the optimiser step to a third of the for-each one.
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr, fused=True)
    shuffle = torch.Generator(device=device).manual_seed(spec.seed)
    images, n = data.train, len(data.train)
    steps = math.ceil(n / spec.batch_size)
    curve: list[float] = []
    train_curve: list[float] = []
    val = (math.nan, math.nan, math.nan)
    for epoch in range(spec.epochs):
        order = torch.randperm(n, device=device, generator=shuffle)
        total = images.new_zeros(())
        for step in range(steps):
            x = images[order[step * spec.batch_size:(step + 1) * spec.batch_size]]
            logits, mu, logvar = model(x)
            recon, kl = negative_elbo(logits, x, mu, logvar)
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
        log.debug("train.epoch", genotype=str(genotype), epoch=epoch + 1, train_loss=train_curve[-1], val_loss=val[0])
        if not math.isfinite(val[0]) or not math.isfinite(train_curve[-1]):
            return model, TrainResult(
                str(genotype), False, curve=tuple(curve), train_curve=tuple(train_curve),
                params=model.parameter_count(), seconds=time.perf_counter() - started, device=str(device),
                error=f"training diverged in epoch {epoch + 1}: validation loss {val[0]}, training loss "
                      f"{train_curve[-1]} (not finite)",
            )
    if progress is not None:
        progress(1.0)
    return model, TrainResult(
        str(genotype), True, loss=val[0], recon=val[1], kl=val[2], curve=tuple(curve),
        train_curve=tuple(train_curve), params=model.parameter_count(),
        seconds=time.perf_counter() - started, device=str(device),
    )


def evaluate(genotype: Genotype, spec: TrainSpec, *, device: torch.device | str | None = None,
             data_root: str | None = None, download: bool = False, progress: Progress | None = None,
             test: bool = False) -> TrainResult:
    """Train and validate one genotype; never raises for a training failure.

    NaN/inf losses, runtime errors and out-of-memory become a failed result
    with the reason. A missing data set (DataError) does raise: no genotype
    could be evaluated, and the caller must say what to install.
    """
    device = choose_device(str(device) if device else None)
    data = splits(spec, device, data_root, download)
    started = time.perf_counter()
    try:
        model, result = train(genotype, spec, data, device, progress)
        if test and result.ok:
            loss, recon, kl = measure(model, data.test)
            result = TrainResult(**{**result.__dict__, "test": {"loss": loss, "recon": recon, "kl": kl}})
        return result
    except (RuntimeError, ValueError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if device.type == "cuda":
            torch.cuda.empty_cache()
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}"
        log.warning("train.failed", genotype=str(genotype), error=reason)
        return TrainResult(str(genotype), False, seconds=time.perf_counter() - started, device=str(device),
                           params=genotype.parameter_count(data.input_dim), error=reason)
