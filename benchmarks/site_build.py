#!/usr/bin/env python
r"""
# Benchmark: our site builder against stock Pycco

    python benchmarks/site_build.py                  # 5 copies (~60 files), 5 runs
    python benchmarks/site_build.py --copies 20 --runs 3 --json /tmp/site_build.json

Both tools render the *same* corpus: the builder's own annotated sources
(`site_builder/*.py`, `site_builder/*.js` and `build.py`) copied `--copies` times into a
temporary folder, one flat folder `copy_k/` per copy. (Flat, so that the cross-reference
`[[build.py]]` in `__init__.py` resolves to the copy beside it; with `copy_k/site_builder/`
plus `copy_k/build.py` it would match every copy and the build would stop as ambiguous.)

Everything is timed in-process, after one untimed warm-up build of each tool (imports,
lexers, template caches), with the two tools alternating run by run, each run into a
fresh output folder:

- **pycco**: `pycco.main.process(sources, outdir=..., preserve_paths=True, index=True)`,
  with its one-line-per-file stdout suppressed. Pycco 0.6 recurses once per file, so a
  large corpus hits `RecursionError`; we then raise `sys.setrecursionlimit` and say so.
- **ours, full**: `build.main([*files, "--out", out, "-q"])` into a fresh folder.
- **ours, no-op**: the same call again on the same folder, nothing changed.
- **ours, one changed file**: a line appended to one source, rebuilt, then restored.
  Two kinds of line: a comment line (what the brief asks for; it adds a section, hence
  an anchor) and a code-only line (`pass`, which adds no anchor). We also count how many
  pages were re-rendered, from the page keys in `.annogen-build.json`.

"Bytes of a page with its assets" is one rendered page (default: `parse.py`) plus every
local stylesheet, script and image it references. If the page loads the local MathJax,
the whole `static/mathjax` folder is counted, an upper bound (a browser fetches only
the components and extensions it uses).

**Typesetting in the browser** (skipped with `--no-browser`, or when Chromium is
missing): the course is built (twice, see below), and the five pages with the most
formulas are opened in headless Chromium (`/usr/bin/chromium`, offline), `--mj-runs`
times each in a fresh context (a new tab: a cold start, slower than following a link
within the site), at 1280 x 800. A probe records, from navigation start, when every
formula on the first screen (those an IntersectionObserver sees in the first frame) is
typeset and drawn (where the output uses web fonts, with its fonts loaded), and when
every formula of the page is; after that the page is scrolled to the end and we check
that no formula is left untypeset. Where the first screen's time goes
is reported too: when MathJax is ready (its scripts have run and its startup is done; no
formula can be typeset sooner) and when the first screen's formulas are in the page
(before they are drawn). Each page is also reached by following a link from the next of
the five pages in the same tab (as a reader going through the course, once the browser
has loaded MathJax in that tab); there only the times are taken. Three versions of
each page are measured, in turn, on the same machine in the same minutes: as built (the
first formulas typeset at build time, see `site_builder/prerender.py`), as built with
`--no-prerender-math` (every formula typeset in the browser, the first screen first),
and as configured before (the combined `tex-chtml.js`, the whole page typeset in one
pass), the last two written beside the page in the temporary site. Where the first
screen's formulas come typeset in the page, the probe's first look at them comes when
its IntersectionObserver first reports, after the first frame (after the page's
DOMContentLoaded): its "first screen" time is then an upper bound, and the first paint
(also reported) a lower one.

Results go to a Markdown table on stdout and to JSON (`--json`, default
`benchmarks/results/site_build.json`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_JSON = REPO / "benchmarks" / "results" / "site_build.json"
STATE_FILE = ".annogen-build.json"

TARGET_RATIO = 1.0  # our full build / pycco full build, medians
TARGET_NOOP = 0.10  # our no-op rebuild / our full build, medians


def default_sources() -> list[Path]:
    return sorted(p for p in (REPO / "site_builder").iterdir()
                  if p.suffix in (".py", ".js")) + [REPO / "build.py"]


def make_corpus(root: Path, copies: int) -> list[str]:
    """Copy the sources into root/copy_k/; returns the files, relative to root, sorted."""
    files = []
    for k in range(copies):
        folder = root / f"copy_{k}"
        folder.mkdir(parents=True)
        for src in default_sources():
            shutil.copyfile(src, folder / src.name)
            files.append(f"copy_{k}/{src.name}")
    return sorted(files)


# === The timed calls ===

class Pycco:
    def __init__(self, root: Path, files: list[str]):
        import pycco.main
        self.process = pycco.main.process
        self.root = root
        self.files = files  # relative: pycco puts an absolute path *under* outdir
        self.notes: list[str] = []

    def build(self, out: Path) -> float:
        while True:
            cwd = os.getcwd()
            os.chdir(self.root)
            try:
                gc.collect()
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    self.process(list(self.files), outdir=str(out), preserve_paths=True,
                                 index=True)
                return time.perf_counter() - start
            except RecursionError:
                old = sys.getrecursionlimit()
                new = max(2 * old, 4 * len(self.files) + 2000)
                sys.setrecursionlimit(new)
                self.notes.append(f"pycco hit RecursionError with {len(self.files)} files "
                                  f"(one frame per file); raised the recursion limit "
                                  f"{old} -> {new} and re-ran")
                shutil.rmtree(out, ignore_errors=True)
            finally:
                os.chdir(cwd)


class Ours:
    def __init__(self, root: Path, files: list[str]):
        import build  # build.py at the repository root
        self.main = build.main
        self.files = [str(root / f) for f in files]

    def build(self, out: Path) -> float:
        gc.collect()
        start = time.perf_counter()
        rc = self.main([*self.files, "--out", str(out), "-q"])
        took = time.perf_counter() - start
        if rc != 0:
            raise SystemExit(f"our build failed (exit status {rc}) into {out}")
        return took


def page_keys(out: Path) -> dict:
    return json.loads((out / STATE_FILE).read_text())["pages"]


def changed_keys(before: dict, after: dict) -> int:
    return sum(1 for k, v in after.items() if before.get(k) != v)


@contextlib.contextmanager
def appended(path: Path, line: str):
    original = path.read_bytes()
    try:
        text = original.decode("utf8")
        if not text.endswith("\n"):
            text += "\n"
        path.write_bytes((text + line + "\n").encode("utf8"))
        yield
    finally:
        path.write_bytes(original)


# === Bytes of a page with its assets ===

ASSET_REF = re.compile(
    r"<(?:link\b[^>]*\brel=[\"']?stylesheet[^>]*\bhref|script\b[^>]*\bsrc|img\b[^>]*\bsrc)"
    r"=[\"']([^\"']+)[\"']", re.I)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def page_bytes(out: Path, page: str) -> dict:
    """The page's HTML plus every local asset it references (MathJax: whole folder)."""
    html_path = out / page
    html = html_path.read_text(encoding="utf8")
    parts = {page: html_path.stat().st_size}
    remote, notes = [], []
    for ref in dict.fromkeys(ASSET_REF.findall(html)):
        if re.match(r"^(?:[a-z][a-z0-9+.-]*:|//)", ref, re.I):
            remote.append(ref)
            continue
        target = (html_path.parent / ref.split("#")[0].split("?")[0]).resolve()
        if target.name in ("tex-chtml.js", "startup.js") and target.parent.name == "mathjax":
            rel = os.path.relpath(target.parent, out).replace(os.sep, "/") + "/"
            parts[rel] = folder_bytes(target.parent)
            notes.append(f"{rel} counted whole (upper bound)")
        elif target.is_file():
            parts[os.path.relpath(target, out).replace(os.sep, "/")] = target.stat().st_size
        else:
            notes.append(f"missing asset {ref}")
    return {"page": page, "total": sum(parts.values()), "parts": parts, "remote": remote,
            "notes": notes}


