"""Package boundaries, checked in fresh interpreters: evo is pure, transport has no torch."""
import subprocess
import sys

import pytest

EVO_MODULES = ["evo", "evo.genotype", "evo.space", "evo.mutation", "evo.crossover", "evo.selection",
               "evo.evaluation", "evo.strategy", "evo.engine", "evo.random_search", "evo.spec", "evo.search",
               "evo.log", "evo.cli", "evo.local_workers", "evo.cli_search", "evo.runner", "evo.journal", "evo.steady_state", "evo.settings", "evo.logs"]


def _loaded_after(imports: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in imports) + "print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", EVO_MODULES)
def test_evo_imports_neither_zmq_nor_torch(module):
    loaded = _loaded_after([module])
    assert module in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("zmq", "torch", "torchvision", "msgpack")}


def test_transport_imports_no_torch():
    import pkgutil

    import transport

    modules = ["transport"] + [f"transport.{m.name}" for m in pkgutil.iter_modules(transport.__path__)]
    loaded = _loaded_after(modules)
    assert set(modules) <= loaded
    assert not {m for m in loaded if m.split(".")[0] in ("torch", "torchvision")}


def test_gpuworker_is_where_torch_lives():
    assert "torch" in _loaded_after(["gpuworker.train"])
