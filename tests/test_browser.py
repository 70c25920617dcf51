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


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("course") / "site"
    assert build.main(["--out", str(out), "-q"]) == 0
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
        # ERR_ABORTED is a load cut short by leaving the page (fonts still loading);
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
    """Wait until MathJax (if the page loads it) has typeset the page."""
    page.evaluate("""() => (window.MathJax && MathJax.startup && MathJax.startup.promise)
                            ? MathJax.startup.promise.then(() => true) : false""")


# Counts for the math checks; `red` finds undefined macros (MathJax's noundefined
# extension colours them red) and errors (merror is red on yellow).
MATH_REPORT = """() => {
  const all = Array.from(document.querySelectorAll('.arithmatex'));
  const containers = document.querySelectorAll('.arithmatex mjx-container');
  const red = [];
  document.querySelectorAll('mjx-container, mjx-container *').forEach(el => {
    const style = el.getAttribute('style') || '';
    if (/red/i.test(style) || getComputedStyle(el).color === 'rgb(255, 0, 0)' ||
        el.getAttribute('mathcolor') === 'red') {
      const f = el.closest('.arithmatex');
      red.push(f ? f.textContent.slice(0, 80) : el.tagName);
    }
  });
  return {
    arithmatex: all.length,
    typeset: containers.length,
    untypeset: all.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80)),
    merror: Array.from(document.querySelectorAll('mjx-merror')).map(e => e.getAttribute('data-mjx-error')),
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


def test_every_page_loads_without_errors(site, demo, offline):
    pages = [(site, rel) for rel in html_pages(site)] + [(demo, rel) for rel in html_pages(demo)]
    assert len(pages) >= 10, pages
    ctx = offline.context()
    problems = []
    for folder, rel in pages:
        page = offline.page(ctx)
        response = page.goto(url(folder, rel))
        assert response is None or response.ok, rel
        wait_for_mathjax(page)
        assert page.title(), f"{rel}: empty <title>"
        problems += [f"{folder.name}/{rel}: {p}" for p in page.problems]
        problems += [f"{folder.name}/{rel}: {p}" for p in page.evaluate(SECTION_LAYOUT)]
        page.close()
    assert not problems, "\n".join(problems)
    offline.check()


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
    return problems


def test_every_formula_is_typeset(site, demo, offline):
    ctx = offline.context()
    problems = []
    checked = 0
    for folder, rel in [(site, r) for r in html_pages(site)] + [(demo, "demo.html")]:
        if "arithmatex" not in (folder / rel).read_text(encoding="utf8"):
            continue
        page = offline.page(ctx)
        page.goto(url(folder, rel))
        if page.evaluate("() => !!window.MathJax && !!MathJax.startup"):
            wait_for_mathjax(page)
        problems += _math_problems(page, rel)
        problems += [f"{rel}: {p}" for p in page.problems]
        checked += 1
        page.close()
    assert checked >= 2  # the course index and the demo page at least
    assert not problems, "\n".join(problems)
    offline.check()


def test_math_edge_cases(demo, offline):
    page = offline.page()
    page.goto(url(demo, "demo.html"))
    wait_for_mathjax(page)
    assert _math_problems(page, "demo.html") == []

    # Inline math: `*` and `_` stayed TeX (no <em>), two subscripts, inline container.
    inline = page.locator(".docs p span.arithmatex").first
    assert inline.locator("mjx-container").get_attribute("display") is None
    assert inline.locator("mjx-msub").count() == 2
    assert page.locator("span.arithmatex mjx-menclose").count() == 1  # \cancel
    assert page.locator(".docs em").count() == 0
    # Display math directly under a prose line became its own typeset block.
    frac = page.locator("div.arithmatex", has=page.locator("mjx-mfrac"))
    assert frac.count() == 1
    assert frac.locator("mjx-container").get_attribute("display") == "true"
    assert "Prose directly above display math" in frac.locator("xpath=..").inner_text()
    # `\\` survived Markdown: the aligned block has two rows.
    aligned = page.locator("div.arithmatex", has=page.locator("mjx-mtable"))
    assert aligned.count() == 1
    assert aligned.locator("mjx-mtr").count() == 2
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
