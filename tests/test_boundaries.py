"""Package boundaries: every import of every module, checked against the layers of docs/design.md
("Layout: who may import whom"; :data:`LAYERS` below is that table, and a test keeps the two the same).

The modules are found by walking the folders of every top-level package of the repository (evo with all its
subpackages, transport, gpuworker, and any package added later): nothing is listed by hand, and a module
that no layer holds fails. Two checks:

1. Statically, from the AST of every module: every ``import`` and ``from ... import`` anywhere in it - at the
   top, inside functions (lazy imports), under ``if TYPE_CHECKING:`` or ``try:`` - and every
   ``importlib.import_module(...)`` / ``__import__(...)`` call with a literal name; relative imports are
   resolved to absolute names. Each must be the standard library (``sys.stdlib_module_names``), a module of
   a layer the importing module's layer may import, or an outside library its layer names explicitly. An
   import whose name cannot be read (a computed ``import_module`` argument) is allowed only in the
   composition layer, or as ``f"{__name__}.…"`` (a module's own submodules).
2. At import time, in a fresh interpreter: what importing a module loads, transitively, stays inside what
   its layer reaches (the layers it may import, theirs in turn, and their libraries).

The layers, in short: the pure engine (``evo/*.py``) imports the stdlib and numpy; the adapters add optuna;
the head (``evo/head/``) the pure engine, transport and structlog, ZeroMQ only through transport; the log
tools (``evo/logs/``) the stdlib only; the command-line kit (``evo/cmdline/``) the pure engine, transport and
structlog; transport zmq, msgpack and structlog, never evo; gpuworker torch and its data libraries, the pure
engine, transport and the kit, never the head, the adapters or the command line of the head; the
composition layer (``evo/cli/``, ``evo/experiments/``, the Python API ``evovae/``) everything.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"


@dataclass(frozen=True)
class Layer:
    """One row of the table: the packages it holds, the layers and outside libraries it may import."""

    name: str                     #: as the first column of docs/design.md's table names it
    packages: tuple[str, ...]     #: the packages it holds, with their subpackages
    layers: frozenset[str]        #: the layers it may import (besides itself)
    libraries: frozenset[str]     #: the outside libraries (top-level names) it may import; the stdlib always
    modules_only: bool = False    #: holds the package's own modules, none of its subpackages


PURE_ENGINE = "pure engine"
COMPOSITION = "composition"
_LAYERS = [
    Layer(PURE_ENGINE, ("evo",), frozenset(), frozenset({"numpy"}), modules_only=True),
    Layer("adapters", ("evo.adapters",), frozenset({PURE_ENGINE}), frozenset({"optuna"})),
    Layer("head", ("evo.head",), frozenset({PURE_ENGINE, "transport"}), frozenset({"numpy", "structlog"})),
    Layer("log tools", ("evo.logs",), frozenset(), frozenset()),
    Layer("command-line kit", ("evo.cmdline",), frozenset({PURE_ENGINE, "transport"}),
          frozenset({"structlog", "tomli"})),
    Layer("transport", ("transport",), frozenset(), frozenset({"zmq", "msgpack", "structlog"})),
    Layer("worker", ("gpuworker",), frozenset({PURE_ENGINE, "transport", "command-line kit"}),
          frozenset({"torch", "torchvision", "numpy", "PIL", "pyarrow", "matplotlib", "structlog"})),
]
#: every library some layer may import: the composition layer may import all of them, and every layer
_ALL_LIBRARIES = frozenset().union(*(layer.libraries for layer in _LAYERS))
#: the peer arms' libraries (evo/experiments/peers.py; setup.cfg's compare extra): the composition layer's alone
PEER_LIBRARIES = frozenset({"dehb", "ConfigSpace", "loguru", "smac"})
#: optuna-dashboard, served by evovae dashboard (evo/cli/dashboard.py; setup.cfg's dashboard extra): the composition
#: layer's alone
DASHBOARD_LIBRARIES = frozenset({"optuna_dashboard"})
#: the live progress display of evovae search and the experiments (evo/cli/live.py): the composition layer's alone
DISPLAY_LIBRARIES = frozenset({"rich"})
_LAYERS.append(Layer(COMPOSITION, ("evo.cli", "evo.experiments", "evovae"), frozenset(layer.name for layer in _LAYERS),
                     _ALL_LIBRARIES | PEER_LIBRARIES | DISPLAY_LIBRARIES | DASHBOARD_LIBRARIES))
LAYERS = {layer.name: layer for layer in _LAYERS}


# ---------------------------------------------------------------------------------------------- the walk

@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def top_packages(root: Path = ROOT) -> list[str]:
    """Every top-level package of the repository (a folder with an ``__init__.py``), the tests aside."""
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (p / "__init__.py").is_file() and p.name != "tests")


def walk(root: Path = ROOT) -> list[Module]:
    """Every module of every package under ``root``, subpackages included, found on disk."""
    found = []
    for top in top_packages(root):
        for path in sorted((root / top).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found.append(Module(".".join(parts[:-1] if is_package else parts), path, is_package))
    return found


MODULES = walk()
KNOWN = {m.name for m in MODULES}
PACKAGES = {m.name for m in MODULES if m.is_package}
INTERNAL = set(top_packages())


def layer_of(name: str) -> Layer | None:
    """The layer that holds module ``name`` (None: none does)."""
    best: tuple[int, Layer] | None = None
    for layer in _LAYERS:
        for package in layer.packages:
            if name == package or name.startswith(package + "."):
                rest = name[len(package) + 1:]
                if layer.modules_only and rest and ("." in rest or f"{package}.{rest}" in PACKAGES):
                    continue  # a subpackage: another layer's, or no layer's
                if best is None or len(package) > best[0]:
                    best = (len(package), layer)
    return None if best is None else best[1]


def layer_name(name: str) -> str | None:
    """The name of the layer that holds module ``name`` (None: none does)."""
    layer = layer_of(name)
    return None if layer is None else layer.name


# ---------------------------------------------------------------------------------------------- the scan

@dataclass(frozen=True)
class Import:
    line: int
    name: str | None   #: the absolute module name; None when the source does not say it (computed)
    text: str          #: the statement as written


def _package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def _absolute(relative: str, level: int, module: str, is_package: bool) -> str:
    """``from <level dots><relative> import ...`` in ``module``, as an absolute name."""
    base = _package_of(module, is_package).split(".")
    if level - 1 >= len(base):
        raise ValueError(f"{module}: a relative import beyond the top-level package")
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([relative] if relative else []))


def _called(node: ast.Call) -> str | None:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return name if name in ("import_module", "__import__") else None


def _dynamic_name(node: ast.Call, module: str, is_package: bool) -> str | None:
    """The module an ``import_module``/``__import__`` call names, when the source says it."""
    if not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        name = arg.value
        if name.startswith("."):  # import_module(".x", __package__ / __name__ / "pkg")
            anchor = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "package"), None)
            if isinstance(anchor, ast.Name) and anchor.id in ("__name__", "__package__"):
                package = _package_of(module, is_package)
            elif isinstance(anchor, ast.Constant) and isinstance(anchor.value, str):
                package = anchor.value
            else:
                return None
            level = len(name) - len(name.lstrip("."))
            return _absolute(name[level:], level, package, True)
        return name
    if (isinstance(arg, ast.JoinedStr) and len(arg.values) >= 2 and isinstance(arg.values[0], ast.FormattedValue)
            and isinstance(arg.values[0].value, ast.Name) and arg.values[0].value.id in ("__name__", "__package__")
            and isinstance(arg.values[1], ast.Constant) and str(arg.values[1].value).startswith(".")):
        return module if arg.values[0].value.id == "__name__" else _package_of(module, is_package)
    return None


def imports_of(source: str, module: str, is_package: bool = False, known: set[str] = KNOWN) -> list[Import]:
    """Every import in ``source`` (the text of ``module``), wherever it stands, as absolute names.
    ``from P import X`` imports ``P.X`` when that is a module of ``known``, else ``P``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name, f"import {alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, module, is_package) if node.level else node.module
            assert base, f"{module}:{node.lineno}: from . import with no package"
            text = f"from {'.' * node.level}{node.module or ''} import ..."
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(node.lineno, sub if sub in known else base, text))
        elif isinstance(node, ast.Call) and _called(node):
            found.append(Import(node.lineno, _dynamic_name(node, module, is_package),
                                ast.unparse(node)[:80]))
    return sorted(found, key=lambda i: i.line)


