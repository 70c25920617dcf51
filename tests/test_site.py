"""Whole-site builds: the course, atomicity, determinism, incremental rebuilds, the CLI."""

import hashlib
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import build
from site_builder.course import load_course

ROOT = Path(__file__).resolve().parent.parent


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run(args, capsys):
    code = build.main([str(a) for a in args])
    return code, capsys.readouterr()


# === The course ===

def test_course_renders_index_and_every_manifest_page(course_site):
    course = load_course(ROOT / "src" / "annogen" / "course.toml")
    for page in course.pages:
        assert (course_site / page.out).is_file(), page.out
    index = (course_site / "index.html").read_text()
    for _, chapters in course.parts:
        for c in chapters:
            assert c.title in index and f'href="{c.pages[0].out}"' in index


def test_builder_renders_itself_as_a_chapter(course_site):
    page = (course_site / "site-builder" / "parse.html").read_text()
    assert "Splitting a source file into sections" in page
    assert "pycco_parse" in page  # the code column shows the builder's own code
    assert (course_site / "site-builder" / "index.html").is_file()  # README.md intro
    # Its run box shows the command that runs it.
    assert "python build.py" in (course_site / "site-builder" / "build.html").read_text()


def test_pages_have_navigation_and_viewport(course_site):
    course = load_course(ROOT / "src" / "annogen" / "course.toml")
    pages = course.pages
    for i, page in enumerate(pages):
        html = (course_site / page.out).read_text()
        assert '<meta name="viewport"' in html
        if i + 1 < len(pages):
            nxt = re.search(r'<a class="next" rel="next" href="([^"]+)"', html).group(1)
            assert (course_site / page.out).parent.joinpath(nxt).resolve() == \
                (course_site / pages[i + 1].out).resolve()
        else:
            assert 'rel="next"' not in html


def test_mathjax_only_on_pages_with_math_and_only_the_files_pages_load(course_site):
    with_math = (course_site / "index.html").read_text()  # the course intro has a formula
    assert 'src="static/mathjax/startup.js"' in with_math
    no_math = (course_site / "site-builder" / "errors.html").read_text()
    assert "MathJax" not in no_math
    mj = course_site / "static" / "mathjax"
    for name in ("startup.js", "input/tex.js", "output/svg.js", "output/svg/fonts/tex.js",
                 "a11y/assistive-mml.js"):
        assert (mj / name).is_file(), name
    # Neither the combined bundle (with the menu), nor the other output and its web fonts,
    # nor anything else the pages never load.
    assert not (mj / "tex-svg.js").exists() and not (mj / "ui" / "menu.js").exists()
    assert not (mj / "output" / "chtml.js").exists() and not list(mj.rglob("*.woff"))
    assert not (mj / "mml-chtml.js").exists() and not (mj / "sre").exists()
    assert sum(p.stat().st_size for p in mj.rglob("*") if p.is_file()) < 4_000_000


# === Rendering arbitrary files (the pycco way) ===

def test_same_named_files_do_not_overwrite_each_other(write, tmp_path, capsys):
    write("a/__init__.py", "# Package A.\nA = 1\n")
    write("b/__init__.py", "# Package B.\nB = 2\n")
    out = tmp_path / "docs"
    assert run([tmp_path / "a", tmp_path / "b", "--out", out, "-q"], capsys)[0] == 0
    assert "Package A." in (out / "a" / "__init__.html").read_text()
    assert "Package B." in (out / "b" / "__init__.html").read_text()


def test_many_files_build_without_recursion_error(tmp_path, capsys):
    src = tmp_path / "many"
    src.mkdir()
    limit = sys.getrecursionlimit()
    for i in range(limit + 50):
        (src / f"m{i:04d}.py").write_text(f"# Module {i}.\nx = {i}\n")
    out = tmp_path / "docs"
    assert run([src, "--out", out, "-q"], capsys)[0] == 0
    assert len(list(out.glob("*.html"))) == limit + 50 + 1  # and the index


