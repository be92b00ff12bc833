"""Every example of docs/api.md and of the README runs: the ```python blocks of each page, in order, in one
namespace (a block sees the names of the ones before it), in a fresh working directory."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(page: Path) -> list[str]:
    """The ```python blocks of ``page``, in order."""
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


def run_blocks(page: Path) -> dict:
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(python_blocks(page), 1):
        try:
            exec(compile(block, f"{page.name}, python block {number}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page.name}: python block {number} fails: {type(exc).__name__}: {exc}\n"
                                 f"{block}") from exc
    return namespace


def test_the_pages_have_examples():
    assert len(python_blocks(ROOT / "docs" / "api.md")) >= 8
    assert len(python_blocks(ROOT / "README.md")) >= 1


def test_the_readme_ask_tell_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = run_blocks(ROOT / "README.md")
    engine = namespace["engine"]
    assert engine.done and capsys.readouterr().out.strip() == str(engine.population[0].genotype)
    assert "docs/api.md" in (ROOT / "README.md").read_text()


@pytest.mark.slow  # searches scikit-learn's digits and synthetic tables, and starts two local workers
def test_every_example_of_docs_api_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = run_blocks(ROOT / "docs" / "api.md")
    printed = capsys.readouterr().out
    assert "stopped: budget" in printed and "budget_epochs: 6 then, 12 now" in printed
    assert "val_size=359" in printed and "--" not in printed.split("val_size:", 1)[1].splitlines()[0]
    assert namespace["person"].likelihood == "gaussian" and namespace["on_two"].stop_reason == "budget"
    assert (tmp_path / "runs" / "digits" / "data.npy").is_file()
    assert (tmp_path / "runs" / "people" / "data.csv").is_file()
    assert not (tmp_path / "runs" / "refused").exists()
    # each run keeps its logs (docs/api.md's "Logs, the dashboard and the report of a run")
    logs = namespace["logs"]
    assert logs["evaluations"] == 4 and sorted(w["worker_id"][:6] for w in logs["workers"]) == ["local0", "local1"]
    assert len(namespace["study"].trials) == len(namespace["on_two"].evaluations)
    assert "'head.log', 'worker-local0.log', 'worker-local1.log'" in printed
    assert all((tmp_path / "runs" / name / "logs" / "head.log").is_file() for name in ("digits", "people", "progress"))