def mathjax_upper_bound() -> int | None:
    """What our build copies for a site with math (the same files and ignore pattern as
    `site_builder/site.py:_write_assets`): what a math page could add."""
    try:
        from site_builder.site import MATHJAX_FILES, mathjax_dir
        src = mathjax_dir()
    except Exception:  # noqa: BLE001 - informational only
        return None
    total = 0
    for name in MATHJAX_FILES:
        p = src / name
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*")
                         if f.is_file() and f.name != "all-packages.js")
        elif p.is_file():
            total += p.stat().st_size
    return total


# === The run ===

def stats(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "runs_s": times}


def run(copies: int, runs: int, page_name: str, log) -> dict:
    with tempfile.TemporaryDirectory(prefix="annogen-bench-") as tmp:
        tmp = Path(tmp)
        src_root = tmp / "src"
        files = make_corpus(src_root, copies)
        stem = re.sub(r"\.[^.]*$", "", page_name)
        page_src = src_root / "copy_0" / page_name
        page_out = f"copy_0/{stem}.html"
        if not page_src.is_file():
            raise SystemExit(f"--page {page_name}: not in the corpus")
        pycco, ours = Pycco(src_root, files), Ours(src_root, files)
        notes = pycco.notes

        log(f"corpus: {len(files)} files in {copies} copies; warm-up ...")
        pycco.build(tmp / "warm-pycco")
        ours.build(tmp / "warm-ours")

        t = {k: [] for k in ("pycco_full", "ours_full", "ours_noop", "ours_one_comment",
                             "ours_one_code")}
        rerendered = {"ours_one_comment": [], "ours_one_code": []}
        for i in range(runs):
            p_out, o_out = tmp / f"pycco-{i}", tmp / f"ours-{i}"
            order = [("pycco_full", pycco, p_out), ("ours_full", ours, o_out)]
            if i % 2:
                order.reverse()
            for name, tool, out in order:
                t[name].append(tool.build(out))

            # No-op: nothing changed, so nothing may be written.
            state = o_out / STATE_FILE
            before = state.stat().st_mtime_ns
            t["ours_noop"].append(ours.build(o_out))
            if state.stat().st_mtime_ns != before:
                raise SystemExit("no-op rebuild rewrote the site (fast path not taken; did "
                                 "templates/, static/ or site_builder/ change during the run?)")

            # One changed file: a code-only line, then (relative to that build) a comment.
            for name, line in (("ours_one_code", "pass"),
                               ("ours_one_comment", f"# benchmark edit {i}")):
                keys = page_keys(o_out)
                with appended(page_src, line):
                    t[name].append(ours.build(o_out))
                rerendered[name].append(changed_keys(keys, page_keys(o_out)))

            log(f"run {i + 1}/{runs}: pycco {t['pycco_full'][-1]:.3f} s, ours "
                f"{t['ours_full'][-1]:.3f} s, no-op {t['ours_noop'][-1]:.4f} s, one changed "
                f"{t['ours_one_code'][-1]:.3f} / {t['ours_one_comment'][-1]:.3f} s")
            if i < runs - 1:  # keep the last run's output for the page sizes
                shutil.rmtree(p_out)
                shutil.rmtree(o_out)

        last = runs - 1
        sizes = {"ours": page_bytes(tmp / f"ours-{last}", page_out),
                 "pycco": page_bytes(tmp / f"pycco-{last}", page_out)}

    timings = {k: stats(v) for k, v in t.items()}
    full = timings["ours_full"]["median_s"]
    return {
        "corpus": {"files": len(files), "copies": copies,
                   "sources": [p.relative_to(REPO).as_posix() for p in default_sources()],
                   "page": page_out},
        "runs": runs,
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpus": os.cpu_count(),
                        "pycco": _dist_version("pycco")},
        "timings": timings,
        "pages_rerendered": rerendered,
        "derived": {
            "full_ratio_ours_over_pycco": full / timings["pycco_full"]["median_s"],
            "noop_fraction_of_full": timings["ours_noop"]["median_s"] / full,
            "one_comment_fraction_of_full": timings["ours_one_comment"]["median_s"] / full,
            "one_code_fraction_of_full": timings["ours_one_code"]["median_s"] / full,
        },
        "page_bytes": sizes,
        "mathjax_upper_bound_bytes": mathjax_upper_bound(),
        "targets": {"full_ratio_max": TARGET_RATIO, "noop_fraction_max": TARGET_NOOP},
        "notes": notes,
    }


