"""Every module under src/annogen/ runs on its own, both as `python -m annogen.x.y` and as
`python src/annogen/x/y.py`: a model file demonstrates itself (shapes, parameter count,
one checked property), an experiment file says what to run, a `__main__.py` is a command
line. The files are found on disk, so a new chapter is covered without editing this test.

The default suite checks each file in-process, in well under a second each: no relative
import (which breaks the file form), a `__main__` block, and the file executing as a
top-level script. The slow suite (`-m slow`) runs every file both ways in subprocesses.
"""

from __future__ import annotations

import ast
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "annogen"
FILES = sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)
IDS = [p.relative_to(SRC).as_posix() for p in FILES]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] in ("__init__", "__main__"):
        parts.pop()
    return ".".join(parts)


def has_main_block(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = {getattr(n, "id", None) for n in ast.walk(node.test)}
            consts = {getattr(n, "value", None) for n in ast.walk(node.test)}
            if "__name__" in names and "__main__" in consts:
                return True
    return False


def test_the_files_are_found():
    names = set(IDS)
    assert {"data.py", "train.py", "metrics.py", "vqvae/model.py", "vqgan/model.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_file_uses_absolute_imports_and_has_a_main_block(path):
    tree = ast.parse(path.read_text(encoding="utf8"), filename=str(path))
    relative = [f"line {n.lineno}" for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert not relative, (f"{path.relative_to(ROOT)}: relative import(s) at {', '.join(relative)}; "
                          "`python path/to/file.py` cannot run them: write `from annogen... import`")
    if path.name != "__init__.py":
        assert has_main_block(tree), (f"{path.relative_to(ROOT)} has no `if __name__ == \"__main__\":` "
                                      "block: running it would do nothing")


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_file_executes_as_a_top_level_script(path, monkeypatch):
    # What `python src/annogen/x/y.py` does before its __main__ block: execute the file
    # outside its package, with the file's folder first on sys.path.
    monkeypatch.syspath_prepend(str(path.parent))
    runpy.run_path(str(path), run_name="annogen_runnable_check")


def command_pairs(path: Path) -> tuple[list[str], list[str]]:
    """The two ways to run `path`: as a module and as a file."""
    name = module_name(path)
    if path.name == "__main__.py":  # the chapter's command line: ask for its help
        return [sys.executable, "-m", name, "--help"], [sys.executable, str(path), "--help"]
    if path.name == "__init__.py":
        return [sys.executable, "-c", f"import {name}"], [sys.executable, str(path)]
    return [sys.executable, "-m", name], [sys.executable, str(path)]


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_file_runs_both_ways(path, tmp_path):
    # Run in a temporary folder: a demo may write a picture next to where it is run.
    for cmd in command_pairs(path):
        result = run(cmd, tmp_path)
        assert result.returncode == 0, (f"`{' '.join(cmd[1:])}` failed with exit status "
                                        f"{result.returncode}:\n{result.stderr[-3000:]}")
        if path.name != "__init__.py":
            assert result.stdout.strip(), f"`{' '.join(cmd[1:])}` printed nothing"
