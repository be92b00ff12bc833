"""What an evaluation trains: the training spec, and the content-derived task id."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any, Mapping

from .genotype import Genotype

__all__ = ["DATASETS", "TRAINER_VERSION", "TrainSpec", "task_id"]

#: Bumped whenever the trainer changes what a (genotype, spec) evaluates to, so
#: cached or journaled results of an older trainer are never reused.
TRAINER_VERSION = 1

DATASETS = ("fashion-mnist", "mnist", "kmnist", "cifar10", "synthetic")


@dataclass(frozen=True)
class TrainSpec:
    """How one genotype is trained and validated (the paper's Algorithm 1).

    The validation split is ``val_size`` images carved from the training set by
    a permutation seeded with ``split_seed`` - the same split for every task;
    the test set is kept for final reports. ``train_subset`` (0 = all) keeps
    only the first N images of the remaining training part, for fast runs.
    """

    dataset: str = "fashion-mnist"
    epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    train_subset: int = 0
    val_size: int = 10_000
    split_seed: int = 0
    trainer: int = TRAINER_VERSION

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown data set {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        for name, low in (("epochs", 1), ("batch_size", 1), ("val_size", 1), ("train_subset", 0)):
            value = getattr(self, name)
            if type(value) is not int or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < 10:
            raise ValueError(f"lr must be a positive number below 10, got {self.lr!r}")
        object.__setattr__(self, "lr", float(self.lr))  # lr=1 and lr=1.0 are one spec, with one task id
        for name in ("seed", "split_seed", "trainer"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training spec fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    @cached_property
    def canonical(self) -> str:
        """The spec as sorted JSON: what a task id is derived from (computed once)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> "TrainSpec":
        return type(self).from_dict({**self.to_dict(), **changes})


def task_id(genotype: Genotype, spec: TrainSpec) -> str:
    """A task id derived from content: the same genotype trained the same way
    always has the same id, so a duplicate or late result is recognised."""
    canonical = f'{{"genotype": {json.dumps(str(genotype))}, "spec": {spec.canonical}}}'
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]
