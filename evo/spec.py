"""What an evaluation trains: the training spec, and the content-derived task id."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any

from .genotype import Genotype

__all__ = ["DATASETS", "LIKELIHOODS", "MISSING_RULES", "TRAINER_VERSION", "TrainSpec", "is_builtin", "task_id",
           "prefix_id"]

#: Bumped whenever the trainer changes what a (genotype, spec) evaluates to, so
#: cached or journaled results of an older trainer are never reused.
TRAINER_VERSION = 1

DATASETS = ("fashion-mnist", "mnist", "kmnist", "cifar10", "synthetic")
LIKELIHOODS = ("bernoulli", "gaussian")

#: What becomes of missing values in own data (a table's NA or empty cells, a float array's NaN): ``error``
#: refuses the data, naming the first; ``drop`` leaves out every example with one, before the split; ``mean``
#: fills each with its feature's mean over the training split.
MISSING_RULES = ("error", "drop", "mean")

#: Fields added after the first wire version, with their defaults. At its default such a field is left out of
#: ``to_dict()`` (the wire and the journal) and of ``canonical`` (task ids), so every task id of the built-in
#: data sets and the v1 wire bytes stay what they were; ``from_dict`` accepts them either way.
OPTIONAL_FIELDS: dict[str, Any] = {
    "likelihood": "bernoulli",
    "data_sha256": "",
    "columns": "",
    "image_size": "",
    "report_test": False,
    "iw_samples": 0,
    "missing": "error",
}

_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_PATH = 4096  # the wire's longest string
_MAX_IW_SAMPLES = 1_000_000


def is_builtin(dataset: str) -> bool:
    """True for the data sets evovae knows by name; anything else is a file or folder of the user's."""
    return dataset in DATASETS