# === Typesetting in the browser ===

TARGET_FIRST_SCREEN_S = 0.3

# The probe must not change what it measures: asking every formula for its position at
# DOMContentLoaded would make the browser lay the whole page out at once (sections far
# below are otherwise not laid out yet, see `content-visibility` in annogen.css), so the
# first screen is what an IntersectionObserver reports in the first frame.
# A formula in MathJax's CommonHTML output (the "before" version) is readable only once
# its fonts have loaded (until then the browser draws its glyphs invisible), and the
# browser asks for a font only when it lays out text that uses it, after MathJax has
# inserted the formula; the SVG output the pages use now draws paths and needs no font.
# So the first screen counts as typeset at the first frame, after the one that laid the
# inserted formulas out, in which none of the font faces they use is still loading.
# (Checking `document.fonts.status` when the formulas appear, as this probe did before,
# passes before those fonts have even been requested: it reported 50-100 ms too early.)
PROBE = """
window.__mj = {first: null, all: null, inserted: null, ready: null};
/* When MathJax's scripts have run and its startup is done (its pageReady is called): no
   formula can be typeset before. The page's configuration is in window.MathJax when the
   parser inserts MathJax's script element, before that script runs. */
new MutationObserver(function (records, observer) {
  if (!document.getElementById('MathJax-script')) return;
  observer.disconnect();
  if (!window.MathJax) return;
  var startup = window.MathJax.startup = window.MathJax.startup || {};
  var pageReady = startup.pageReady;
  startup.pageReady = function () {
    __mj.ready = performance.now();
    return pageReady ? pageReady.apply(this, arguments) : MathJax.startup.defaultPageReady();
  };
}).observe(document, {childList: true, subtree: true});
document.addEventListener('DOMContentLoaded', function () {
  var els = Array.prototype.slice.call(document.querySelectorAll('.arithmatex'));
  function done(e) { var c = e.querySelector('mjx-container'); return !!(c && c.querySelector('mjx-math, svg')); }
  function unquote(f) { return f.trim().replace(/^["']|["']$/g, ''); }
  __mj.n = els.length;
  var io = new IntersectionObserver(function (entries) {
    io.disconnect();
    var first = entries.filter(function (en) { return en.isIntersecting; }).map(function (en) { return en.target; });
    var families = null;
    __mj.nFirst = first.length;
    (function poll() {
      var now = performance.now();
      if (families === null && first.every(done)) {
        __mj.inserted = now;
        families = new Set();
        first.forEach(function (e) {
          e.querySelectorAll('mjx-container *').forEach(function (c) {
            getComputedStyle(c).fontFamily.split(',').forEach(function (f) { families.add(unquote(f)); });
          });
        });
      } else if (families !== null && __mj.first === null) {
        var loading = false;
        document.fonts.forEach(function (f) {
          if (f.status === 'loading' && families.has(unquote(f.family))) loading = true;
        });
        if (!loading) __mj.first = now;
      }
      if (__mj.all === null && els.every(done)) __mj.all = now;
      if (__mj.first === null || __mj.all === null) requestAnimationFrame(poll);
    })();
  });
  els.forEach(function (e) { io.observe(e); });
});
"""
# Scroll through the page, wait for MathJax to finish, count formulas left raw; null if
# that takes over 60 s (a page whose MathJax never finishes must not hang the benchmark).
LEFT_UNTYPESET = """async () => {
  const check = async () => {
    for (let y = 0; y < document.documentElement.scrollHeight; y += innerHeight) {
      window.scrollTo(0, y);
      await new Promise(r => requestAnimationFrame(() => setTimeout(r, 20)));
    }
    await (window.MathJax && MathJax.startup ? MathJax.startup.promise : null);
    return Array.from(document.querySelectorAll('.arithmatex'))
      .filter(e => !e.querySelector('mjx-container mjx-math, mjx-container > svg')).length;
  };
  return Promise.race([check(), new Promise(r => setTimeout(() => r(null), 60000))]);
}"""
BEFORE_CONFIG = """<script>
window.MathJax = {tex: {inlineMath: [["\\\\(", "\\\\)"]], displayMath: [["\\\\[", "\\\\]"]],
  processEscapes: true, processEnvironments: true},
  options: {ignoreHtmlClass: ".*", processHtmlClass: "arithmatex", skipHtmlTags: {"[-]": ["pre", "code"]}}};
</script>
<script defer id="MathJax-script" src="%s"></script>"""


