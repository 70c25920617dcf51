import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def write(tmp_path):
    """Write a dedented file below tmp_path and return its path."""
    def _write(rel: str, text: str) -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf8")
        return path
    return _write


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one CPU thread for a test module (then restored): on a busy 2-core
    machine two threads fighting other processes make steps many times slower."""
    from annogen.train import torch_threads
    with torch_threads(1):
        yield