def violations(module: str, imports: list[Import]) -> list[str]:
    """What ``imports`` of ``module`` break of its layer's rule, one line each (empty: none)."""
    layer = layer_of(module)
    if layer is None:
        return [f"{module}: no layer of docs/design.md holds it (add a row and a rule)"]
    bad = []
    for imp in imports:
        where = f"{module}:{imp.line}: {imp.text}"
        if imp.name is None:
            if layer.name != COMPOSITION:
                bad.append(f"{where}: an import the source does not name (only the composition layer may)")
            continue
        top = imp.name.partition(".")[0]
        if top in INTERNAL:
            target = layer_of(imp.name)
            if target is None:
                bad.append(f"{where}: {imp.name} is in no layer")
            elif target is not layer and target.name not in layer.layers:
                bad.append(f"{where}: the {layer.name} may not import the {target.name} ({imp.name})")
        elif top not in sys.stdlib_module_names and top not in layer.libraries:
            bad.append(f"{where}: the {layer.name} may not import {top}")
    return bad


def scan(module: Module) -> list[Import]:
    return imports_of(module.path.read_text(encoding="utf-8"), module.name, module.is_package)


# ---------------------------------------------------------------------------------------------- static checks

def test_the_walk_finds_every_package_and_gives_each_module_a_layer():
    assert {"evo", "transport", "gpuworker"} <= INTERNAL
    assert {"evo.genotype", "evo.strategies", "evo.adapters.tpe", "evo.head.cluster", "evo.logs.reading",
            "evo.cmdline.validate", "evo.cli.app", "evo.experiments.paper", "transport.broker",
            "gpuworker.cli", "gpuworker.data.images"} <= KNOWN
    assert layer_name("evo.strategies") == layer_name("evo") == PURE_ENGINE
    assert layer_name("gpuworker.data.images") == "worker"
    assert layer_name("evo.cli.app") == layer_name("evo.experiments") == layer_name("evovae") == COMPOSITION
    orphans = [m.name for m in MODULES if layer_of(m.name) is None]
    assert not orphans, f"modules no layer of docs/design.md holds: {orphans}"