@dataclass(frozen=True)
class TrainSpec:
    """How one genotype is trained and validated (the paper's Algorithm 1).

    ``dataset`` is a built-in name (:data:`DATASETS`) or the path of the user's own data (a NumPy file, a
    folder of images, a CSV or Parquet table; see docs/data.md), which then needs ``data_sha256``, the
    fingerprint of its content (``gpuworker.data.fingerprint``): results are bound to the data, not to its
    name, and a worker whose copy differs refuses the task. ``columns`` ("a,b,c": the table columns used) and
    ``image_size`` ("H,W": images resized to it) only apply to own data.

    ``likelihood``: ``bernoulli`` (binary cross-entropy on values in [0, 1]) or ``gaussian`` (unit variance
    on features standardised on the training split, i.e. each feature's own training variance).

    The validation split is ``val_size`` examples carved from the training set by a permutation seeded with
    ``split_seed`` - the same split for every task; the test set is kept for final reports (data with no test
    part of its own gives up ``val_size`` more examples for it). ``train_subset`` (0 = all) keeps only the
    first N examples of the remaining training part, for fast runs. ``report_test`` also measures the test
    split (``test_loss``, ``test_recon``, ``test_kl``) and ``iw_samples`` = k > 0 the importance-weighted
    bound with k samples (``test_iw_loss``). ``missing`` (:data:`MISSING_RULES`) is what every node does with
    missing values in own data, so the head and every worker train on the same examples.
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
    likelihood: str = "bernoulli"
    data_sha256: str = ""
    columns: str = ""
    image_size: str = ""
    report_test: bool = False
    iw_samples: int = 0
    missing: str = "error"

    def __post_init__(self) -> None:
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
        self._check_data()
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}")
        if type(self.report_test) is not bool:
            raise ValueError(f"report_test must be true or false, got {self.report_test!r}")
        if type(self.iw_samples) is not int or not 0 <= self.iw_samples <= _MAX_IW_SAMPLES:
            raise ValueError(f"iw_samples must be an integer from 0 to {_MAX_IW_SAMPLES:,}, got {self.iw_samples!r}")
        if self.iw_samples and not self.report_test:
            raise ValueError("iw_samples (the importance-weighted bound on the test split) needs report_test")

    def _check_data(self) -> None:
        dataset = self.dataset
        if not isinstance(dataset, str) or not dataset or "\0" in dataset or len(dataset) > _MAX_PATH:
            raise ValueError(f"dataset must be a data set name or a path, got {dataset!r}")
        for name in ("data_sha256", "columns", "image_size"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.missing not in MISSING_RULES:
            raise ValueError(f"missing must be one of {', '.join(MISSING_RULES)}, got {self.missing!r}")
        if is_builtin(dataset):
            given = [name for name in ("data_sha256", "columns", "image_size") if getattr(self, name)]
            given += ["missing"] if self.missing != "error" else []
            if given:
                raise ValueError(f"{', '.join(given)} only apply to data of your own, not to {dataset!r}")
            return
        if not _SHA256.fullmatch(self.data_sha256):
            raise ValueError(f"unknown data set {dataset!r}: not one of {', '.join(DATASETS)}; a file or folder of "
                             "your own needs data_sha256, the SHA-256 fingerprint of its content (64 hex digits)")
        object.__setattr__(self, "columns", _normalised_columns(self.columns))
        object.__setattr__(self, "image_size", _normalised_size(self.image_size))

    @property
    def builtin(self) -> bool:
        return is_builtin(self.dataset)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(self.columns.split(",")) if self.columns else ()

    @property
    def image_hw(self) -> tuple[int, int] | None:
        if not self.image_size:
            return None
        height, width = self.image_size.split(",")
        return int(height), int(width)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain values (the wire and the journal); later fields at their defaults left out."""
        data = asdict(self)
        for name, default in OPTIONAL_FIELDS.items():
            if data[name] == default and type(data[name]) is type(default):
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training spec fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    @cached_property
    def canonical(self) -> str:
        """The spec as sorted JSON: what a task id is derived from (computed once).

        Data of one's own is named by its fingerprint, not by its path: the same file copied elsewhere
        gives the same task ids (and cache hits), a changed file different ones."""
        data = self.to_dict()
        if not self.builtin:
            data["dataset"] = "own"
        return json.dumps(data, sort_keys=True)

    def replace(self, **changes: Any) -> TrainSpec:
        return type(self).from_dict({**self.to_dict(), **changes})


def _normalised_columns(text: str) -> str:
    if not text:
        return ""
    names = [name.strip() for name in text.split(",")]
    if any(not name for name in names):
        raise ValueError(f"columns {text!r} has an empty name; give names separated by commas, e.g. age,height")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"columns {text!r} names {', '.join(duplicates)} more than once")
    return ",".join(names)


def _normalised_size(text: str) -> str:
    if not text:
        return ""
    parts = [part.strip() for part in text.replace("x", ",").split(",")]
    if len(parts) != 2 or not all(part.isdigit() and 1 <= int(part) <= 4096 for part in parts):
        raise ValueError(f"image_size {text!r} is not H,W (two integers from 1 to 4096, e.g. 28,28)")
    return f"{int(parts[0])},{int(parts[1])}"


def task_id(genotype: Genotype, spec: TrainSpec) -> str:
    """A task id derived from content: the same genotype trained the same way
    always has the same id, so a duplicate or late result is recognised."""
    canonical = f'{{"genotype": {json.dumps(str(genotype))}, "spec": {spec.canonical}}}'
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def prefix_id(genotype: Genotype, spec: TrainSpec) -> str:
    """What a prefix of training depends on: the genotype and every field of the spec but its epochs (and
    the test measurement, which comes after training). Runs of one genotype that share it pass through the
    same states, epoch by epoch: the key of a checkpoint a promotion can continue from."""
    prefix = spec.replace(epochs=1, report_test=False, iw_samples=0).canonical
    return hashlib.sha256(f"{genotype}\n{prefix}".encode()).hexdigest()[:24]
