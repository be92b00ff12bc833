"""The sizes of the paper experiment (presets), its configuration, and what each search of it is."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..genotype import Genotype
from ..spec import TrainSpec, is_builtin
from ..strategies import StrategyOptions, budget_of

__all__ = ["DATA_FIELDS", "HAND_DESIGNED", "METRIC", "METRICS", "PRESETS", "ExperimentConfig", "Preset", "SearchPlan"]

#: the TrainSpec fields that name the data (the data options of the command line, resolved)
DATA_FIELDS = ("dataset", "likelihood", "data_sha256", "columns", "image_size", "missing")

#: The PyTorch example VAE: 784-400-20-400-784.
HAND_DESIGNED = Genotype((400,), 20, (400,))

METRIC = ("negative ELBO in nats per image: reconstruction = binary cross-entropy summed over all pixels, "
          "on continuous pixel intensities in [0, 1] (not binarised), plus KL(q(z|x) || N(0, I)) in closed "
          "form; one z sample per image; averaged over every image of the split")

#: the loss of each likelihood, in the report's words (``METRIC`` is the Bernoulli one, the paper's)
METRICS = {
    "bernoulli": METRIC,
    "gaussian": ("negative ELBO in nats per example: reconstruction = -log N(x; decoder mean, 1) summed over "
                 "the features, standardised with the training split's mean and standard deviation, plus "
                 "KL(q(z|x) || N(0, I)) in closed form; one z sample per example; averaged over every example "
                 "of the split (docs/data.md)"),
}


@dataclass(frozen=True)
class Preset:
    """The sizes of one experiment (every field may be overridden on the command line)."""

    name: str
    summary: str
    train_subset: int  # training images (0 = all left after the validation split)
    val_size: int
    population: int  # mu
    offspring: int  # lambda
    generations: int  # counting generation 0
    search_epochs: tuple[int, ...]  # one evolutionary search per entry (the paper: 2 and 5)
    random_epochs: tuple[int, ...]  # random-search baselines: one set of seeds per entry
    random_seeds: int
    retrain_epochs: int  # the paper: 20
    manifold_epochs: int  # training of the latent-2 variants for Fig. 4
    samples: int = 64
    manifold_steps: int = 20

    @property
    def budget(self) -> int:
        """Evaluations a search may ask for: mu + (generations - 1) * lambda."""
        return budget_of(self.population, self.offspring, self.generations)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny", "a smoke test of the whole pipeline in about a minute (tests); numbers mean nothing",
        train_subset=600, val_size=300, population=3, offspring=3, generations=2, search_epochs=(1, 2),
        random_epochs=(1,), random_seeds=2, retrain_epochs=2, manifold_epochs=2, samples=16, manifold_steps=6),
    "cpu": Preset(
        "cpu", "the paper's protocol scaled to finish in under 30 minutes on a 2-core CPU with 2 local workers",
        train_subset=6_000, val_size=3_000, population=6, offspring=6, generations=5, search_epochs=(2, 5),
        random_epochs=(2, 5), random_seeds=3, retrain_epochs=20, manifold_epochs=10),
    "full": Preset(
        "full", "the paper's scale, for a GPU cluster: all 50,000 training images, 20-epoch retraining",
        train_subset=0, val_size=10_000, population=10, offspring=10, generations=10, search_epochs=(2, 5),
        random_epochs=(2, 5), random_seeds=5, retrain_epochs=20, manifold_epochs=20),
}

_MINIMA = {"population": 1, "offspring": 1, "generations": 1, "random_seeds": 0, "retrain_epochs": 1,
           "manifold_epochs": 1, "samples": 1, "manifold_steps": 2, "val_size": 1, "train_subset": 0}


@dataclass(frozen=True)
class SearchPlan:
    """One search of the experiment: its name (its directory under ``RUN_DIR/searches/``), what it is,
    and the spec its candidates are trained with."""

    name: str
    kind: str  # evolution | random
    options: StrategyOptions
    spec: TrainSpec


@dataclass(frozen=True)
class ExperimentConfig:
    """A preset with its overrides, plus the data and seeds.

    ``dataset`` is a built-in name or the path of own data, then with its fingerprint ``data_sha256`` and
    ``columns``, ``image_size``, ``missing`` (the TrainSpec fields of that name, :data:`DATA_FIELDS`); ``likelihood``
    as the data options resolved it. Stored in ``experiment.json``, so a resume re-checks the data."""

    preset: Preset
    dataset: str = "fashion-mnist"
    seed: int = 0
    split_seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    likelihood: str = "bernoulli"
    data_sha256: str = ""
    columns: str = ""
    image_size: str = ""
    missing: str = "error"

    def __post_init__(self) -> None:
        p = self.preset
        self.spec(1)  # the data fields, checked as a training spec checks them (ValueError, one line)
        for name, low in _MINIMA.items():
            if getattr(p, name) < low:
                raise ValueError(f"{name.replace('_', '-')} is too small: {getattr(p, name)} (at least {low})")
        epochs = p.search_epochs
        if not epochs or any(e < 1 for e in epochs) or len(set(epochs)) != len(epochs):
            raise ValueError(f"search epochs must be distinct positive integers, got {p.search_epochs}")
        if any(e < 1 for e in p.random_epochs):
            raise ValueError(f"random-search epochs must be positive integers, got {p.random_epochs}")

    @property
    def data(self) -> dict[str, str]:
        """The data fields of every spec of the experiment (and of its local workers' check)."""
        return {name: getattr(self, name) for name in DATA_FIELDS}

    @property
    def data_name(self) -> str:
        """A short name of the data for titles and file names: the built-in name, or the own file's or
        folder's name without its suffix."""
        return self.dataset if is_builtin(self.dataset) else Path(self.dataset).stem

    @property
    def metric(self) -> str:
        return METRICS[self.likelihood]

    def spec(self, epochs: int) -> TrainSpec:
        p = self.preset
        data = self.data
        return TrainSpec(epochs=epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                         train_subset=p.train_subset, val_size=p.val_size, split_seed=self.split_seed,
                         dataset=data["dataset"], data_sha256=data["data_sha256"], columns=data["columns"],
                         image_size=data["image_size"], likelihood=data["likelihood"], missing=data["missing"])

    @property
    def random_seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.preset.random_seeds)]

    def searches(self) -> list[SearchPlan]:
        """Every search, in the order they run: the evolutionary ones, then the random ones."""
        p = self.preset
        base = StrategyOptions(strategy="evolution", population=p.population, offspring=p.offspring,
                               generations=p.generations, seed=self.seed)
        plans = [SearchPlan(f"evolution-{e}ep", "evolution", replace(base, epochs=e), self.spec(e))
                 for e in p.search_epochs]
        plans += [SearchPlan(f"random-{e}ep-seed{seed}", "random",
                             replace(base, strategy="random", epochs=e, seed=seed), self.spec(e))
                  for e in p.random_epochs for seed in self.random_seeds]
        return plans

    # -- RUN_DIR/experiment.json ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "preset": asdict(self.preset)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        preset = dict(data["preset"])
        for key in ("search_epochs", "random_epochs"):
            preset[key] = tuple(preset[key])
        return cls(**{**data, "preset": Preset(**preset)})