def test_run_box_shows_the_module_command(write, tmp_path, capsys):
    write("pkg/__init__.py", "")
    write("pkg/train.py", '# Train.\ndef main():\n    pass\n\n\nif __name__ == "__main__":\n    main()\n')
    write("pkg/lib.py", "# Library.\nx = 1\n")
    out = tmp_path / "docs"
    assert run([tmp_path / "pkg", "--out", out, "-q"], capsys)[0] == 0
    assert "<code>python -m pkg.train</code>" in (out / "train.html").read_text()
    assert "Run it" not in (out / "lib.html").read_text()


# === Atomic, deterministic, incremental ===

@pytest.fixture
def small(write, tmp_path):
    write("src/a.py", '# # Page A\n#\n# Links to [[b.py]].\nx = 1\n')
    write("src/b.py", '# # Page B\n#\n# Formula $\\alpha$.\ny = 2\n')
    write("src/c.py", '# # Page C\nz = 3\n')
    return tmp_path / "src"


def test_failed_build_leaves_previous_site_intact(small, tmp_path, capsys):
    out = tmp_path / "out"
    assert run([small, "--out", out, "-q"], capsys)[0] == 0
    before = tree(out)
    (small / "c.py").write_text("# # Page C\n# Broken $x + 1\nz = 3\n")
    code, io = run([small, "--out", out, "-q"], capsys)
    assert code == 1
    assert io.err.strip().splitlines() == [f"{small / 'c.py'}:2: unclosed inline formula: "
                                           "`$` has no closing `$` (write \\$ for a literal dollar sign)"]
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temp folders


def test_two_builds_are_byte_identical(small, tmp_path, capsys):
    assert run([small, "--out", tmp_path / "one", "-q"], capsys)[0] == 0
    assert run([small, "--out", tmp_path / "two", "-q"], capsys)[0] == 0
    assert tree(tmp_path / "one") == tree(tmp_path / "two")


def test_incremental_rebuild_renders_only_what_changed(small, tmp_path, capsys):
    out = tmp_path / "out"
    assert run([small, "--out", out], capsys)[0] == 0
    code, io = run([small, "--out", out], capsys)
    assert code == 0 and "up to date" in io.out

    (small / "c.py").write_text("# # Page C\nz = 4  # changed code, same anchors\n")
    code, io = run([small, "--out", out], capsys)
    assert code == 0 and "rendered 1 pages, reused 2" in io.out
    # The incremental result equals a clean build of the same inputs.
    assert run([small, "--out", tmp_path / "clean", "-q"], capsys)[0] == 0
    assert tree(out) == tree(tmp_path / "clean")

    # A new section and anchor on c re-renders c alone: no other page shows it.
    (small / "c.py").write_text("# # Page C\nz = 4\n\n# ## New part\nw = 5\n")
    code, io = run([small, "--out", out], capsys)
    assert "rendered 1 pages, reused 2" in io.out

    # A new title is shown by the neighbours' prev/next links and the chapter list.
    (small / "c.py").write_text("# # Page C renamed\nz = 4\n")
    code, io = run([small, "--out", out], capsys)
    assert "rendered 3 pages, reused 0" in io.out
    assert "Page C renamed" in (out / "b.html").read_text()

    # A link re-renders when its target moves, even if the linking file did not change.
    (small / "b.py").unlink()
    (small / "sub").mkdir()
    (small / "sub" / "b.py").write_text('# # Page B\ny = 2\n')
    assert run([small, "--out", out], capsys)[0] == 0
    assert 'href="sub/b.html"' in (out / "a.html").read_text()
    assert run([small, "--out", tmp_path / "clean2", "-q"], capsys)[0] == 0
    assert tree(out) == tree(tmp_path / "clean2")


