"""What a search is, in one frozen value: :class:`SearchConfig` (the strategy's options, the training spec, the
search space). A run's journal stores ``to_dict()``; a resumed run is rebuilt from ``from_dict``, which also
reads the flat form ``evovae search`` journaled before this type existed (its options as one flat mapping)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .genotype import parse_genotype
from .space import SearchSpace
from .spec import TrainSpec
from .strategies import StrategyOptions

__all__ = ["SearchConfig"]

#: the flat keys of a journal written by ``evovae search`` before SearchConfig: options, spec and max_layers
_FLAT_SPEC_KEYS = ("dataset", "epochs", "batch_size", "lr", "seed", "train_subset", "val_size", "split_seed",
                   "likelihood", "data_sha256", "columns", "image_size")


@dataclass(frozen=True)
class SearchConfig:
    """The options that define a search: the same config (and code) gives the same search."""

    options: StrategyOptions
    spec: TrainSpec
    space: SearchSpace = SearchSpace()

    def to_dict(self) -> dict[str, Any]:
        options = asdict(self.options)
        options["initial"] = [str(g) for g in self.options.initial]
        options["fidelities"] = list(self.options.fidelities)
        return {"options": options, "spec": self.spec.to_dict(), "space": asdict(self.space)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchConfig:
        """The config ``to_dict`` wrote, or the flat one of an older ``evovae search`` journal. ValueError
        (naming the field) when it is neither."""
        if "options" in data and "spec" in data:
            options = dict(data["options"])
            space = SearchSpace(**data.get("space", {}))
            spec = TrainSpec.from_dict(data["spec"])
        else:
            options = {f.name: data[f.name] for f in fields(StrategyOptions) if f.name in data}
            space = SearchSpace(max_layers=data.get("max_layers", SearchSpace.max_layers))
            spec = TrainSpec(**{key: data[key] for key in _FLAT_SPEC_KEYS if data.get(key) is not None})
        options["initial"] = tuple(space.validate(parse_genotype(g)) for g in options.get("initial") or ())
        options["fidelities"] = tuple(options.get("fidelities") or ())
        known = {f.name for f in fields(StrategyOptions)}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown strategy options {sorted(unknown)}; known: {sorted(known)}")
        return cls(StrategyOptions(**options), spec, space)

    def same_search(self, other: SearchConfig) -> bool:
        """Whether ``other`` is this search (compared as stored, so a config read back equals the one written)."""
        return json.dumps(self.to_dict(), sort_keys=True) == json.dumps(other.to_dict(), sort_keys=True)

    def with_generations(self, generations: int) -> SearchConfig:
        return replace(self, options=replace(self.options, generations=generations))