def chromium() -> str | None:
    exe = os.environ.get("ANNOGEN_CHROMIUM") or "/usr/bin/chromium"
    return exe if Path(exe).is_file() else shutil.which("chromium")


def before_variant(html: str, tex_chtml: Path) -> str:
    """The page as configured before: one combined file, everything in one pass, the
    fonts loaded when the formulas are laid out."""
    start = html.index("<script>\n/* MathJax 3 typesets only")
    end = html.index("</script>", html.index('id="MathJax-script"')) + len("</script>")
    return html[:start] + BEFORE_CONFIG % tex_chtml.as_uri() + html[end:]


def timings(rs: list[dict]) -> dict:
    """Medians and runs of what the probe recorded, in seconds."""
    return {"first_screen_s": stats([r["first"] / 1000 for r in rs]),
            "all_s": stats([r["all"] / 1000 for r in rs]),
            "mathjax_ready_s": stats([r["ready"] / 1000 for r in rs]),
            "first_screen_inserted_s": stats([r["inserted"] / 1000 for r in rs]),
            "first_paint_s": stats([r["first_paint"] / 1000 for r in rs])}


# The three versions of each page that are measured: as built (the first formulas
# typeset at build time), as built with --no-prerender-math (every formula typeset in
# the browser, in two passes), and as configured before (one combined MathJax file,
# the whole page typeset in one pass).
VERSIONS = ("now", "browser", "before")


