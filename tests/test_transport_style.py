"""House rules of transport/, checked on its source: imports, sockets, no print, no sleep."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import transport

SOURCES = sorted(Path(transport.__file__).parent.glob("*.py"))
ALLOWED = set(sys.stdlib_module_names) | {"zmq", "msgpack", "structlog", "transport", "__future__"}


def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_imports_only_stdlib_zmq_msgpack_structlog(path):
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in ALLOWED, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_print_and_no_sleep(path):
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call):
            func = node.func
            assert not (isinstance(func, ast.Name) and func.id == "print"), f"print() in {path.name}"
            assert not (isinstance(func, ast.Attribute) and func.attr == "sleep"), f"sleep() in {path.name}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_every_socket_is_introduced_by_a_comment_and_lingers(path):
    lines = path.read_text().splitlines()
    opened = [i for i, line in enumerate(lines) if ".socket(zmq." in line]
    for i in opened:
        comment = lines[i - 1].strip()
        assert comment.startswith("# ") and ("bind" in comment or "connect" in comment), (
            f"{path.name}:{i + 1}: open a socket under a '# TYPE, bind|connect, endpoint' comment"
        )
        following = "\n".join(lines[i : i + 4])
        assert "LINGER" in following or "linger_ms=" in following, f"{path.name}:{i + 1}: set LINGER"
