r"""
# Math that survives Markdown

Markdown and LaTeX want the same characters. Left alone, Python-Markdown turns `\\` into
`\` (so the rows of an `aligned` block run together), `\{` into `{`, `\(x\)` into `(x)`,
pairs of `*` or `_` inside a formula into `<em>`, and `$p<b>q$` into raw HTML; smarty
turns `--` into an en dash. The fix is to take every formula out of Markdown's hands
before it runs. `pymdownx.arithmatex` does that: it recognises `$...$`, `$$...$$`,
`\(...\)`, `\[...\]` and `\begin{env}...\end{env}`, stores the TeX untouched and
emits

    <span class="arithmatex">\(...\)</span>   and   <div class="arithmatex">\[...\]</div>

which MathJax 3 then typesets, configured to look *only* inside the `arithmatex`
class. Two gaps remain, and this module closes them:

1. arithmatex's block rule does not see a `$$` block that sits directly under a line of
   prose (no blank line between), which is how most annotated code writes it. We insert
   the blank lines.
2. `$$...$$` in the middle of a line is not matched at all (it comes out as `$` + inline
   math + `$`). We add a small inline pattern for it.

Finally, a formula with no closing delimiter would silently show a stray `$`; we find it
and report the file and line.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as etree

import markdown
from markdown.extensions import Extension
from markdown.inlinepatterns import InlineProcessor
from markdown.util import AtomicString

from .errors import BuildError

FENCE = re.compile(r"^\s*(```|~~~)")
LIST_ITEM = re.compile(r"^\s{0,3}([-*+]|\d+[.)])\s")


@functools.lru_cache(maxsize=4096)
def mask_code(text: str) -> str:
    """Blank out fenced blocks, indented code blocks and inline code spans, keeping
    every offset, so that searches for math or cross-references skip code."""
    out = []
    in_fence = None
    prev_blank = True
    in_list = False  # inside a list item, code needs 8 spaces, not 4
    for line in text.split("\n"):
        m = FENCE.match(line)
        if in_fence:
            if m and m.group(1) == in_fence:
                in_fence = None
            out.append(" " * len(line))
            continue
        if m:
            in_fence = m.group(1)
            out.append(" " * len(line))
            continue
        if line.strip() and not line.startswith("    "):
            in_list = bool(LIST_ITEM.match(line))
        if prev_blank and line.startswith("        " if in_list else "    ") and line.strip():
            out.append(" " * len(line))  # an indented code block
            continue
        prev_blank = not line.strip()
        out.append(re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m.group(0)), line))
    return "\n".join(out)


# === Display math directly under prose ===
#
# A line that starts with `$$` opens a display block; it closes on the line that ends
# with `$$` (the same line for a one-line block). We make sure a blank line stands
# before and after the block, with the block's own indentation so that a formula inside
# a list item stays in that item.

def separate_display_math(text: str) -> str:
    lines = text.split("\n")
    masked = mask_code(text).split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        stripped = masked[i].strip()
        if stripped.startswith("$$"):
            j = i
            one_line = len(stripped) > 2 and stripped.endswith("$$") and stripped != "$$"
            if not one_line:
                j = i + 1
                while j < len(lines) and not masked[j].rstrip().endswith("$$"):
                    j += 1
                if j == len(lines):  # unclosed: leave it for the checker to report
                    out.extend(lines[i:])
                    break
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            if out and out[-1].strip():
                out.append(indent)
            out.extend(lines[i: j + 1])
            if j + 1 < len(lines) and lines[j + 1].strip():
                out.append(indent)
            i = j + 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


# === `$$...$$` inside a line ===
#
# We emit the same markup arithmatex uses for display math, so MathJax treats both the
# same way; the TeX is an `AtomicString`, which no other inline pattern touches.

class InlineDisplayMath(InlineProcessor):
    def handleMatch(self, m, data):
        el = etree.Element("span", {"class": "arithmatex arithmatex-display"})
        el.text = AtomicString("\\[" + m.group(1) + "\\]")
        return el, m.start(0), m.end(0)


class InlineDisplayMathExtension(Extension):
    def extendMarkdown(self, md):
        # Below the code-span rule (190), so `$$x$$` inside backticks stays code, and above
        # arithmatex's inline `$` rule (189.9), which would take `$` + `$x$` + `$`.
        md.inlinePatterns.register(
            InlineDisplayMath(r"(?<!\\)\$\$((?:\\.|[^\\$])+?)\$\$", md), "inline-display-math", 189.95)


# === Dunder names are never emphasis ===
#
# Markdown reads `__main__.py` as bold "main" followed by ".py", and `__init__` the
# same way. In prose about Python a word wrapped in double underscores is a name, so we
# take it out of Markdown's hands, like a formula, before the emphasis rules run.

class DunderName(InlineProcessor):
    def handleMatch(self, m, data):
        return AtomicString(m.group(0)), m.start(0), m.end(0)


class DunderNameExtension(Extension):
    def extendMarkdown(self, md):
        # Below code spans, escapes and math (so `__x__` in backticks stays code), above
        # the emphasis rules (60 and 50).
        md.inlinePatterns.register(
            DunderName(r"(?<![\w*])__[A-Za-z0-9][A-Za-z0-9_]*?__(?![A-Za-z0-9_*])", md),
            "dunder-name", 70)


def make_markdown() -> markdown.Markdown:
    """One Markdown converter, reused (with `reset()`) for every section of a build;
    building a new one per section is what makes stock Pycco slow."""
    return markdown.Markdown(
        extensions=[
            "pymdownx.arithmatex",
            InlineDisplayMathExtension(),
            DunderNameExtension(),
            "markdown.extensions.fenced_code",
            "markdown.extensions.codehilite",
            "markdown.extensions.footnotes",
            "markdown.extensions.tables",
            "markdown.extensions.md_in_html",
            "markdown.extensions.smarty",
        ],
        extension_configs={
            "pymdownx.arithmatex": {"generic": True, "smart_dollar": True},
            "markdown.extensions.codehilite": {"css_class": "highlight", "guess_lang": False},
        },
    )


# === Finding unclosed formulas ===
#
# We remove, in order, escaped dollars, code, every complete formula (the same shapes
# arithmatex accepts), and look at what is left: a `$$` or a `$` that starts something
# (`$x`, not `$2.00`) is a formula that never closed, and so is a `\begin{...}` without
# its `\end`.

COMPLETE_MATH = [
    re.compile(r"\$\$(?:\\.|[^\\$])+?\$\$", re.S),
    re.compile(r"\\begin\{([a-zA-Z]+\*?)\}.*?\\end\{\1\}", re.S),
    re.compile(r"\\\[.+?\\\]", re.S),
    re.compile(r"\\\(.+?\\\)", re.S),
    # Inline math may run over several lines of one paragraph (Markdown and MathJax
    # both allow it), but never across a blank line: a paragraph that ends without
    # its closing `$` must not borrow one from the next paragraph.
    re.compile(r"(?<!\\)\$(?![\s$])(?:\\.|[^\\$\n]|\n(?![ \t]*(?:\n|$)))+?(?<!\s)\$"),
]


def _blank(m: re.Match) -> str:
    return re.sub(r"[^\n]", " ", m.group(0))


def check_math(text: str, path: str, first_line: int) -> None:
    rest = mask_code(text).replace("\\$", "  ")
    for pattern in COMPLETE_MATH:
        rest = pattern.sub(_blank, rest)

    def fail(pos: int, what: str) -> None:
        raise BuildError(path, first_line + rest.count("\n", 0, pos), what)

    if (m := re.search(r"\$\$", rest)):
        fail(m.start(), "unclosed display formula: `$$` has no closing `$$`")
    if (m := re.search(r"\\begin\{([^}]*)\}", rest)):
        fail(m.start(), f"unclosed environment: \\begin{{{m.group(1)}}} has no \\end{{{m.group(1)}}}")
    if (m := re.search(r"(?<!\\)\$(?=[^\s\d$])", rest)):
        fail(m.start(), "unclosed inline formula: `$` has no closing `$` "
                        "(write \\$ for a literal dollar sign)")