def typesetting(runs: int, log) -> dict:
    from playwright.sync_api import sync_playwright

    import build
    from site_builder.site import mathjax_dir
    exe = chromium()
    with tempfile.TemporaryDirectory(prefix="annogen-mj-") as tmp:
        site, browser_only = Path(tmp) / "site", Path(tmp) / "browser-only"
        for out, flags in ((site, []), (browser_only, ["--no-prerender-math"])):
            if build.main(["--out", str(out), "-q", *flags]) != 0:
                raise SystemExit("the course does not build; see the error above")
        counts = sorted(((p.read_text(encoding="utf8").count('class="arithmatex'), p)
                         for p in site.rglob("*.html")), key=lambda x: (-x[0], str(x[1])))
        pages = [p for n, p in counts[:5] if n]
        versions = {}
        for p in pages:
            raw = (browser_only / p.relative_to(site)).read_text(encoding="utf8")
            b = p.with_name(p.stem + ".browser.html")
            b.write_text(raw, encoding="utf8")
            old = p.with_name(p.stem + ".before.html")
            old.write_text(before_variant(raw, mathjax_dir() / "tex-chtml.js"), encoding="utf8")
            versions[p] = {"now": p, "browser": b, "before": old}
        out = {}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])

            def load(path: Path, came_from: Path | None) -> dict:
                """Open `path` in a fresh context (offline by the browser's own switch:
                routing every request through Playwright, ctx.route, would add a round
                trip to this process to each file the page loads; measured: 25-60 ms);
                with `came_from`, that page first, then `path` in the same tab, as a
                reader following a link."""
                ctx = browser.new_context(viewport={"width": 1280, "height": 800})
                ctx.set_offline(True)
                ctx.add_init_script(PROBE)
                page = ctx.new_page()
                for url in ([came_from.as_uri()] if came_from else []) + [path.as_uri()]:
                    page.goto(url)
                    page.wait_for_function("() => window.__mj && __mj.first !== null && "
                                           "__mj.all !== null", timeout=120_000)
                r = page.evaluate("() => __mj")
                r["first_paint"] = page.evaluate(
                    "() => performance.getEntriesByName('first-paint')[0].startTime")
                if not came_from:
                    r["left_untypeset"] = page.evaluate(LEFT_UNTYPESET)
                    if r["left_untypeset"] is None:
                        raise SystemExit(f"{path.name}: scrolling through the page and "
                                         "waiting for MathJax took over 60 s")
                ctx.close()
                return r

            for k, p in enumerate(pages):
                rel = p.relative_to(site).as_posix()
                # The link is followed from the next of the five pages, in the same
                # version (so "before" comes from a "before" page).
                other = pages[(k + 1) % len(pages)]
                res = {(name, how): [] for name in VERSIONS for how in ("tab", "link")}
                for i in range(runs):
                    # The versions in turn, in a different order each run.
                    for name in VERSIONS[i % 3:] + VERSIONS[:i % 3]:
                        res[name, "tab"].append(load(versions[p][name], None))
                        res[name, "link"].append(load(versions[p][name], versions[other][name]))
                entry = {"formulas": res["now", "tab"][0]["n"],
                         "first_screen": res["now", "tab"][0]["nFirst"],
                         "link_from": other.relative_to(site).as_posix()}
                for name in VERSIONS:
                    entry[name] = timings(res[name, "tab"])
                    entry[name]["left_untypeset"] = max(r["left_untypeset"]
                                                        for r in res[name, "tab"])
                    entry[name]["link"] = timings(res[name, "link"])
                out[rel] = entry
                log(f"{rel}: {entry['formulas']} formulas, first screen in a new tab "
                    + ", ".join(f"{name} {entry[name]['first_screen_s']['median_s']:.3f} s"
                                for name in VERSIONS)
                    + "; following a link "
                    + ", ".join(f"{name} {entry[name]['link']['first_screen_s']['median_s']:.3f} s"
                                for name in VERSIONS))
            browser.close()
    return {"pages": out, "runs": runs, "target_first_screen_s": TARGET_FIRST_SCREEN_S}