@pytest.mark.parametrize("module", MODULES, ids=[m.name for m in MODULES])
def test_every_import_keeps_to_its_layer(module):
    bad = violations(module.name, scan(module))
    assert not bad, "imports across the layers of docs/design.md:\n" + "\n".join(bad)


def test_the_scan_sees_lazy_relative_and_dynamic_imports():
    source = textwrap.dedent("""
        import json

        def make():
            import torch
            from .adapters import tpe
            from .head import cluster
            return importlib.import_module("zmq"), __import__("optuna")

        class Late:
            def method(self):
                if True:
                    from . import genotype
                    return importlib.import_module(name)
    """)
    imports = imports_of(source, "evo.fake")
    assert [(i.line, i.name) for i in imports] == [
        (2, "json"), (5, "torch"), (6, "evo.adapters.tpe"), (7, "evo.head.cluster"), (8, "zmq"), (8, "optuna"),
        (13, "evo.genotype"), (14, None)]
    bad = "\n".join(violations("evo.fake", imports))
    for name in ("import torch", "adapters (evo.adapters.tpe)", "head (evo.head.cluster)", "import zmq",
                 "import optuna", "does not name"):
        assert name in bad
    assert "json" not in bad and "evo.genotype" not in bad
    with pytest.raises(ValueError, match="beyond the top-level package"):
        imports_of("from ...evo import spec\n", "gpuworker.data.own")
    assert imports_of("from .. import spec\n", "gpuworker.data.own")[0].name == "gpuworker"
    assert imports_of("from . import base\n", "gpuworker.data", is_package=True)[0].name == "gpuworker.data.base"
    dynamic = 'importlib.import_module(f"{__name__}.{x}")\nimportlib.import_module(".own", __package__)\n'
    assert [i.name for i in imports_of(dynamic, "gpuworker.data", is_package=True)] == \
        ["gpuworker.data", "gpuworker.data.own"]


def test_a_lazy_import_that_crosses_a_layer_fails_the_check():
    """What issue 15 found: the engine reached the adapters from inside a function."""
    source = "def make_strategy(o):\n    if o:\n        from .adapters.tpe import TPESearch\n"
    assert violations("evo.strategies", imports_of(source, "evo.strategies")) == [
        "evo.strategies:3: from .adapters.tpe import ...: the pure engine may not import the adapters "
        "(evo.adapters.tpe)"]
    source = "def main():\n    from evo.cli.worker import main\n    import zmq\n"
    assert len(violations("gpuworker.__main__", imports_of(source, "gpuworker.__main__"))) == 2


def _table() -> dict[str, list[str]]:
    """docs/design.md's layout table: the first column (the layer) -> the row's cells."""
    text = DESIGN.read_text(encoding="utf-8")
    section = text.split("## Layout: who may import whom", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("|")]
    header, _, *body = rows
    assert header == ["layer", "package", "holds", "may import"]
    return {row[0]: row for row in body}


def _ticked(text: str) -> set[str]:
    return set(text.split("`")[1::2])


