import os
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


@pytest.fixture
def serve():
    """Start `python build.py SOURCE --out OUT --serve` on a free port and wait until it
    answers `first_path`; yields the base URL, and stops the server afterwards."""
    import contextlib
    import socket
    import subprocess
    import time
    import urllib.request

    @contextlib.contextmanager
    def _serve(source: Path, out: Path, first_path: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "build.py", str(source), "--out", str(out),
                                 "--serve", "--port", str(port)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(base + first_path, timeout=5):
                        break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise AssertionError(f"the server did not answer {first_path}")
                    time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return _serve


@pytest.fixture(scope="session")
def course_site(tmp_path_factory):
    """The course, built once for the session as CI builds it (--strict); read-only."""
    import build
    out = tmp_path_factory.mktemp("course") / "site"
    assert build.main(["--out", str(out), "-q", "--strict"]) == 0
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one CPU thread for a test module (then restored): on a busy 2-core
    machine two threads fighting other processes make steps many times slower."""
    from annogen.train import torch_threads
    with torch_threads(1):
        yield


# A hung test must not hold CI until its overall limit: after HANG_S seconds in one test
# the interpreter prints every thread's stack to the real stderr (so the log shows where it
# hung) and exits with an error.
HANG_S = float(os.environ.get("ANNOGEN_TEST_HANG_S", 600))
_stderr_fd = None


def pytest_configure(config):
    global _stderr_fd
    _stderr_fd = os.dup(2)  # output capture is suspended here, so fd 2 is the terminal/log


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Around each test's setup, call and teardown, so module and session fixtures (a
    site build, a browser, a training run) are watched too."""
    import faulthandler
    faulthandler.dump_traceback_later(HANG_S, exit=True, file=_stderr_fd)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
