r"""
# Using every core

Most of a full build is Pygments lexing and Markdown, page by page, with no page
depending on another once the first pass has collected titles and anchors. So both
passes are a *map* over pages, and we spread it over the machine's cores with forked
worker processes. A forked worker starts with a copy of everything the parent had
loaded, so nothing needs to be sent to it but a page number; what comes back is small
(a prepared page, or just the name of the file it wrote). The output does not depend
on how pages were split between workers, so builds stay byte-identical.

Where `fork` does not exist (Windows) or the site is small, the same function runs in
a plain loop.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Callable

_TASK: Callable | None = None


def _run(i: int):
    return _TASK(i)


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def fork_map(task: Callable[[int], object], n: int, jobs: int) -> list:
    """`[task(i) for i in range(n)]`, in `jobs` forked processes when that pays off.
    An exception in a worker (a `BuildError`, say) is raised here, in the parent."""
    global _TASK
    if jobs <= 1 or n < 4 * jobs or "fork" not in multiprocessing.get_all_start_methods():
        return [task(i) for i in range(n)]
    _TASK = task
    try:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            return pool.map(_run, range(n), chunksize=max(1, n // (4 * jobs)))
    finally:
        _TASK = None