def test_the_design_doc_states_the_same_rules():
    """The table of docs/design.md and :data:`LAYERS` say the same: a row per layer, its folders, and in
    "may import" (before the first "never") exactly its outside libraries in backticks and the layers it may
    import by name; what a row says it "never" imports its rule does not allow."""
    table = _table()
    assert list(table) == list(LAYERS)
    for name, layer in LAYERS.items():
        _, folders, _, may = table[name]
        expected = {f"{p.replace('.', '/')}/*.py" if layer.modules_only else f"{p.replace('.', '/')}/"
                    for p in layer.packages}
        assert _ticked(folders) == expected, name
        allowed, _, never = may.partition("never")
        assert "stdlib" in allowed, name
        if name == COMPOSITION:
            assert "everything" in allowed and not never
            continue
        assert _ticked(allowed) == set(layer.libraries), f"{name}: the libraries of its row"
        for other in layer.layers:
            assert other in allowed, f"{name}: its row does not say it may import the {other}"
        assert not _ticked(never) & layer.libraries, f"{name}: its row says never to what its rule allows"


# ---------------------------------------------------------------------------------------------- at import time

def _reach(layer: Layer) -> tuple[set[str], set[str]]:
    """The layers (itself included) and the libraries ``layer`` reaches, through the layers it may import."""
    layers, todo = set(), [layer.name]
    while todo:
        name = todo.pop()
        if name not in layers:
            layers.add(name)
            todo += LAYERS[name].layers
    return layers, set().union(*(LAYERS[name].libraries for name in layers))


#: the modules a fresh interpreter imports one by one (the composition layer reaches everything)
LOADED = [m.name for m in MODULES if layer_name(m.name) not in (None, COMPOSITION)]

_PROBE = """
import json, os, sys
def loaded(module):
    import importlib
    importlib.import_module(module)
    return sorted(sys.modules)
out = {}
for module in json.loads(sys.argv[1]):
    if not hasattr(os, "fork"):
        raise SystemExit("no fork")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child of a bare interpreter: as fresh as a new one, without the start-up
        os.close(read)
        try:
            data = json.dumps(loaded(module))
        except BaseException as exc:
            data = json.dumps({"error": repr(exc)})
        with os.fdopen(write, "w") as pipe:
            pipe.write(data)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        out[module] = json.loads(pipe.read())
    os.waitpid(pid, 0)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str] | dict[str, str]]:
    """Module -> what ``sys.modules`` holds after importing it in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(LOADED)], capture_output=True, text=True,
                         cwd=ROOT)
    if out.returncode == 0:
        return json.loads(out.stdout.splitlines()[-1])
    assert "no fork" in out.stderr, out.stderr
    code = "import sys, json, importlib\nimportlib.import_module(sys.argv[1])\nprint(json.dumps(sorted(sys.modules)))"
    result = {}
    for module in LOADED:
        one = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, cwd=ROOT)
        result[module] = json.loads(one.stdout) if one.returncode == 0 else {"error": one.stderr[-2000:]}
    return result


@pytest.mark.slow  # some hundred processes, a few of which import torch
@pytest.mark.parametrize("module", LOADED)
def test_importing_a_module_loads_only_what_its_layer_reaches(module, loaded):
    names = loaded[module]
    assert isinstance(names, list), f"importing {module} failed: {names}"
    layer = layer_of(module)
    assert layer is not None
    layers, libraries = _reach(layer)
    internal = {n for n in names if n.partition(".")[0] in INTERNAL and layer_of(n) is not None}
    reached = {n for n in internal if layer_name(n) in layers}
    parents = {n.rsplit(".", k)[0] for n in reached for k in range(1, n.count(".") + 1)}  # imported with them
    beyond = sorted(internal - reached - parents | {n for n in names if n in _ALL_LIBRARIES - libraries})
    assert not beyond, f"importing {module} ({layer.name}) loads {beyond}"


@pytest.mark.slow
def test_gpuworker_is_where_torch_lives(loaded):
    assert "torch" in loaded["gpuworker.train"]
    assert not any("torch" in loaded[m] for m in LOADED if not m.startswith("gpuworker"))


def test_the_engine_builds_tpe_only_once_the_adapters_registered_it():
    """make_strategy reaches the adapters by registration (evo.adapters.register_all, called by evo.cli and
    evo.experiments), never by an import of its own; Optuna is loaded when a TPE search is made."""
    code = textwrap.dedent("""
        import sys
        from evo.strategies import StrategyOptions, make_strategy
        try:
            make_strategy(StrategyOptions(strategy="tpe"))
        except ValueError as exc:
            print(exc)
        import evo.experiments  # the composition layer registers the adapters' strategies
        print("optuna" in sys.modules, type(make_strategy(StrategyOptions(strategy="tpe"))).__name__,
              "optuna" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    refused, made = out.stdout.strip().splitlines()
    assert "'tpe'" in refused and "evo.adapters.register_all()" in refused
    assert made == "False MultiFidelityTPE True"