def typesetting_table(t: dict) -> str:
    def within(timing: dict) -> str:
        runs = timing["first_screen_s"]["runs_s"]
        ok = timing["first_screen_s"]["median_s"] <= TARGET_FIRST_SCREEN_S
        n = sum(seconds <= TARGET_FIRST_SCREEN_S for seconds in runs)
        return f"{'yes' if ok else '**no**'}; {n}/{len(runs)}"

    def first_all(timing: dict) -> str:
        return (f"{_ms(timing['first_screen_s']['median_s'])} | "
                f"{_ms(timing['all_s']['median_s'])}")

    target = f"first screen <= {TARGET_FIRST_SCREEN_S} s (median; runs within)"
    head = ("first screen typeset | all typeset | browser only: first screen | all | "
            "before: first screen | all |")
    rows = ["First screen and whole page typeset, medians from navigation start: as built "
            "(the first formulas typeset at build time), built with --no-prerender-math "
            "(browser only), and as configured before (one combined MathJax file, one pass).",
            "", "Opened in a new tab (a cold start):", "",
            f"| page (formulas, on first screen) | {head} left untypeset | {target} |",
            "|---|---|---|---|---|---|---|---|---|"]
    for rel, e in t["pages"].items():
        rows.append(f"| {rel} ({e['formulas']}, {e['first_screen']}) | "
                    + " | ".join(first_all(e[name]) for name in VERSIONS)
                    + f" | {e['now']['left_untypeset']} | {within(e['now'])} |")
    rows += ["", "Reached by following a link from another course page, in the same tab "
             "(as a reader going through the course):", "",
             f"| page (from) | {head} {target} |", "|---|---|---|---|---|---|---|---|"]
    for rel, e in t["pages"].items():
        rows.append(f"| {rel} ({e['link_from']}) | "
                    + " | ".join(first_all(e[name]["link"]) for name in VERSIONS)
                    + f" | {within(e['now']['link'])} |")
    rows += ["", "Where the first screen's time goes (medians, from navigation start): the "
             "first paint, MathJax's scripts run and its startup done (no formula can be "
             "typeset in the browser sooner), the first screen's formulas in the page, and "
             "drawn (with their fonts loaded, where they use web fonts).", "",
             "| page | how | version | first paint | MathJax ready | first screen inserted | "
             "first screen drawn |", "|---|---|---|---|---|---|---|"]
    for rel, e in t["pages"].items():
        for how in ("new tab", "link"):
            for name in VERSIONS:
                v = e[name] if how == "new tab" else e[name]["link"]
                rows.append(f"| {rel} | {how} | {name} | {_ms(v['first_paint_s']['median_s'])} | "
                            f"{_ms(v['mathjax_ready_s']['median_s'])} | "
                            f"{_ms(v['first_screen_inserted_s']['median_s'])} | "
                            f"{_ms(v['first_screen_s']['median_s'])} |")
    return "\n".join(rows)


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001
        return None


# === The report ===

def _ms(s: float) -> str:
    return f"{s * 1000:.1f} ms"


def _kb(n: int) -> str:
    return f"{n:,} B ({n / 1024:.1f} KiB)"


