"""Trainer benchmark: one epoch of the same genotype with evovae's trainer
(tensors on the device, index batches) and with the plain torchvision loop
(FashionMNIST + ToTensor + DataLoader), side by side in one run.

    .venv/bin/python benchmarks/bench_trainer.py [--genotype 400|20|400] [--repeats 2]

Prints seconds per epoch of each and the ratio (target: evovae <= 0.35x).
"""
from __future__ import annotations

import argparse
import time

import torch

from evo.genotype import parse_genotype
from evo.spec import TrainSpec
from gpuworker.data import default_root, splits
from gpuworker.model import VAE, negative_elbo
from gpuworker.train import set_threads, train


def dataloader_epoch(genotype, spec: TrainSpec, train_indices: torch.Tensor) -> float:
    """The textbook loop: PIL images through ToTensor, batched by a DataLoader."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    dataset = datasets.FashionMNIST(str(default_root()), train=True, transform=transforms.ToTensor())
    loader = DataLoader(Subset(dataset, train_indices.tolist()), batch_size=spec.batch_size, shuffle=True)
    torch.manual_seed(spec.seed)
    model = VAE(genotype, 784)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    started = time.perf_counter()
    for x, _ in loader:
        x = x.view(len(x), -1)
        logits, mu, logvar = model(x)
        recon, kl = negative_elbo(logits, x, mu, logvar)
        optimizer.zero_grad()
        (recon + kl).backward()
        optimizer.step()
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genotype", action="append", help="repeatable (default: 400|20|400 and 850|20|1000)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs timed per loop; the best is kept")
    args = parser.parse_args(argv)
    threads = set_threads()
    spec = TrainSpec(dataset="fashion-mnist", epochs=1)
    data = splits(spec)
    order = torch.randperm(60_000, generator=torch.Generator().manual_seed(spec.split_seed))
    train_indices = order[spec.val_size:]
    print(f"torch {torch.__version__}, {threads} threads, {len(train_indices)} training images, "
          f"batch {spec.batch_size}")
    for text in args.genotype or ["400|20|400", "850|20|1000"]:
        genotype = parse_genotype(text)
        ours = min(train(genotype, spec, data, torch.device("cpu"))[1].seconds for _ in range(args.repeats))
        # ours includes one validation pass over 10,000 images; the DataLoader loop does not validate.
        theirs = min(dataloader_epoch(genotype, spec, train_indices) for _ in range(args.repeats))
        print(f"{text:>14}: evovae {ours:6.2f} s/epoch   DataLoader+ToTensor {theirs:6.2f} s/epoch   "
              f"ratio {ours / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
