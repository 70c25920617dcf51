r"""
# Highlighting code, one line at a time

Pycco highlights the whole file in one call to Pygments (so that a string or comment
spanning sections is lexed correctly) and then splits the HTML at marker comments. We
keep the one-call idea but split differently: we walk Pygments' *tokens* ourselves and
cut them at line ends, so every source line becomes one self-contained
`<span class="line">`. That is what lets a single line carry its own number, its
highlight background and its `+`/`−` gutter mark.
"""

from __future__ import annotations

import functools
import re
from html import escape

from pygments import lex
from pygments.formatters import HtmlFormatter
from pygments.token import STANDARD_TYPES, Comment

from .parse import Section

MARK_SYMBOL = {"add": "+", "del": "\u2212", "hl": "\u203a", "": ""}
MARK_LABEL = {"add": "added", "del": "removed", "hl": "highlighted"}


@functools.lru_cache(maxsize=None)
def css_class(ttype) -> str:
    """Pygments' short CSS class for a token type (`k` for Keyword, `nf` for a function
    name), falling back to the nearest parent type that has one."""
    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    return STANDARD_TYPES[ttype]


# === Math in code comments ===
#
# Authors annotate a line with its symbol: `counts = ...  # $n_i$`. Inside a comment
# token (never in code or strings) we mark each `$...$` the way arithmatex marks prose
# math, so MathJax typesets it; the TeX as written is kept in `data-src`, which the copy
# button puts back, so copied code is the code in the file.

COMMENT_MATH = re.compile(r"(?<!\\)\$(?![\s$])((?:\\.|[^\\$])+?)(?<!\s)\$")


def comment_html(text: str) -> str:
    out, pos = [], 0
    for m in COMMENT_MATH.finditer(text):
        out.append(escape(text[pos: m.start()], quote=False))
        out.append(f'<span class="arithmatex" data-src="{escape(m.group(0))}">'
                   f'\\({escape(m.group(1), quote=False)}\\)</span>')
        pos = m.end()
    out.append(escape(text[pos:], quote=False))
    return "".join(out)


# Before highlighting (which happens only for pages that are re-rendered), a cheap
# over-estimate: some line has a `#` with a formula after it.
COMMENT_MATH_HINT = re.compile(r"#[^\n]*?(?<!\\)\$(?![\s$])[^\n$]*?(?<!\s)\$")


def may_have_comment_math(code: str) -> bool:
    return "$" in code and bool(COMMENT_MATH_HINT.search(code))


def highlight_lines(code: str, lexer, found: list | None = None) -> list[str]:
    """HTML for each line of `code`, with every token span closed at the line end.
    A formula marked in a comment is noted in `found`."""
    lines: list[list[str]] = [[]]
    for ttype, value in lex(code, lexer):
        cls = css_class(ttype)
        parts = value.split("\n")
        in_comment = "$" in value and ttype in Comment
        for k, part in enumerate(parts):
            if k:
                lines.append([])
            if part:
                text = comment_html(part) if in_comment else escape(part, quote=False)
                if in_comment and found is not None and "arithmatex" in text:
                    found.append(True)
                lines[-1].append(f'<span class="{cls}">{text}</span>' if cls else text)
    html = ["".join(parts) for parts in lines]
    n = code.count("\n") + 1
    return (html + [""] * n)[:n]


def highlight_sections(sections: list[Section], lexer, found: list | None = None) -> list[str]:
    """The code column of every section, lexed together as one file."""
    joined = "\n".join("\n".join(s.code_lines) for s in sections if s.code_lines)
    lines = iter(highlight_lines(joined, lexer, found)) if joined else iter(())
    out = []
    for s in sections:
        rows = []
        for i, mark in enumerate(s.marks):
            html = next(lines)
            attrs = f' data-line="{s.linenos[i]}"'
            if mark:
                attrs += f' data-mark="{MARK_SYMBOL[mark]}" title="{MARK_LABEL[mark]}"'
            rows.append(f'<span class="line{" " + mark if mark else ""}"{attrs}>{html}</span>')
        out.append("\n".join(rows))
    return out


# === Readable on every background ===
#
# Pygments' colours are chosen for one background. Our code also sits on the tinted
# backgrounds of added, removed and emphasised lines, where several of them fall below
# the 4.5:1 contrast that WCAG asks of text. We read the theme's backgrounds from the
# stylesheet and move each token colour toward black (light theme) or white (dark
# theme) just far enough to reach 4.5:1 on all of them.

def _luminance(rgb: tuple[float, float, float]) -> float:
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _rgb(color: str) -> tuple[float, float, float]:
    h = color.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return tuple(int(h[i: i + 2], 16) / 255 for i in (0, 2, 4))


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(_rgb(a)), _luminance(_rgb(b))), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def readable(color: str, backgrounds: list[str], towards: str, ratio: float = 4.6) -> str:
    target = _rgb(towards)
    rgb = _rgb(color)
    for step in range(21):
        t = step / 20
        mixed = tuple(c + (d - c) * t for c, d in zip(rgb, target))
        out = "#" + "".join(f"{round(c * 255):02x}" for c in mixed)
        if all(contrast(out, bg) >= ratio for bg in backgrounds):
            return out
    return towards


def theme_backgrounds(css: str) -> dict[str, list[str]]:
    """The background colours of each theme, from the stylesheet's variables."""
    out = {}
    for theme, selector in (("light", ":root"), ("dark", '[data-theme="dark"]')):
        block = re.search(re.escape(selector) + r"\s*\{(.*?)\}", css, re.S)
        found = re.findall(r"--(?:bg|docs-bg|code-bg|add-bg|del-bg|hl-bg):\s*(#[0-9a-fA-F]{3,6})",
                           block.group(1) if block else "")
        out[theme] = found or (["#ffffff"] if theme == "light" else ["#000000"])
    return out


def pygments_css(site_css: str = "") -> str:
    """Token colours for the light theme and, scoped under `[data-theme="dark"]`, the
    dark one. Generated at build time so both always match the installed Pygments."""
    backgrounds = theme_backgrounds(site_css)

    def fix(css: str, theme: str) -> str:
        towards = "#000000" if theme == "light" else "#ffffff"
        return re.sub(r"(?<![-\w])color: (#[0-9a-fA-F]{3,6})",
                      lambda m: "color: " + readable(m.group(1), backgrounds[theme], towards), css)
    light = fix(HtmlFormatter(style="default").get_style_defs([".code", ".docs .highlight"]),
                "light")
    dark = fix(HtmlFormatter(style="github-dark").get_style_defs(
        ['[data-theme="dark"] .code', '[data-theme="dark"] .docs .highlight']), "dark")
    # Each theme's page background comes from our stylesheet, not from Pygments.
    keep = [ln for ln in (light + "\n" + dark).split("\n")
            if "{ background" not in ln and "pre { line-height" not in ln]
    return "\n".join(keep) + "\n"