def table(r: dict) -> str:
    t, d = r["timings"], r["derived"]
    ok = lambda good: "yes" if good else "**no**"  # noqa: E731
    rr = r["pages_rerendered"]
    n = r["corpus"]["files"]

    def med_min(k):
        return f"{_ms(t[k]['median_s'])} median, {_ms(t[k]['min_s'])} min"

    ours_b, pycco_b = r["page_bytes"]["ours"], r["page_bytes"]["pycco"]

    def parts(b):
        return " + ".join(f"{k} {v:,}" for k, v in b["parts"].items())

    rows = [
        ("corpus", f"{n} files ({r['corpus']['copies']} copies), {r['runs']} runs", "", ""),
        ("pycco full build", med_min("pycco_full"), "", ""),
        ("ours full build", med_min("ours_full"), "", ""),
        ("full build ratio ours/pycco (median)", f"{d['full_ratio_ours_over_pycco']:.2f}",
         f"<= {TARGET_RATIO:.1f}", ok(d["full_ratio_ours_over_pycco"] <= TARGET_RATIO)),
        ("ours no-op rebuild", f"{_ms(t['ours_noop']['median_s'])} = "
         f"{100 * d['noop_fraction_of_full']:.1f}% of full", f"<= {100 * TARGET_NOOP:.0f}%",
         ok(d["noop_fraction_of_full"] <= TARGET_NOOP)),
        ("ours one changed file: comment line appended",
         f"{_ms(t['ours_one_comment']['median_s'])} = "
         f"{100 * d['one_comment_fraction_of_full']:.0f}% of full; re-rendered "
         f"{statistics.median(rr['ours_one_comment']):.0f}/{n} pages", "", ""),
        ("ours one changed file: code line (`pass`) appended",
         f"{_ms(t['ours_one_code']['median_s'])} = "
         f"{100 * d['one_code_fraction_of_full']:.0f}% of full; re-rendered "
         f"{statistics.median(rr['ours_one_code']):.0f}/{n} pages", "", ""),
        (f"bytes of {r['corpus']['page']} + assets, ours",
         f"{_kb(ours_b['total'])}: {parts(ours_b)}", "", ""),
        (f"bytes of {r['corpus']['page']} + assets, pycco",
         f"{_kb(pycco_b['total'])}: {parts(pycco_b)}", "", ""),
    ]
    if r["mathjax_upper_bound_bytes"] is not None:
        has = any(k.endswith("mathjax/") for k in ours_b["parts"])
        rows.append(("MathJax a math page adds, ours (upper bound: whole copied folder)",
                     _kb(r["mathjax_upper_bound_bytes"])
                     + (" (included above)" if has else " (not included above: page has no math)"),
                     "", ""))
    out = ["| metric | value | target | ok |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {e} |" for a, b, c, e in rows]
    notes = r["notes"] + ours_b["notes"] + [f"ours loads remotely: {u}" for u in ours_b["remote"]]
    notes += [f"pycco loads remotely: {u}" for u in pycco_b["remote"]]
    return "\n".join(out + ([""] + [f"- {x}" for x in notes] if notes else []))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Time our site builder against stock Pycco.")
    p.add_argument("--copies", type=int, default=5,
                   help="copies of site_builder/*.py, *.js + build.py (15 files each; default 5)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per measurement (default 5)")
    p.add_argument("--page", default="parse.py", help="source whose page is weighed "
                   "(default parse.py)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON,
                   help=f"write results here (default {DEFAULT_JSON.relative_to(REPO)})")
    p.add_argument("--no-browser", action="store_true",
                   help="skip the typesetting measurement in headless Chromium")
    p.add_argument("--mj-runs", type=int, default=5,
                   help="page loads per page and configuration (default 5)")
    p.add_argument("--only-browser", action="store_true",
                   help="only the typesetting measurement (keeps the build timings in the JSON)")
    p.add_argument("-q", "--quiet", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.copies < 1 or args.runs < 1:
        p.error("--copies and --runs must be at least 1")

    log = (lambda *_: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    started = time.perf_counter()
    load_before = _loadavg()
    if args.only_browser:
        try:
            result = json.loads(args.json.read_text())
        except (OSError, ValueError):
            raise SystemExit(f"--only-browser needs an earlier {args.json}") from None
        result.setdefault("notes", [])
        result["environment"] = result.get("environment", {})
    else:
        result = run(args.copies, args.runs, args.page, log)
    if not args.no_browser:
        if chromium() is None:
            result["notes"].append("typesetting not measured: Chromium not found")
        else:
            result["typesetting"] = typesetting(args.mj_runs, log)
    result["wall_s"] = time.perf_counter() - started
    result["environment"]["loadavg_1min"] = {"before": load_before, "after": _loadavg()}
    busy = max(x for x in result["environment"]["loadavg_1min"].values() if x is not None) \
        if load_before is not None else None
    if busy is not None and busy > (os.cpu_count() or 1):
        result["notes"].append(f"machine was busy (1-min load average up to {busy:.1f} on "
                               f"{os.cpu_count()} CPUs): timings are noisy")
    print(table(result))
    if "typesetting" in result:
        print()
        print(typesetting_table(result["typesetting"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    log(f"wrote {args.json} ({result['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
