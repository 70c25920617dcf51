r"""
# Errors and warnings

An author who breaks a formula, a directive or a cross-reference should see one line
that says what is wrong and where, in the form compilers use, so that editors can jump
to it:

    src/annogen/vqvae/model.py:42: unclosed inline formula: `$` has no closing `$`

Every check in the builder raises a `BuildError` carrying the file and the line. The
command line prints it and exits non-zero; `--serve` shows it in the page instead.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path


def display_path(path: str | os.PathLike) -> str:
    """Show a path relative to the working directory when it lies below it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class BuildError(Exception):
    """A problem in an input file, with the place it was found."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __reduce__(self):  # so that an error raised in a worker process reaches the parent
        return (BuildError, (self.path, self.line, self.message))

    def __str__(self) -> str:
        where = display_path(self.path)
        if self.line:
            where += f":{self.line}"
        return f"{where}: {self.message}"


# Warnings do not stop the build; they are collected and printed once at the end,
# in the same `path:line:` form.
@dataclass
class Warnings:
    items: list[str] = field(default_factory=list)
    errors: list[BuildError] = field(default_factory=list)  # the same, as errors (--strict)

    def warn(self, path: str | os.PathLike, line: int | None, message: str) -> None:
        where = display_path(path) + (f":{line}" if line else "")
        self.items.append(f"{where}: warning: {message}")
        self.errors.append(BuildError(path, line, message))

    def extend(self, other: "Warnings") -> None:
        self.items.extend(other.items)
        self.errors.extend(other.errors)

    def print(self, stream=None) -> None:
        stream = stream or sys.stderr  # looked up now, so that redirection is honoured
        for item in self.items:
            print(item, file=stream)
