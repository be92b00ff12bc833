"""Package boundaries, checked by walking every module of every package in a fresh interpreter.

The rules (docs/design.md, "Layout: who may import whom"):
- the pure engine (evo and its modules, not its subpackages) imports only the stdlib and numpy;
- evo.logs (log analysis) imports only the stdlib;
- transport and the head (evo.head) never import torch or gpuworker;
- evo.adapters (strategies built on outside libraries) never import transport, ZeroMQ or torch;
- gpuworker is where torch lives.
A new module is walked as soon as it exists: nothing is listed by hand.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

NETWORK_AND_LOGS = {"zmq", "msgpack", "structlog"}
TORCH = {"torch", "torchvision", "gpuworker"}

#: package -> (walk its subpackages too?, top-level modules it must never load)
RULES = {
    "evo": (False, NETWORK_AND_LOGS | TORCH | {"transport", "optuna", "matplotlib"}),
    "evo.logs": (True, NETWORK_AND_LOGS | TORCH | {"transport", "numpy"}),
    "evo.head": (True, TORCH),
    "evo.adapters": (True, TORCH | {"zmq", "msgpack", "transport"}),
    "transport": (True, TORCH | {"evo"}),
}


def modules_of(package: str, recursive: bool) -> list[str]:
    """``package`` and every module in it (and in its subpackages, if ``recursive``)."""
    pkg = importlib.import_module(package)
    found = [package]
    for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{package}."):
        if info.ispkg and recursive:
            found += modules_of(info.name, True)
        elif not info.ispkg:
            found.append(info.name)
    return found


def loaded_after(module: str) -> set[str]:
    """Top-level names in sys.modules after importing ``module`` in a fresh interpreter."""
    code = f"import sys, json, {module}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"importing {module} failed:\n{out.stderr}"
    return set(json.loads(out.stdout))


CASES = [(package, module) for package, (recursive, _) in RULES.items() for module in modules_of(package, recursive)]


@pytest.mark.parametrize(("package", "module"), CASES, ids=[m for _, m in CASES])
def test_module_keeps_its_package_boundary(package, module):
    forbidden = RULES[package][1] & loaded_after(module)
    assert not forbidden, f"{module} ({package}) loads {sorted(forbidden)}"


def test_the_walk_sees_every_module_of_the_pure_engine():
    names = {m for p, m in CASES if p == "evo"}
    assert {"evo.genotype", "evo.engine", "evo.strategy", "evo.evaluation", "evo.spec"} <= names
    assert not any(m.startswith(("evo.head.", "evo.cli.")) for m in names)


def test_gpuworker_is_where_torch_lives():
    assert "torch" in loaded_after("gpuworker.train")
