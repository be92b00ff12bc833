"""evovae from Python: search VAE architectures for data held in memory, and use the models it trains.

::

    import evovae

    result = evovae.search(images, budget_epochs=60, run_dir="runs/digits")   # a NumPy array, tensor, DataFrame
    model = result.train_best(epochs=20)                                      # retrained, saved, loaded
    z = model.encode(images).mean                                             # raw data in: the preprocessing
    model = evovae.load_model("runs/digits/models/rank-1")                    # is the model's own

:func:`search` returns a :class:`SearchResult`; :func:`load_model` a :class:`Model` (``encode``, ``decode``,
``sample``, ``reconstruct``, ``elbo``, ``iw_bound``). Nothing is printed on stdout unless asked
(``verbose=True``); a search keeps its logs in ``RUN_DIR/logs`` (``evovae logs summarize RUN_DIR``) and its
Optuna mirror in ``RUN_DIR/optuna-journal.log`` (``evovae dashboard RUN_DIR``), as ``evovae search`` does; a
refused parameter is an :class:`OptionError` naming it, data a model cannot take an :class:`InputError`. The
guide, with examples: docs/api.md.
"""
from __future__ import annotations

import os

from evo.strategies import OptionError
from gpuworker.export import ModelDirError
from gpuworker.inference import Encoding, InputError, Model

from ._quiet import library_logging
from ._search import SearchResult, search

__all__ = ["Encoding", "InputError", "Model", "ModelDirError", "OptionError", "SearchResult", "load_model", "search"]


def load_model(path: str | os.PathLike[str], *, device: str = "cpu", verbose: bool = False) -> Model:
    """The model saved in the directory ``path`` (``evovae export``, :meth:`SearchResult.export`), on ``device``.
    :class:`ModelDirError` (a ValueError) for a missing, corrupt, tampered or foreign directory."""
    with library_logging(verbose):
        return Model.load(path, device)
