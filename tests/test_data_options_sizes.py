"""The built-in sets' sizes the head checks a split against (gpuworker.data_options.BUILTIN_TRAIN_SIZES, no
torch needed there) are the sizes the trainer loads: synthetic always, the others where this machine has them."""
from __future__ import annotations

import pytest

from gpuworker.data import DataError, load_images
from gpuworker.data.base import default_root
from gpuworker.data_options import BUILTIN_INPUT_DIMS, BUILTIN_TRAIN_SIZES


def test_every_built_in_set_has_a_size():
    assert set(BUILTIN_TRAIN_SIZES) == set(BUILTIN_INPUT_DIMS)


@pytest.mark.slow  # loads the real sets
@pytest.mark.parametrize("name", sorted(BUILTIN_TRAIN_SIZES))
def test_the_size_is_what_the_trainer_loads(name):
    try:
        train, _test, _shape = load_images(name, str(default_root()), download=False)
    except DataError as exc:
        pytest.skip(f"{name} is not on this machine ({exc})")
    assert len(train) == BUILTIN_TRAIN_SIZES[name]
    assert int(train[0].numel()) == BUILTIN_INPUT_DIMS[name]