def test_refuses_to_replace_a_folder_it_did_not_make(small, tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    code, io = run([small, "--out", out, "-q"], capsys)
    assert code == 1 and "refusing to replace it" in io.err
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_mathjax_url_option_loads_from_that_url(small, tmp_path, capsys):
    out = tmp_path / "out"
    url = "https://cdn.example.org/mathjax@3.2.2/es5/tex-svg.js"
    assert run([small, "--out", out, "--mathjax-url", url, "-q"], capsys)[0] == 0
    html = (out / "b.html").read_text()
    assert f'src="{url}"' in html
    assert not (out / "static" / "mathjax").exists()
    # nor does the page load fonts from a local copy that is not there
    assert "static/mathjax" not in html and ".woff" not in html


# === The command line ===

@pytest.mark.parametrize("args,fragment", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--port", "99999", "--serve"], "--port must be between"),
    (["--port", "x"], "invalid int value"),
])
def test_bad_flags_give_one_line(args, fragment):
    proc = subprocess.run([sys.executable, "build.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and fragment in proc.stderr


def test_missing_path_and_bad_manifest_are_one_line_errors(tmp_path, capsys):
    code, io = run([tmp_path / "nope.py", "--out", tmp_path / "o"], capsys)
    assert code == 1 and io.err.strip() == f"{tmp_path / 'nope.py'}: no such file or folder"
    bad = tmp_path / "course.toml"
    bad.write_text('[course]\ntitle = "x"\n[[parts]]\n[[parts.chapters]]\nid = "a"\n'
                   'title = "A"\npath = "missing"\n')
    code, io = run(["--manifest", bad, "--out", tmp_path / "o"], capsys)
    assert code == 1 and len(io.err.strip().splitlines()) == 1
    assert "path missing does not exist" in io.err and "course.toml" in io.err
    bad.write_text("[course\n")
    code, io = run(["--manifest", bad, "--out", tmp_path / "o"], capsys)
    assert code == 1 and "course.toml:1: invalid TOML" in io.err


# === --serve ===

def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def wait_for(predicate, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_serve_rebuilds_on_change_and_shows_errors(small, tmp_path, serve):
    out = tmp_path / "served"
    with serve(small, out, "/a.html") as base:
        page = get(base + "/a.html")
        assert b'<script src="/__annogen__/live.js"></script>' in page
        assert b"live.js" not in (out / "a.html").read_bytes()  # the files stay clean
        v0 = json.loads(get(base + "/__annogen__/state"))
        assert v0["error"] is None

        (small / "a.py").write_text("# # Page A, edited\nx = 1\n")
        wait_for(lambda: json.loads(get(base + "/__annogen__/state"))["version"] > v0["version"])
        assert b"Page A, edited" in get(base + "/a.html")

        (small / "a.py").write_text("# # Page A\n# Link to [[nowhere.py]]\nx = 1\n")
        state = wait_for(lambda: json.loads(get(base + "/__annogen__/state"))["error"])
        assert "a.py:2: broken cross-reference [[nowhere.py]]" in state
        assert b"Page A, edited" in get(base + "/a.html")  # previous site still served


def test_top_readme_becomes_the_index_intro_and_is_watched(write, tmp_path, capsys):
    write("proj/README.md", "# My project\n\nIntro with $x^2$.\n")
    write("proj/a.py", "# A.\nx = 1\n")
    out = tmp_path / "docs"
    assert run([tmp_path / "proj", "--out", out, "-q"], capsys)[0] == 0
    index = (out / "index.html").read_text()
    assert "My project" in index and 'href="a.html"' in index
    write("proj/README.md", "# My project, renamed\n")
    assert run([tmp_path / "proj", "--out", out, "-q"], capsys)[0] == 0
    assert "My project, renamed" in (out / "index.html").read_text()


def test_binary_or_non_utf8_source_is_a_one_line_error(tmp_path, capsys):
    src = tmp_path / "bad"
    src.mkdir()
    (src / "latin.py").write_bytes(b"# caf\xe9\nx = 1\n")
    code, io = run([src, "--out", tmp_path / "o"], capsys)
    assert code == 1 and io.err.strip().endswith("latin.py: not UTF-8 text (byte 5): invalid "
                                                 "continuation byte")


def test_images_are_copied_and_a_missing_one_is_a_warning_in_paths_mode(write, tmp_path, capsys):
    write("ch/README.md", "# Chapter\n\n![samples](figures/s.png)\n")
    write("ch/figures/s.png", "not really a png")
    write("ch/m.py", "# Code.\nx = 1\n")
    out = tmp_path / "docs"
    assert run([tmp_path / "ch", "--out", out, "-q"], capsys)[0] == 0
    assert (out / "figures" / "s.png").read_text() == "not really a png"
    assert 'src="figures/s.png"' in (out / "index.html").read_text()
    # Changing only the image is seen by the no-op check.
    write("ch/figures/s.png", "new pixels")
    code, io = run([tmp_path / "ch", "--out", out], capsys)
    assert "up to date" not in io.out and (out / "figures" / "s.png").read_text() == "new pixels"
    write("ch/m.py", "# Code.\n#\n# ![gone](nothere.png)\nx = 1\n")
    # Rendering any files (as pycco is used): the page builds, the reference is kept.
    code, io = run([tmp_path / "ch", "--out", out, "-q"], capsys)
    assert code == 0 and io.err.strip().endswith("m.py:3: warning: missing image nothere.png")
    assert 'src="nothere.png"' in (out / "m.html").read_text()
    code, io = run([tmp_path / "ch", "--out", out, "-q"], capsys)  # a no-op says it again
    assert code == 0 and io.err.strip().endswith("m.py:3: warning: missing image nothere.png")
    # --strict makes every warning an error, and the previous site stays.
    before = (out / "m.html").read_text()
    code, io = run([tmp_path / "ch", "--out", out, "-q", "--strict"], capsys)
    assert code == 1 and io.err.strip().endswith("m.py:3: missing image nothere.png")
    assert "warning" not in io.err and (out / "m.html").read_text() == before


def test_missing_image_in_a_course_is_an_error(write, tmp_path, capsys):
    write("ch/README.md", "# Chapter\n\n![samples](figures/gone.png)\n")
    manifest = write("course.toml", '[course]\ntitle = "T"\n[[parts]]\ntitle = "P"\n'
                     '[[parts.chapters]]\nid = "ch"\ntitle = "Ch"\npath = "ch"\n')
    code, io = run(["--manifest", manifest, "--out", tmp_path / "o", "-q"], capsys)
    assert code == 1 and io.err.strip().endswith("ch/README.md:3: missing image figures/gone.png")


@pytest.mark.parametrize("where", ["/proc/forbidden", "/proc/forbidden/deeper"])
def test_unwritable_output_folder_names_the_folder_asked_for(small, where, capsys):
    code, io = run([small, "--out", where, "-q"], capsys)
    err = io.err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"{where}: cannot write the output folder") and ".tmp-" not in err


def test_builder_chapter_lists_every_builder_module():
    course = load_course(ROOT / "src" / "annogen" / "course.toml")
    chapter = next(c for _, cs in course.parts for c in cs if c.id == "site-builder")
    shown = {p.src.resolve() for p in chapter.pages}
    for module in (ROOT / "site_builder").glob("*.py"):
        assert module.resolve() in shown, f"{module.name} is missing from course.toml"
    assert (ROOT / "build.py").resolve() in shown


# === The index: chapter cards with their figure; chapters with prose only ===

def png(width: int, height: int) -> bytes:
    """A valid PNG header of the given size (enough for the builder, which reads sizes)."""
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data +  # noqa: E731
                                struct.pack(">I", zlib.crc32(kind + data)))
    raw = b"".join(b"\0" + b"\0" * 3 * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


MANIFEST = '''[course]
title = "T"
[[parts]]
title = "P"
[[parts.chapters]]
id = "ch"
title = "A chapter with a long title that must wrap inside its card on the index page"
path = "ch"
figure = "figures/result.png"
[[parts.chapters]]
id = "notes"
title = "Notation"
path = "notes"
intro = "notation.md"
files = []
'''


@pytest.fixture
def card_course(write, tmp_path):
    write("ch/README.md", "# Chapter\n\n![A small grid](figures/grid.png)\n\n"
          "![A big plot](figures/plot.png)\n\n<details>\n<summary>Lab notes</summary>\n\n"
          "- tried **lr** $10^{-3}$, see __main__.py\n\n</details>\n")
    (tmp_path / "ch" / "figures").mkdir()
    (tmp_path / "ch" / "figures" / "result.png").write_bytes(png(64, 32))
    (tmp_path / "ch" / "figures" / "grid.png").write_bytes(png(96, 96))
    (tmp_path / "ch" / "figures" / "plot.png").write_bytes(png(1200, 600))
    write("ch/m.py", "# Code.\nx = 1\n")
    write("notes/notation.md", "# Notation\n\n$K$ is the codebook size.\n")
    return write("course.toml", MANIFEST)


def test_index_card_shows_the_chapter_figure_and_lists_no_page_twice(card_course, tmp_path, capsys):
    out = tmp_path / "site"
    code, io = run(["--manifest", card_course, "--out", out, "-q"], capsys)
    assert code == 0, io.err
    index = (out / "index.html").read_text()
    title = "A chapter with a long title that must wrap inside its card on the index page"
    assert re.search(rf'<img src="ch/figures/result.png" alt="{title}"[^>]* width="64" '
                     r'height="32" class="thumb pixel-art">', index), index
    assert (out / "ch" / "figures" / "result.png").read_bytes() == png(64, 32)
    # The chapter's title links to its intro page; the list below shows the other pages.
    main = index[index.index("<main"): index.index("</main>")]
    assert main.count(title) == 2  # the card's link and the figure's alt text
    assert main.count('href="ch/index.html"') == 1 and 'href="ch/m.html"' in main
    # A chapter of prose only (files = []) builds, with its math.
    notes = (out / "notes" / "index.html").read_text()
    assert "codebook size" in notes and "arithmatex" in notes
    assert 'data-chapter="notes"' in index and 'class="course-progress" data-total="2"' in index


def test_missing_chapter_figure_is_an_error(card_course, tmp_path, capsys):
    (tmp_path / "ch" / "figures" / "result.png").unlink()
    code, io = run(["--manifest", card_course, "--out", tmp_path / "site", "-q"], capsys)
    assert code == 1 and "chapter 'ch': figure figures/result.png does not exist" in io.err


def test_figures_get_sizes_small_grids_are_pixel_art_and_lab_notes_hold_markdown(
        card_course, tmp_path, capsys):
    out = tmp_path / "site"
    assert run(["--manifest", card_course, "--out", out, "-q"], capsys)[0] == 0
    page = (out / "ch" / "index.html").read_text()
    assert re.search(r'<img alt="A small grid" src="figures/grid.png" width="96" height="96" '
                     r'class="pixel-art">', page), page
    assert re.search(r'<img alt="A big plot" src="figures/plot.png" width="1200" height="600">',
                     page)
    notes = re.search(r"<details>(.*?)</details>", page, re.S).group(1)
    assert "<summary>Lab notes</summary>" in notes and "<strong>lr</strong>" in notes
    assert '<span class="arithmatex"' in notes and "__main__.py" in notes
    # Every chapter page offers the "done" toggle for its chapter.
    assert 'class="done-toggle" data-chapter="ch"' in page


# === The first formulas typeset at build time ===

def prerendered(html: str) -> list[str]:
    """The markup of the formulas typeset at build time, in page order."""
    return re.findall(r'data-prerendered>(<mjx-container.*?</mjx-container>)</(?:span|div)>', html)


def raw_formulas(html: str) -> list[str]:
    return re.findall(r'class="arithmatex[^"]*"[^>]*>(\\[(\[].*?\\[)\]])</', html)


@pytest.fixture
def many_formulas(write, tmp_path):
    write("src/m.py", "\n".join([
        "# # Many formulas", "#",
        r"# First $a < b$, then $\boldsymbol{\theta}$, then", "#",
        r"# $$\sum_i x_i$$",
        "n = 1  # the count $n_i$", ""] +
        [f"# Formula number $y_{{{i}}}$." for i in range(30)] + ["z = 2", ""]))
    write("src/plain.py", "# # No math\nx = 1\n")
    return tmp_path / "src"


def test_first_formulas_are_typeset_at_build_time_and_the_rest_left_to_the_browser(
        many_formulas, tmp_path, capsys):
    from site_builder.prerender import FIRST
    assert run([many_formulas, "--out", tmp_path / "out", "-q"], capsys)[0] == 0
    html = (tmp_path / "out" / "m.html").read_text()
    done, raw = prerendered(html), raw_formulas(html)
    # The first FIRST formulas, in page order; the rest still TeX for MathJax.
    assert len(done) == FIRST and len(done) + len(raw) == 34
    assert raw[0] == r"\(y_{20}\)" and raw[-1] == r"\(y_{29}\)"
    assert 'data-c="1D44E"' in done[0] and 'data-c="3C"' in done[0]  # a < b: not &lt;
    assert "TEX-BI-" in done[1]  # \boldsymbol, an extension MathJax loads on demand
    assert 'display="true"' in done[2] and 'display="true"' not in done[0]
    assert all('data-mml-node="merror"' not in d and "<math" in d for d in done)  # MathML
    # The formulas draw their characters from one set of paths, each character once,
    # placed before the first formula (drawn while the page is still being parsed).
    ids = re.findall(r'<path id="(MJX-[^"]+)"', html)
    used = set(re.findall(r'xlink:href="#(MJX-[^"]+)"', html))
    assert used and used == set(ids) and len(ids) == len(set(ids))
    assert html.index('<svg id="MathJax-prerendered-paths"') < html.index("data-prerendered>")
    # The formula in a code comment keeps the TeX the copy button puts back.
    assert re.search(r'data-src="\$n_i\$" data-prerendered><mjx-container', html)
    # The page carries the SVG output's style sheet; no web font is needed.
    style = re.search(r'<style id="MathJax-prerendered">(.*?)</style>', html, re.S)[1]
    assert 'mjx-container[jax="SVG"]' in style and "@font-face" not in style
    assert "prerendered" not in (tmp_path / "out" / "plain.html").read_text()


def test_a_page_whose_formulas_define_macros_is_left_to_the_browser(write, tmp_path, capsys):
    # Typeset in advance, the definition would never reach the browser's MathJax.
    write("src/d.py", "# # D\n" + r"# Let $\newcommand{\R}{\mathbb{R}}$ and $x \in \R$." +
          "\nx = 1\n")
    write("src/e.py", r"# # E" + "\n" + r"# Just $x \in \mathbb{R}$." + "\nx = 1\n")
    assert run([tmp_path / "src", "--out", tmp_path / "out", "-q"], capsys)[0] == 0
    assert prerendered((tmp_path / "out" / "d.html").read_text()) == []
    assert len(prerendered((tmp_path / "out" / "e.html").read_text())) == 1


def test_without_node_every_formula_is_left_to_the_browser(many_formulas, tmp_path, capsys,
                                                          monkeypatch):
    out = tmp_path / "out"
    assert run([many_formulas, "--out", out, "-q"], capsys)[0] == 0
    assert prerendered((out / "m.html").read_text())
    # No Node.js found: the same folder is rebuilt (its pages were made with it), and the
    # pages are those of a build told not to typeset in advance.
    import site_builder.site
    monkeypatch.setattr(site_builder.site, "node", lambda: None)
    code, io = run([many_formulas, "--out", out], capsys)
    assert code == 0 and "rendered 2 pages" in io.out
    assert run([many_formulas, "--out", tmp_path / "browser", "--no-prerender-math", "-q"],
               capsys)[0] == 0
    assert tree(out) == tree(tmp_path / "browser")
    html = (out / "m.html").read_text()
    assert prerendered(html) == [] and len(raw_formulas(html)) == 34
    assert "MathJax-prerendered" not in html


def test_node_failing_is_a_one_line_error_and_the_previous_site_stays(
        many_formulas, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert run([many_formulas, "--out", out, "-q"], capsys)[0] == 0
    before = tree(out)
    broken = tmp_path / "node"
    broken.write_text("#!/bin/sh\necho 'something broke' >&2\nexit 3\n")
    broken.chmod(0o755)
    import site_builder.site
    monkeypatch.setattr(site_builder.site, "node", lambda: str(broken))
    (many_formulas / "m.py").write_text("# # M\n# Now $z$.\nz = 1\n")
    code, io = run([many_formulas, "--out", out], capsys)
    assert code == 1 and len(io.err.strip().splitlines()) == 1
    assert "typesetting the first formulas failed: something broke" in io.err
    assert "--no-prerender-math" in io.err
    assert tree(out) == before
