"""The built site, driven in headless Chromium over file://.

Two sites are built once per module: the course itself (`python build.py`) and a small
site from an annotated file written here, which holds the math and highlight edge cases.
Every browser context blocks the network: a page that asks for anything but a local
file fails the test, because the site must work offline.

Needs Chromium (`apt-get install chromium`) and the Python `playwright` package; the
browsers that `playwright install` downloads are not used.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import build  # noqa: E402
from site_builder.prerender import FIRST  # noqa: E402

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the `browser` fixture
    expect = sync_playwright = None

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]

# A course page whose source has no formula (and so must not load MathJax).
NO_MATH_PAGE = "site-builder/parse.html"

DEMO_SOURCE = r'''
r"""
# Demo page

Inline math $a_1 * b_2$ keeps its star and its subscripts; $\cancel{c}$ needs a
TeX extension that MathJax loads on demand (from the local copy).
"""

# ## Wide things
#
# An update over two lines, $\theta_t \leftarrow \theta_{t-1} - \alpha \cdot
# \frac{m_t}{\sqrt{v_t}}$, run by __main__.py, and a long inline formula
# $a_1 + a_2 + a_3 + a_4 + a_5 + a_6 + a_7 + a_8 + a_9 + a_{10} + a_{11} + a_{12} + a_{13} + a_{14} + a_{15} + a_{16} + a_{17} + a_{18} + a_{19} + a_{20} + a_{21} + a_{22} + a_{23} + a_{24}$.
#
# $$
# \operatorname{pipeline}(x) = D\Big(q\big(E(x_1)\big) + q\big(E(x_2)\big) + q\big(E(x_3)\big) + q\big(E(x_4)\big) + q\big(E(x_5)\big) + q\big(E(x_6)\big) + q\big(E(x_7)\big)\Big)
# $$
#
# | model | parameters | tokens | steps | images per second | memory | notes on the run |
# | --- | --- | --- | --- | --- | --- | --- |
# | a rather long model name | 123,456,789 | 16,384 | 1,000,000 | 12.5 | 24 GiB | trained on the whole dataset twice |
#
# <details>
# <summary>Lab notes</summary>
#
# - tried **lr** $10^{-3}$
#
# </details>
counts = [0] * 3  # $n_i$ counts per class, $\sum_i n_i = N$

# Prose directly above display math
# $$
# x = \frac{1}{2}
# $$
x = 1 / 2

# An aligned block:
#
# $$
# \begin{aligned} a &= b \\ c &= d \end{aligned}
# $$
a = b = c = d = 0

# ===ADD===
# Added code.
def added():
    return 1


# ===DEL===
# Removed code.
def removed():
    return 2


# ===HL===
# Emphasised code.
def emphasised():
    return 3


# Line markers.
y = 1  # [!code ++]
z = 2  # [!code --]
w = 3  # [!code hl]
v = 4
'''


# ---------------------------------------------------------------------------
# Fixtures: the two sites, the browser, offline contexts
# ---------------------------------------------------------------------------

def _fail_or_skip(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the browser tests)", pytrace=False)
    pytest.skip(reason)


def find_chromium() -> str | None:
    for candidate in (os.environ.get("ANNOGEN_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
def site(course_site) -> Path:
    return course_site


@pytest.fixture(scope="module")
def browser_only(tmp_path_factory) -> Path:
    """The course built with every formula left to MathJax in the browser."""
    out = tmp_path_factory.mktemp("course") / "site"
    assert build.main(["--out", str(out), "-q", "--strict", "--no-prerender-math"]) == 0
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("demo")
    src = base / "src" / "demo.py"
    src.parent.mkdir()
    src.write_text(textwrap.dedent(DEMO_SOURCE).lstrip("\n"), encoding="utf8")
    out = base / "site"
    assert build.main([str(src), "--out", str(out), "-q"]) == 0
    assert (out / "demo.html").is_file()
    return out


@pytest.fixture(scope="module")
def browser():
    exe = find_chromium()
    if exe is None:
        _fail_or_skip("Chromium not found: apt-get install chromium "
                      "(or set ANNOGEN_CHROMIUM to its path)")
    if sync_playwright is None:
        _fail_or_skip("the playwright package is not installed: pip install playwright")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
    except Exception:
        pw.stop()
        raise
    yield b
    b.close()
    pw.stop()


class Offline:
    """Browser contexts that may load file:// URLs only, and pages that record their
    console errors, page errors and failed requests."""

    def __init__(self, browser):
        self.browser = browser
        self.contexts = []
        self.blocked: list[str] = []

    def _route(self, route):
        url = route.request.url
        if url.startswith("file:"):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def context(self, **kwargs):
        kwargs.setdefault("viewport", {"width": 1280, "height": 900})
        kwargs.setdefault("color_scheme", "light")
        ctx = self.browser.new_context(**kwargs)
        ctx.set_default_timeout(5000)  # file:// is fast; fail fast when something is wrong
        ctx.route("**/*", self._route)
        self.contexts.append(ctx)
        return ctx

    def page(self, ctx=None, **kwargs):
        ctx = ctx or self.context(**kwargs)
        page = ctx.new_page()
        page.problems = []  # type: ignore[attr-defined]
        page.on("console", lambda m: m.type == "error" and page.problems.append(
            f"console error: {m.text} ({m.location.get('url', '')})"))
        page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
        # ERR_ABORTED is a load cut short by leaving the page (a script still loading);
        # a missing file is ERR_FILE_NOT_FOUND.
        page.on("requestfailed", lambda r: "ERR_ABORTED" not in (r.failure or "") and
                page.problems.append(f"request failed: {r.url} ({r.failure})"))
        return page

    def check(self):
        assert not self.blocked, f"pages requested non-local URLs: {sorted(set(self.blocked))}"


@pytest.fixture
def offline(browser):
    o = Offline(browser)
    yield o
    for ctx in o.contexts:
        ctx.close()
    o.check()


def url(folder: Path, rel: str) -> str:
    return (folder / rel).as_uri()


def path_of(file_url: str) -> Path:
    parts = urlsplit(file_url)
    assert parts.scheme == "file", file_url
    return Path(unquote(parts.path))


def html_pages(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.html"))


def wait_for_mathjax(page) -> None:
    """Wait until MathJax (if the page loads it) has typeset the page. Its script is
    asynchronous, so it may not have started when the page has loaded: wait for its
    startup first (until then `MathJax` is only the page's configuration)."""
    page.wait_for_function("""() => !document.getElementById('MathJax-script') ||
                                     !!(window.MathJax && MathJax.startup && MathJax.startup.promise)""")
    page.evaluate("""() => (window.MathJax && MathJax.startup && MathJax.startup.promise)
                            ? MathJax.startup.promise.then(() => true) : false""")


# Counts for the math checks; `red` finds undefined macros (MathJax's noundefined
# extension colours them red) and errors (merror is red on yellow); `dupIds`, ids of the
# paths formulas draw their characters from that are used twice in the page (those of
# the formulas typeset at build time and of those typeset in the browser must differ).
MATH_REPORT = """() => {
  const all = Array.from(document.querySelectorAll('.arithmatex'));
  const containers = document.querySelectorAll('.arithmatex mjx-container');
  const red = [];
  document.querySelectorAll('mjx-container, mjx-container *').forEach(el => {
    const style = el.getAttribute('style') || '';
    if (/red/i.test(style) || getComputedStyle(el).color === 'rgb(255, 0, 0)' ||
        el.getAttribute('mathcolor') === 'red' || el.getAttribute('fill') === 'red') {
      const f = el.closest('.arithmatex');
      red.push(f ? f.textContent.slice(0, 80) : el.tagName);
    }
  });
  const ids = Array.from(document.querySelectorAll('[id^="MJX-"]'), e => e.id);
  return {
    arithmatex: all.length,
    typeset: containers.length,
    untypeset: all.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80)),
    merror: Array.from(document.querySelectorAll('mjx-container [data-mml-node="merror"]'),
                       e => e.getAttribute('data-mjx-error')),
    dupIds: ids.filter((id, i) => ids.indexOf(id) !== i).slice(0, 5),
    red: red,
    inCode: document.querySelectorAll('code .arithmatex:not([data-src]), pre .arithmatex:not([data-src])').length,
    script: !!document.getElementById('MathJax-script'),
    mathjax: typeof window.MathJax !== 'undefined',
  };
}"""


# ---------------------------------------------------------------------------
# 1. Every page loads cleanly
# ---------------------------------------------------------------------------

# In the two-column layout every section's prose is in the left column and its code
# in the right one, side by side (an extra element in the section's grid once pushed
# the prose of every section with a class into the code column).
SECTION_LAYOUT = """() => {
  if (document.documentElement.clientWidth < 900) return ['viewport too narrow to check'];
  const bad = [];
  document.querySelectorAll('.section').forEach((s, i) => {
    const d = s.querySelector(':scope > .docs'), c = s.querySelector(':scope > .code');
    if (!d || !c) { bad.push(`section ${i} (${s.id}): no .docs or no .code`); return; }
    const bd = d.getBoundingClientRect(), bc = c.getBoundingClientRect();
    if (!(bc.left >= bd.right - 1 && Math.abs(bc.top - bd.top) <= 1))
      bad.push(`section ${i} (${s.id}): prose and code are not side by side`);
  });
  return bad;
}"""


@pytest.fixture(scope="module")
def swept(course_site, demo, browser) -> dict:
    """Every page of the course and the demo, each opened once at 1280 px (in light mode,
    then switched to dark), with what the checks of sections 1, 2, 8 and 9 need gathered
    in that one visit: waiting for MathJax to typeset a page dominates a visit, and four
    visits of every page took minutes. Nothing here asserts; the tests below do."""
    o = Offline(browser)
    ctx = o.context(viewport={"width": 1280, "height": 844})
    ctx.add_init_script(_axe_script())
    found = {}
    for folder, rel, name in _all_pages(course_site, demo):
        page = o.page(ctx)
        page.emulate_media(color_scheme="light")
        response = page.goto(url(folder, rel))
        wait_for_mathjax(page)
        r = found[name] = {
            "ok": response is None or response.ok, "title": page.title(),
            "sections": page.evaluate(SECTION_LAYOUT), "math": _math_problems(page, rel),
            "formulas": page.evaluate("() => document.querySelectorAll('.arithmatex').length")}
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
        r["layout"] = page.evaluate(LAYOUT)
        # (axe asks for the style sheets over XMLHttpRequest, which file:// refuses with
        # console errors of its own.)
        r["problems"] = list(page.problems)
        page.evaluate(AXE_REPRESENTATIVES)
        r["light"] = (_theme(page), page.evaluate(AXE_RUN, False) + page.evaluate(PAGE_BASICS))
        # The reader's OS turning dark: the page follows it (no choice is stored).
        page.emulate_media(color_scheme="dark")
        page.wait_for_function("() => document.documentElement.dataset.theme === 'dark'")
        r["dark"] = (_theme(page), page.evaluate(AXE_RUN, True))
        page.close()
    ctx.close()
    return {"pages": found, "blocked": sorted(set(o.blocked))}


def test_every_page_loads_without_errors(swept):
    pages = swept["pages"]
    assert len(pages) >= 10, pages
    problems = []
    for name, r in pages.items():
        if not r["ok"]:
            problems.append(f"{name}: not loaded")
        if not r["title"]:
            problems.append(f"{name}: empty <title>")
        problems += [f"{name}: {p}" for p in r["problems"] + r["sections"]]
    assert not problems, "\n".join(problems)
    assert not swept["blocked"], f"pages requested non-local URLs: {swept['blocked']}"


# ---------------------------------------------------------------------------
# 2. Every formula is typeset; pages without math do not load MathJax
# ---------------------------------------------------------------------------

def _math_problems(page, name: str) -> list[str]:
    r = page.evaluate(MATH_REPORT)
    if not r["arithmatex"]:
        return []
    problems = []
    if r["inCode"]:
        problems.append(f"{name}: {r['inCode']} .arithmatex element(s) inside <code>/<pre> "
                        "(code spans were turned into math)")
    if not (r["script"] and r["mathjax"]):
        problems.append(f"{name}: {r['arithmatex']} .arithmatex element(s) but the page does "
                        f"not load MathJax: {r['untypeset'][:3]}")
        return problems
    if r["typeset"] != r["arithmatex"]:
        problems.append(f"{name}: {r['arithmatex']} formulas, {r['typeset']} typeset; "
                        f"not typeset: {r['untypeset']}")
    if r["merror"]:
        problems.append(f"{name}: MathJax errors {r['merror']}")
    if r["red"]:
        problems.append(f"{name}: undefined macros (red text) in {r['red']}")
    if r["dupIds"]:
        problems.append(f"{name}: formulas share the ids {r['dupIds']}")
    return problems


def test_every_formula_is_typeset(swept):
    pages = swept["pages"]
    with_math = [name for name, r in pages.items() if r["formulas"]]
    assert "demo/demo.html" in with_math and len(with_math) >= 10, with_math
    problems = [p for r in pages.values() for p in r["math"]]
    assert not problems, "\n".join(problems)


def test_math_edge_cases(demo, offline):
    page = offline.page()
    page.goto(url(demo, "demo.html"))
    wait_for_mathjax(page)
    assert _math_problems(page, "demo.html") == []

    # Inline math: `*` and `_` stayed TeX (no <em>), two subscripts, inline container.
    inline = page.locator(".docs p span.arithmatex").first
    assert inline.locator("mjx-container").get_attribute("display") is None
    assert inline.locator('[data-mml-node="msub"]').count() == 2
    assert page.locator('span.arithmatex [data-mml-node="menclose"]').count() == 1  # \cancel
    assert page.locator(".docs em").count() == 0
    # Display math directly under a prose line became its own typeset block.
    frac = page.locator("div.arithmatex", has=page.locator('[data-mml-node="mfrac"]'))
    assert frac.count() == 1
    assert frac.locator("mjx-container").get_attribute("display") == "true"
    assert "Prose directly above display math" in frac.locator("xpath=..").inner_text()
    # `\\` survived Markdown: the aligned block has two rows.
    aligned = page.locator("div.arithmatex", has=page.locator('[data-mml-node="mtable"]'))
    assert aligned.count() == 1
    assert aligned.locator('[data-mml-node="mtr"]').count() == 2
    # No TeX delimiter is left over as text in the prose.
    prose = page.evaluate("""() => Array.from(document.querySelectorAll('.docs'))
        .map(d => { const c = d.cloneNode(true);
                    c.querySelectorAll('mjx-container').forEach(m => m.remove());
                    return c.textContent; }).join(' ')""")
    assert "$" not in prose and "\\frac" not in prose and "\\begin" not in prose

    # The detector itself: a formula with an undefined macro and one with an error
    # must both be reported.
    page.evaluate(r"""() => {
      for (const tex of ['\\(\\nosuchmacro x\\)', '\\(\\frac{1}\\)']) {
        const s = document.createElement('span'); s.className = 'arithmatex';
        s.textContent = tex; document.querySelector('.docs').appendChild(s);
      }
      return MathJax.typesetPromise();
    }""")
    bad = " ".join(_math_problems(page, "demo.html"))
    assert "undefined macros" in bad and "MathJax errors" in bad
    offline.check()


def test_served_page_requests_nothing_that_is_missing(demo, browser, tmp_path, serve):
    """Served over HTTP (`--serve`), a page asks for nothing the site lacks and logs no
    error: no `/favicon.ico` request ending in 404, for one."""
    src = demo.parent / "src" / "demo.py"
    with serve(src, tmp_path / "served", "/demo.html") as base:
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            errors, missing = [], []
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("response", lambda r: r.status >= 400 and missing.append((r.status, r.url)))
            page.goto(base + "/demo.html")
            wait_for_mathjax(page)
            page.wait_for_timeout(500)  # the browser asks for a tab icon after the page loads
            assert page.locator("mjx-container").count() > 0
            assert not errors and not missing, (errors, missing)
        finally:
            ctx.close()


def test_page_without_math_does_not_load_mathjax(site, demo, offline):
    ctx = offline.context()
    for folder, rel in [(site, NO_MATH_PAGE), (demo, "index.html")]:
        assert "arithmatex" not in (folder / rel).read_text(encoding="utf8"), rel
        page = offline.page(ctx)
        page.goto(url(folder, rel))
        assert page.locator("#MathJax-script").count() == 0, rel
        assert page.evaluate("() => typeof window.MathJax") == "undefined", rel
        assert page.locator("mjx-container").count() == 0, rel
        assert not page.problems, page.problems
    # ... while a page with math does load it.
    page = offline.page(ctx)
    page.goto(url(demo, "demo.html"))
    assert page.locator("script#MathJax-script").count() == 1
    assert page.evaluate("() => typeof window.MathJax") == "object"
    offline.check()


@pytest.mark.parametrize("built", ["browser_only", "site"])
def test_mathjax_components_are_preloaded_and_each_fetched_once(built, request, offline):
    """Where the browser typesets the first screen itself, the page names the components
    MathJax's loader will ask for, so the browser fetches them while it parses; a preload
    the loader then asks for differently (another URL, another request mode) would fetch
    the file twice, and one it never asks for is waste. Where the first formulas were
    typeset at build time, nothing is preloaded (it would delay the first paint), and
    MathJax still loads and typesets the rest."""
    folder = request.getfixturevalue(built)
    ctx = offline.context()
    page = offline.page(ctx)
    fetched = []
    page.on("request", lambda r: "/static/mathjax/" in r.url and r.url.endswith(".js")
            and fetched.append(r.url.split("/static/mathjax/", 1)[1]))
    page.goto(url(folder, "var/quant.html"))
    wait_for_mathjax(page)
    preloaded = page.evaluate("""() => Array.from(document.querySelectorAll(
        'link[rel=preload][as=script]'), l => l.href.split('/static/mathjax/')[1])""")
    if built == "site":
        assert preloaded == []
    else:
        assert {"core.js", "input/tex.js", "output/svg.js"} <= set(preloaded), preloaded
    assert sorted(fetched) == sorted(set(fetched)), f"fetched more than once: {fetched}"
    components = {f for f in fetched if not f.startswith("input/tex/extensions/")}
    assert {"core.js", "input/tex.js", "output/svg.js"} <= components
    if preloaded:
        assert components == set(preloaded) | {"startup.js"}, (fetched, preloaded)
    assert page.evaluate("() => document.querySelectorAll('.arithmatex').length") == \
        page.locator(".arithmatex mjx-container").count() > 100
    assert not page.problems, page.problems
    offline.check()


def test_formulas_need_no_web_font(site, demo, offline):
    """MathJax's SVG output draws every character as a path: a page with formulas asks
    for no font file and declares no font face, so nothing holds a formula back once it
    is laid out. Checked on a page typeset at build time and in the browser, and on the
    demo page, whose formulas use extensions loaded on demand (`\\boldsymbol`,
    `\\cancel`)."""
    ctx = offline.context()
    for folder, rel in [(site, "var/quant.html"), (demo, "demo.html")]:
        page = offline.page(ctx)
        fonts = []
        page.on("request", lambda r: r.resource_type == "font" and fonts.append(r.url))
        page.goto(url(folder, rel))
        wait_for_mathjax(page)
        assert _math_problems(page, rel) == []
        assert page.evaluate("() => document.querySelectorAll('mjx-container > svg').length") > 5
        assert fonts == [], fonts
        assert page.evaluate("() => document.fonts.size") == 0
        assert not page.problems, page.problems
    offline.check()


# Run before the page's own scripts: at the first frame after the one in which the
# formulas of the first screen appear, note whether the rest of the page is typeset too
# (then the first screen was never drawn on its own).
FIRST_SCREEN_DRAWN = """
window.__drawnAlone = null;
document.addEventListener('DOMContentLoaded', function () {
  var els = Array.prototype.slice.call(document.querySelectorAll('.arithmatex'));
  function done(e) { return !!e.querySelector('mjx-container > svg'); }
  var io = new IntersectionObserver(function (entries) {
    io.disconnect();
    var first = entries.filter(function (en) { return en.isIntersecting; }).map(function (en) { return en.target; });
    var frames = 0;
    (function poll() {
      if (first.every(done)) frames++;
      if (frames > 1) {
        window.__drawnAlone = !els.every(done);
        return;
      }
      requestAnimationFrame(poll);
    })();
  });
  els.forEach(function (e) { io.observe(e); });
});
"""


def test_first_screen_is_drawn_before_the_rest_is_typeset(browser_only, offline):
    """Typesetting the rest of a long page holds the page's thread for a while, and no
    frame is drawn meanwhile: the formulas of the first screen must be drawn before that
    starts. (The page is built with --no-prerender-math, as where Node.js is not
    installed: otherwise its first screen comes typeset from the build.)"""
    ctx = offline.context()
    ctx.add_init_script(FIRST_SCREEN_DRAWN)
    page = offline.page(ctx)
    page.goto(url(browser_only, "var/quant.html"))
    page.wait_for_function("() => window.__drawnAlone !== null", timeout=20_000)
    assert page.evaluate("() => document.querySelectorAll('.arithmatex').length") > 100
    assert page.evaluate("() => window.__drawnAlone") is True
    assert not page.problems, page.problems
    offline.check()


ON_SCREEN_RAW = """() => Array.from(document.querySelectorAll('.arithmatex')).filter(e => {
  const r = e.getBoundingClientRect();
  return r.bottom > 0 && r.top < innerHeight && r.right > 0 && r.left < innerWidth;
}).map(e => e.querySelector('mjx-container') ? null : e.textContent.slice(0, 60))"""


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
def test_first_screen_is_typeset_without_javascript(site, offline, width, height):
    """The first formulas of each page are typeset when the site is built: on every page,
    every formula on the first screen is typeset before any script runs (here: with
    JavaScript turned off)."""
    ctx = offline.context(viewport={"width": width, "height": height}, java_script_enabled=False)
    page = offline.page(ctx)
    problems, with_math = [], 0
    for rel in html_pages(site):
        page.goto(url(site, rel))
        on_screen = page.evaluate(ON_SCREEN_RAW)
        with_math += bool(on_screen)
        problems += [f"{rel}: not typeset: {tex}" for tex in on_screen if tex is not None]
    assert with_math > 30, with_math  # pages with formulas on their first screen
    assert not problems, "\n".join(problems)


def test_formulas_typeset_at_build_time_are_those_mathjax_draws(site, browser_only, offline):
    """A page whose first formulas were typeset at build time, once the browser's MathJax
    has typeset the rest, is pixel for pixel the page MathJax typesets alone; and MathJax
    leaves the formulas typeset at build time as they are (it does not typeset them
    again)."""
    shots, boxes = [], []
    for folder in (site, browser_only):
        ctx = offline.context(viewport={"width": 1280, "height": 800})
        # The formulas that came typeset in the page (MathJax may already have typeset
        # others by DOMContentLoaded, on either page).
        ctx.add_init_script("""document.addEventListener('DOMContentLoaded', () => {
            window.__early = Array.from(
                document.querySelectorAll('[data-prerendered] > mjx-container')); });
            document.addEventListener('annogen:typeset', () => { window.__typeset = true; });""")
        page = offline.page(ctx)
        page.goto(url(folder, "var/quant.html"))
        page.wait_for_function("() => window.__typeset === true", timeout=20_000)
        # Every section laid out before anything is measured.
        page.add_style_tag(
            content=".section, .prose-section { content-visibility: visible !important; }")
        page.evaluate("""() => new Promise(done =>
            requestAnimationFrame(() => requestAnimationFrame(done)))""")
        early = page.evaluate("() => [__early.length, __early.every(c => c.isConnected)]")
        assert early == ([FIRST, True] if folder == site else [0, True]), early
        boxes.append(page.evaluate("""() => Array.from(document.querySelectorAll(
            '.arithmatex mjx-container'), c => { const r = c.getBoundingClientRect();
            return [r.x, r.y + scrollY, r.width, r.height]; })"""))
        shots.append(page.screenshot(full_page=True))
        assert not page.problems, page.problems
    assert len(boxes[0]) == len(boxes[1]) > 100
    worst = max(abs(a - b) for p, q in zip(*boxes) for a, b in zip(p, q))
    assert worst < 0.01, f"a formula moved by {worst:.3f} px"
    import io
    from PIL import Image, ImageChops
    first, second = (Image.open(io.BytesIO(shot)).convert("RGB") for shot in shots)
    assert first.size == second.size, (first.size, second.size)
    differ = ImageChops.difference(first, second).getbbox()
    assert differ is None, f"the two pages differ in the pixels of the box {differ}"
    offline.check()


# ---------------------------------------------------------------------------
# 3. Highlighted lines
# ---------------------------------------------------------------------------

LINE_STYLES = """() => {
  const bg = sel => getComputedStyle(document.querySelector(sel)).backgroundColor;
  return {plain: bg('.line:not(.add):not(.del):not(.hl)'), add: bg('.line.add'),
          del: bg('.line.del'), hl: bg('.line.hl'), code: bg('.section .code')};
}"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_highlighted_lines(demo, offline, theme):
    page = offline.page(color_scheme=theme)
    page.goto(url(demo, "demo.html"))
    assert page.evaluate("() => document.documentElement.dataset.theme") == theme

    bg = page.evaluate(LINE_STYLES)
    assert bg["plain"] == "rgba(0, 0, 0, 0)", bg
    marked = [bg["add"], bg["del"], bg["hl"]]
    assert len(set(marked)) == 3, bg
    for colour in marked:
        assert colour not in (bg["plain"], bg["code"]), bg
        assert not colour.endswith(", 0)"), bg  # not transparent

    # Block directives mark every line of their code, line markers one line each.
    counts = {k: page.locator(f".line.{k}").count() for k in ("add", "del", "hl")}
    assert counts == {"add": 3, "del": 3, "hl": 3}, counts
    for kind, mark in (("add", "+"), ("del", "\u2212"), ("hl", "\u203a")):
        lines = page.locator(f".line.{kind}")
        assert {lines.nth(i).get_attribute("data-mark") for i in range(lines.count())} == {mark}
    assert page.locator(".line:not(.add):not(.del):not(.hl)[data-mark]").count() == 0
    # The gutter shows the mark (from CSS, not from the text).
    before = page.evaluate("""() => getComputedStyle(document.querySelector('.line.add'),
                                                     '::before').content""")
    assert "+" in before
    assert page.locator(".line.add", has_text="y = 1").count() == 1
    assert page.locator(".line.del", has_text="z = 2").count() == 1
    assert page.locator(".line.hl", has_text="w = 3").count() == 1

    text = page.evaluate("() => document.body.innerText")
    for gone in ("[!code", "===ADD===", "===DEL===", "===HL===", "ADD", "DEL"):
        assert gone not in text, gone
    assert page.locator("h1, h2, h3").filter(has_text="HL").count() == 0
    assert not page.problems, page.problems
    offline.check()


# ---------------------------------------------------------------------------
# 4. Theme toggle
# ---------------------------------------------------------------------------

def _theme(page) -> str:
    return page.evaluate("() => document.documentElement.getAttribute('data-theme')")


def _body_bg(page) -> str:
    return page.evaluate("() => getComputedStyle(document.body).backgroundColor")


def _choose_and_reload(page, want: str, attempts: int = 3) -> None:
    """Click the toggle until the theme is `want`, check that the choice was stored,
    reload and check that it survived. Under heavy CPU load Chromium now and then drops
    a file:// localStorage write on its way to the browser process (seen in about 3 %
    of tries with the machine saturated, never otherwise; a new context or a persistent
    one does the same), so a lost write is retried with a fresh click. A choice that is
    never stored fails every attempt."""
    for _ in range(attempts):
        if _theme(page) != want:
            page.click("#theme-toggle")
        assert _theme(page) == want
        assert page.get_attribute("#theme-toggle", "aria-pressed") == str(want == "dark").lower()
        assert page.evaluate("() => localStorage.getItem('annogen-theme')") == want
        page.reload()
        if _theme(page) == want:
            return
    pytest.fail(f"the theme choice {want!r} did not survive a reload ({attempts} tries)")


def test_theme_toggle_persists(site, offline):
    ctx = offline.context(color_scheme="light")
    page = offline.page(ctx)
    page.goto(url(site, "index.html"))
    assert _theme(page) == "light"
    assert page.get_attribute("#theme-toggle", "aria-pressed") == "false"
    light_bg = _body_bg(page)

    page.click("#theme-toggle")
    assert _theme(page) == "dark"
    dark_bg = _body_bg(page)
    assert dark_bg != light_bg

    _choose_and_reload(page, "dark")
    assert _body_bg(page) == dark_bg
    assert page.get_attribute("#theme-toggle", "aria-pressed") == "true"
    # The choice holds on another page of the site too (same context).
    page.goto(url(site, "site-builder/parse.html"))
    assert _theme(page) == "dark"

    page.click("#theme-toggle")
    assert _theme(page) == "light"
    _choose_and_reload(page, "light")
    assert _body_bg(page) == light_bg
    assert not page.problems, page.problems
    offline.check()


def test_theme_follows_os_without_stored_choice(site, offline):
    themes = {}
    for scheme in ("dark", "light"):
        page = offline.page(color_scheme=scheme)  # a fresh context: nothing stored
        page.goto(url(site, "index.html"))
        assert page.evaluate("() => localStorage.getItem('annogen-theme')") is None
        assert _theme(page) == scheme
        themes[scheme] = _body_bg(page)
    assert themes["dark"] != themes["light"], themes
    offline.check()


# ---------------------------------------------------------------------------
# 5. Responsive layout
# ---------------------------------------------------------------------------

BOXES = """() => {
  const sections = Array.from(document.querySelectorAll('.section:not(.page-head)'))
    .filter(s => s.querySelector('.code pre') && s.querySelector('.docs p'));
  const s = sections[0];
  const r = el => { const b = el.getBoundingClientRect();
                    return {top: b.top, bottom: b.bottom, left: b.left, right: b.right, width: b.width}; };
  return {docs: r(s.querySelector('.docs')), code: r(s.querySelector('.code')),
          width: document.documentElement.clientWidth,
          scrollWidth: document.documentElement.scrollWidth};
}"""


def test_columns_stack_on_narrow_screens(site, offline):
    page = offline.page(viewport={"width": 390, "height": 844})
    page.goto(url(site, "site-builder/parse.html"))
    b = page.evaluate(BOXES)
    assert b["code"]["top"] >= b["docs"]["bottom"] - 1, b
    assert b["docs"]["width"] >= 0.95 * b["width"], b
    assert b["code"]["width"] >= 0.95 * b["width"], b
    assert abs(b["code"]["left"] - b["docs"]["left"]) <= 1, b
    assert b["scrollWidth"] <= b["width"] + 1, f"page scrolls sideways at 390 px: {b}"

    page.set_viewport_size({"width": 1280, "height": 900})
    b = page.evaluate(BOXES)
    assert b["code"]["left"] > b["docs"]["left"], b
    assert b["code"]["left"] >= b["docs"]["right"] - 1, b
    assert abs(b["code"]["top"] - b["docs"]["top"]) <= 1, b
    assert b["docs"]["width"] < 0.6 * b["width"] and b["code"]["width"] < 0.7 * b["width"], b
    offline.check()


def test_print_stylesheet_hides_chrome_and_stacks_columns(site, offline):
    page = offline.page(viewport={"width": 1280, "height": 900})
    page.goto(url(site, "site-builder/parse.html"))
    page.emulate_media(media="print")
    for selector in [".topbar", ".pager", ".copy-code"]:
        assert page.locator(selector).first.evaluate("e => getComputedStyle(e).display") == "none"
    b = page.evaluate(BOXES)
    assert b["code"]["top"] >= b["docs"]["bottom"] - 1, b  # prose above its code
    page.emulate_media(media="screen")
    assert page.locator(".topbar").evaluate("e => getComputedStyle(e).display") != "none"
    offline.check()


# ---------------------------------------------------------------------------
# 6. Search
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("start", ["index.html", "site-builder/render.html"])
def test_search_finds_prose_and_links_resolve(site, offline, start):
    target = site / "site-builder" / "parse.html"
    page = offline.page()
    page.goto(url(site, start))
    results = page.locator("#search-results")
    assert results.is_hidden()

    page.fill("#search-input", "tokenize")
    expect(results).to_be_visible()
    link = results.locator('a[href*="parse.html"]').first
    expect(link).to_have_count(1)
    assert "tokenize" in link.inner_text().lower()

    link.click()
    page.wait_for_url("**/site-builder/parse.html*")
    assert path_of(page.url) == target
    assert page.title().startswith(page.locator("h1").first.inner_text().strip()[:10])
    fragment = urlsplit(page.url).fragment
    assert fragment and page.locator(f'[id="{fragment}"]').count() == 1, page.url

    # A word that is nowhere gives the "no results" line, not a stale list.
    # (The index may still be loading on this new page: wait for the list to change.)
    page.fill("#search-input", "zzqxnotaword")
    expect(results.locator("li.none")).to_have_count(1)
    expect(results.locator("a")).to_have_count(0)
    assert not page.problems, page.problems
    offline.check()


# ---------------------------------------------------------------------------
# 7. Prev / next and breadcrumbs
# ---------------------------------------------------------------------------

def test_next_links_visit_every_page_once(site, offline):
    chapter_pages = {site / rel for rel in html_pages(site) if rel != "index.html"}
    page = offline.page()
    page.goto(url(site, "index.html"))
    visited: list[Path] = []
    previous = path_of(page.url)
    while page.locator("a[rel=next]").count():
        assert page.locator("a[rel=next]").count() == 1
        # Every breadcrumb and the brand link point at an existing file.
        for href in page.eval_on_selector_all(".crumbs a, a.brand", "els => els.map(a => a.href)"):
            assert path_of(href).is_file(), f"{page.url}: broken breadcrumb {href}"
        page.click("a[rel=next]")
        page.wait_for_load_state()
        here = path_of(page.url)
        assert here.is_file(), page.url
        assert here not in visited, f"next chain visits {here} twice"
        visited.append(here)
        # `prev` leads back where we came from (the first page has none: index precedes it).
        prev = page.eval_on_selector_all("a[rel=prev]", "els => els.map(a => a.href)")
        if len(visited) > 1:
            assert [path_of(h) for h in prev] == [previous], page.url
        assert page.locator(".crumbs a").first.get_attribute("href").endswith("index.html")
        previous = here
    assert set(visited) == chapter_pages, (
        f"missing {sorted(map(str, chapter_pages - set(visited)))}")
    assert len(visited) == len(chapter_pages)
    assert not page.problems, page.problems
    offline.check()


# ---------------------------------------------------------------------------
# 8. Layout on a phone and on a wide screen
# ---------------------------------------------------------------------------

# Nothing may make the page wider than the window; what is wider than its column
# (a table, a display formula, a long inline formula, code) scrolls in its own box, is
# reachable from the keyboard when it does, and a centred formula keeps its left end.
# Sections are painted inside their own box (content-visibility), so something wider
# than the window would be cut off rather than widen the page: every element outside a
# scrolling box is checked against the window, not only the page's width.
LAYOUT = """() => {
  const c = document.documentElement.clientWidth, problems = [];
  const wide = Array.from(document.querySelectorAll('main *:not(pre *):not(mjx-container *)')).filter(el => {
    if (el.getBoundingClientRect().right <= c + 1) return false;
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement)
      if (getComputedStyle(p).overflowX !== 'visible') return false;
    return true;
  }).slice(0, 3).map(el => el.tagName + '.' + el.className + ': ' + (el.textContent || '').slice(0, 40));
  if (document.documentElement.scrollWidth > c + 1 || wide.length)
    problems.push(`content wider than the ${c} px window (the page is ${document.documentElement.scrollWidth} px wide): ${wide}`);
  document.querySelectorAll('.arithmatex').forEach(box => {
    const m = box.querySelector('mjx-container');
    if (!m) return;
    const a = box.getBoundingClientRect(), b = m.getBoundingClientRect();
    if (b.left < a.left - 1) problems.push('formula cut off on the left: ' + box.textContent.slice(0, 40));
  });
  document.querySelectorAll('pre, .docs table, .prose table, div.arithmatex, .arithmatex.wide').forEach(el => {
    if (el.scrollWidth > el.clientWidth) {
      if (!['auto', 'scroll'].includes(getComputedStyle(el).overflowX))
        problems.push('wide box does not scroll: ' + el.tagName + ' ' + el.textContent.slice(0, 40));
      if (el.tabIndex < 0) problems.push('scrolling box not focusable: ' + el.tagName);
    }
  });
  return problems;
}"""


def _all_pages(site, demo):
    """Every page of the course and of the demo site: (folder, page, a name for messages)."""
    return [(folder, rel, f"{which}/{rel}") for folder, which in ((site, "course"), (demo, "demo"))
            for rel in html_pages(folder)]


def test_no_page_scrolls_sideways_at_1280_px_and_wide_content_scrolls_in_its_box(swept):
    problems = [f"{name} at 1280 px: {p}" for name, r in swept["pages"].items()
                for p in r["layout"]]
    assert not problems, "\n".join(problems)


def test_no_page_scrolls_sideways_on_a_phone_and_wide_content_scrolls_in_its_box(site, demo,
                                                                                  offline):
    """Each page opened afresh at 390 px, as a phone opens it (not resized from 1280)."""
    ctx = offline.context(viewport={"width": 390, "height": 844})
    page = offline.page(ctx)
    problems = []
    for folder, rel, name in _all_pages(site, demo):
        page.goto(url(folder, rel))
        wait_for_mathjax(page)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
        problems += [f"{name} at 390 px: {p}" for p in page.evaluate(LAYOUT)]
    assert not problems, "\n".join(problems)
    # The demo's wide things are really there, each scrolling inside its own box.
    page.goto(url(demo, "demo.html"))
    wait_for_mathjax(page)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
    widths = page.evaluate("""() => ({
      table: document.querySelector('.docs table').scrollWidth > document.querySelector('.docs table').clientWidth,
      display: Array.from(document.querySelectorAll('div.arithmatex')).some(d => d.scrollWidth > d.clientWidth + 1),
      wideInline: document.querySelectorAll('span.arithmatex.wide').length})""")
    assert widths == {"table": True, "display": True, "wideInline": 1}, widths
    offline.check()


# ---------------------------------------------------------------------------
# 9. Accessibility: axe-core on every page, light and dark
# ---------------------------------------------------------------------------

# axe's colour-contrast rule dominates its run time, and most of that is spent on the
# code column, where thousands of token spans repeat a few dozen (line mark, token
# class) pairs. On every page we run every rule on everything but the code column,
# and on one element of each distinct pair in it, in one run (axe checks what is
# included inside what is excluded): every combination that occurs on the page is
# checked, duplicates are not. In dark mode only the colour rule runs; the others do
# not depend on the theme.
AXE_REPRESENTATIVES = """() => {
  const seen = new Set();
  document.querySelectorAll('.code pre .line, .code pre .line > span').forEach(el => {
    const line = el.classList.contains('line') ? el : el.parentElement;
    const own = el === line;
    if (own && !Array.from(el.childNodes).some(c => c.nodeType === 3 && c.textContent.trim())) return;
    const key = line.className + '|' + (own ? '' : el.className);
    if (seen.has(key)) return;
    seen.add(key);
    el.setAttribute('data-axe-sample', '');
  });
  return seen.size;
}"""
AXE_RUN = """async (dark) => {
  const include = [[':root']];
  if (document.querySelector('[data-axe-sample]')) include.push(['[data-axe-sample]']);
  const options = {resultTypes: ['violations']};
  if (dark) options.runOnly = {type: 'rule', values: ['color-contrast']};
  const r = await axe.run({include: include, exclude: [['.code pre']]}, options);
  return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical').map(v =>
    `${v.id} (${v.impact}) on ${v.nodes.length} element(s), e.g. ` +
    `${JSON.stringify(v.nodes[0].target)}: ${(v.nodes[0].failureSummary || '').replace(/\\s+/g, ' ').slice(0, 200)}`);
}"""
# What axe cannot judge: every image has a real description, and the landmarks and
# language are there.
PAGE_BASICS = """() => {
  const p = [];
  document.querySelectorAll('img').forEach(i => {
    if (!(i.getAttribute('alt') || '').trim()) p.push('image without alt text: ' + i.getAttribute('src'));
  });
  if (document.documentElement.lang !== 'en') p.push('no document language');
  for (const sel of ['header', 'main#content', 'footer', 'nav']) if (!document.querySelector(sel)) p.push('no ' + sel);
  // First of what is shown (the paths of formulas typeset at build time, hidden, may
  // come before it).
  const skip = document.querySelector('body > a.skip-link');
  const first = Array.from(document.body.children).find(e => getComputedStyle(e).display !== 'none');
  if (!skip || skip !== first || skip.getAttribute('href') !== '#content')
    p.push('no skip link first in the page');
  return p;
}"""


def _axe_script() -> str:
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:
        _fail_or_skip("axe-playwright-python is not installed: pip install -e '.[test]'")
    return Axe().axe_script


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_axe_finds_no_serious_violation_on_any_page(swept, theme):
    pages = swept["pages"]
    assert len(pages) >= 10
    problems = [f"{name} ({theme}): {p}" for name, r in pages.items() for p in r[theme][1]]
    problems += [f"{name}: in {theme} mode the page is {r[theme][0]}"
                 for name, r in pages.items() if r[theme][0] != theme]
    assert not problems, "\n".join(problems)


def test_axe_check_catches_a_violation(demo, offline):
    """The check above can fail: a low-contrast line and an image without alt text."""
    ctx = offline.context()
    ctx.add_init_script(_axe_script())
    page = offline.page(ctx)
    page.goto(url(demo, "demo.html"))
    wait_for_mathjax(page)
    page.evaluate("""() => {
      document.querySelector('.docs p').style.color = '#ddd';
      document.querySelector('.code pre .line span').style.color = '#eee';
      document.querySelector('.docs').appendChild(document.createElement('img'));
    }""")
    page.evaluate(AXE_REPRESENTATIVES)
    found = " ".join(page.evaluate(AXE_RUN, False) + page.evaluate(PAGE_BASICS))
    assert "color-contrast" in found and "image without alt text" in found
    assert "color-contrast (serious) on 2 element(s)" in found  # prose, and the code sample


def test_keyboard_skip_link_and_visible_focus(site, offline):
    page = offline.page()
    page.goto(url(site, "vqvae/model.html"))
    page.keyboard.press("Tab")
    focused = page.evaluate("""() => { const e = document.activeElement, r = e.getBoundingClientRect(),
        s = getComputedStyle(e);
        return {cls: e.className, top: r.top, h: r.height, outline: s.outlineStyle, width: s.outlineWidth}; }""")
    assert focused["cls"] == "skip-link" and focused["top"] >= 0 and focused["h"] > 0, focused
    assert focused["outline"] != "none" and focused["width"] != "0px", focused
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "content"
    # The next Tab lands inside the content, on a visibly focused element.
    page.keyboard.press("Tab")
    ring = page.evaluate("""() => { const e = document.activeElement;
        return {inMain: !!e.closest('main'), outline: getComputedStyle(e).outlineStyle}; }""")
    assert ring == {"inMain": True, "outline": "solid"}, ring
    offline.check()


# ---------------------------------------------------------------------------
# 10. Progress through the course
# ---------------------------------------------------------------------------

def test_marking_a_chapter_done_shows_on_the_index_and_survives_a_reload(site, offline):
    ctx = offline.context()
    page = offline.page(ctx)
    page.goto(url(site, "vqvae/model.html"))
    toggle = page.locator(".done-toggle")
    assert toggle.get_attribute("data-chapter") == "vqvae"
    assert toggle.get_attribute("aria-pressed") == "false"
    total = int(page.locator(".course-progress").get_attribute("data-total"))
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "true"
    assert page.locator(".course-progress").inner_text() == f"1 of {total} chapters done"
    page.goto(url(site, "index.html"))
    card = page.locator('li.chapter[data-chapter="vqvae"]')
    expect(card).to_have_class(re.compile(r"\bdone\b"))
    assert card.locator(".done-badge").is_visible()
    assert page.locator('li.chapter.done').count() == 1
    assert page.locator("p.course-progress").inner_text() == f"1 of {total} chapters done"
    page.reload()
    assert page.locator('li.chapter.done').count() == 1
    # Another page of the same chapter knows; undoing clears it everywhere.
    page.goto(url(site, "vqvae/index.html"))
    assert page.locator(".done-toggle").get_attribute("aria-pressed") == "true"
    page.locator(".done-toggle").click()
    page.goto(url(site, "index.html"))
    assert page.locator('li.chapter.done').count() == 0
    assert page.locator("p.course-progress").inner_text() == f"0 of {total} chapters done"
    offline.check()


# ---------------------------------------------------------------------------
# 11. Math in code comments, dunder names, search snippets
# ---------------------------------------------------------------------------

def test_comment_math_is_typeset_and_copied_as_written(demo, offline):
    page = offline.page()
    page.goto(url(demo, "demo.html"))
    wait_for_mathjax(page)
    comment = page.locator(".code .line", has_text="counts").locator(".c1")
    assert comment.locator("mjx-container").count() == 2
    assert page.locator(".code .line", has_text="counts").locator(".n mjx-container").count() == 0
    page.evaluate("""() => { window.__copied = null;
      document.execCommand = () => { window.__copied = document.querySelector('textarea').value; return true; };
      if (navigator.clipboard) navigator.clipboard.writeText = t => { window.__copied = t; return Promise.resolve(); };
    }""")
    section = page.locator(".section", has=page.locator(".line", has_text="counts"))
    section.locator(".copy-code").click(force=True)
    copied = page.evaluate("() => window.__copied")
    assert "counts = [0] * 3  # $n_i$ counts per class, $\\sum_i n_i = N$" in copied, copied
    # Dunder names stay names; the formula over two comment lines is typeset.
    wide = page.locator(".docs", has_text="Wide things")
    assert "__main__.py" in wide.inner_text() and wide.locator("strong").all_text_contents() == ["lr"]
    assert wide.locator('p span.arithmatex [data-mml-node="mfrac"]').count() == 1
    assert "$" not in wide.locator("p").first.inner_text()
    offline.check()


def test_search_snippets_show_no_tex(demo, offline):
    page = offline.page()
    page.goto(url(demo, "demo.html"))
    page.fill("#search-input", "update")
    results = page.locator("#search-results")
    expect(results.locator("a").first).to_be_visible()
    text = results.inner_text()
    assert "update" in text.lower()
    assert "$" not in text and "\\" not in text, text
    offline.check()
