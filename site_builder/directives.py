r"""
# Highlight directives

A chapter that is written as a change to an earlier one (VQGAN from VQ-VAE, Sana from
DiT) should *show* the change: added code on a green background with a `+` in the
gutter, removed code on red with a `−`, and a neutral emphasis for "look here". Colour
is never the only cue; the gutter mark says the same thing.

There are two forms.

**Block directives.** A comment block whose first line is `# ===ADD===`, `# ===DEL===`
or `# ===HL===` marks *all* the code after it, up to the next `#` comment block. The
original Pycco modification marked only one section, so an added method was cut in two
at its `def` line unless the author added a bare `#` line; here the mark runs on across
the `def`/`class`/decorator splits and across docstrings. The directive line itself is
removed from the prose, before Pycco's `=== Name ===` heading rule could turn it into a
heading called "ADD".

**Line markers.** A comment at the end of one code line marks just that line and is
removed from the displayed code:

    z_q = z_e + (z_q - z_e).detach()  # [!code ++]
    loss = mse(x, x_hat)              # [!code --]
    beta = 0.25                       # [!code hl]

Anything that looks like a directive but is not one — `# ===ADDD===`, `# [!code +]`, a
directive that is not the first line of its comment block — is a build error with the
file and line, because a silently ignored directive is a page that shows the wrong diff.
"""

from __future__ import annotations

import difflib
import re

from .errors import BuildError
from .parse import Section

BLOCK_KINDS = {"ADD": "add", "DEL": "del", "HL": "hl"}
LINE_KINDS = {"++": "add", "--": "del", "hl": "hl"}

# `===WORD===` with no spaces is reserved for directives; `=== Some Name ===` (with
# spaces) stays Pycco's anchored heading. A line of equals signs around a single word
# that is *close* to a directive name (`==ADD==`, `=== ADD ===`, `===Add===`) is taken as
# a misspelt directive rather than as a heading.
BLOCK_RE = re.compile(r"^===([A-Za-z]+)===\s*$")
NEAR_BLOCK_RE = re.compile(r"^=+\s*([A-Za-z]+)\s*=+\s*$")
LINE_RE = re.compile(r"\s*#\s*\[!code\s+([^\]]*?)\s*\]\s*$")
ANY_LINE_MARKER = re.compile(r"\[!code\b")


def _near_directive(word: str) -> bool:
    word = word.upper()
    return any(difflib.SequenceMatcher(None, word, k).ratio() >= 0.66 for k in BLOCK_KINDS)


def block_directive(section: Section, path: str) -> str | None:
    """The kind named by the section's leading directive line, which is removed."""
    lines = section.docs.split("\n")
    found = None
    for i, line in enumerate(lines):
        text = line.strip()
        lineno = section.docs_line + i
        m = BLOCK_RE.match(text)
        near = NEAR_BLOCK_RE.match(text)
        if m:
            if m.group(1) not in BLOCK_KINDS:
                raise BuildError(path, lineno, f"unknown directive '{text}'; expected "
                                 "===ADD===, ===DEL=== or ===HL===")
            if i != 0 or section.docs_from_docstring:
                raise BuildError(path, lineno, f"directive '{text}' must be the first line "
                                 "of a # comment block")
            found = BLOCK_KINDS[m.group(1)]
        elif near and _near_directive(near.group(1)):
            raise BuildError(path, lineno, f"malformed directive '{text}'; write it as "
                             f"===ADD===, ===DEL=== or ===HL=== (no spaces)")
    if found:
        section.docs = "\n".join(lines[1:])
    return found


def apply_directives(sections: list[Section], path: str, comments: dict[int, str]) -> None:
    """Fill in `section.marks` from block directives and end-of-line markers.

    `comments` maps a line number to the real `#` comment on it (from `tokenize`), so
    that a marker spelled inside a string literal is left alone."""
    active = None
    for s in sections:
        kind = block_directive(s, path)
        if kind:
            active = kind
        elif s.docs.strip() and not s.docs_from_docstring:
            # A new comment block ends the region of the previous directive.
            active = None
        s.marks = [active or ""] * len(s.code_lines)

        for i, line in enumerate(s.code_lines):
            lineno = s.linenos[i]
            comment = comments.get(lineno) if comments is not None else line
            if not comment or not ANY_LINE_MARKER.search(comment):
                continue
            m = LINE_RE.search(line)
            if not m or m.group(1) not in LINE_KINDS:
                shown = comment.strip()
                raise BuildError(path, lineno, f"malformed line marker '{shown}'; expected "
                                 "# [!code ++], # [!code --] or # [!code hl] at the end "
                                 "of a code line")
            s.code_lines[i] = line[: m.start()].rstrip()
            s.marks[i] = LINE_KINDS[m.group(1)]
