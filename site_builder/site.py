r"""
# Building the whole site

A build has three promises.

**Atomic.** Everything is written into a fresh folder beside the output; only when the
last file is written do we swap it in. A build that fails on a broken formula on its
last page leaves the previous site exactly as it was.

**Deterministic.** The same inputs give byte-identical files: no timestamps, every list
sorted or in course order, JSON with sorted keys. Two builds can be compared with
`diff -r`, and a page that did not change does not show up as changed.

**Incremental.** A page's HTML depends on its own source, on what every page shares
(templates, styles, the builder itself, the options), on its neighbours in the course
(the titles shown in its breadcrumbs, prev/next links and chapter list) and on the
links its cross-references resolved to. We hash exactly those into the page's key. A
page whose key matches the previous build is copied instead of rendered, so editing one
file re-renders that page (and, if its title changed, the pages that show the title);
when nothing at all changed, the build stops after hashing the inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from . import __version__
from .course import Course
from .errors import BuildError, Warnings
from .highlight import pygments_css
from .mathtex import make_markdown
from .parallel import default_jobs, fork_map
from .parse import language_for
from .prerender import Prerender, node
from .render import Prepared, page_context, prepare, source_copy_path
from .xref import Resolver

PROJECT = Path(__file__).resolve().parent.parent
TEMPLATES = PROJECT / "templates"
STATIC = PROJECT / "static"
BUILDER = Path(__file__).resolve().parent
STATE_FILE = ".annogen-build.json"

# The MathJax files the pages load: the loader, the components the page configuration
# names (TeX input, SVG output and its font data, the assistive MathML), and the TeX
# extensions loaded on demand (`\boldsymbol`, `\cancel`, ...). The SVG output draws each
# character as a path from that font data: there is no web font to fetch before a formula
# can be drawn, and the browser lays a formula out as one box. The combined `tex-svg.js`
# would add the contextual menu, a third of its size; the rest of the 40 MB distribution
# is never requested.
MATHJAX_FILES = ["startup.js", "core.js", "input/tex.js", "output/svg.js", "output/svg/fonts/tex.js",
                 "input/tex/extensions", "a11y/assistive-mml.js"]
MATHJAX_ENTRY = "startup.js"
# The components the loader will request on every page with math (the scripts above
# besides the loader itself), named in the page head so the browser fetches them while it
# parses the page, where the browser typesets the first screen itself (see `_common`);
# the TeX extensions are asked for only when a formula needs them.
MATHJAX_PRELOAD = [f for f in MATHJAX_FILES if f.endswith(".js") and f != MATHJAX_ENTRY]


def mathjax_dir() -> Path:
    import mathjax  # the django-static-mathjax package; it needs no Django to import
    return Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"


@dataclass
class Options:
    out: Path
    mathjax_url: str | None = None  # None: the local copy
    jobs: int = 0  # worker processes; 0: one per core
    strict: bool = False  # every warning is an error
    prerender_math: bool = True  # typeset the first formulas at build time (if Node.js is found)


@dataclass
class Result:
    rendered: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    up_to_date: bool = False
    warnings: Warnings = field(default_factory=Warnings)


def _hash_files(h, files) -> None:
    for f in sorted(files):
        h.update(str(f).encode() + b"\0")
        h.update(Path(f).read_bytes() + b"\0")


def _tree(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def prerender_with(options: Options) -> str | None:
    """The Node.js that typesets the first formulas of each page, or None (the browser
    typesets them all): see [[prerender.py]]."""
    return node() if options.prerender_math and not options.mathjax_url else None


def input_digest(course: Course, options: Options) -> str:
    """Everything a build reads. Equal digests mean an identical site."""
    h = hashlib.sha256(__version__.encode())
    h.update(json.dumps([options.mathjax_url, options.strict, course.title,
                         course.tagline, prerender_with(options) is not None]).encode())
    for p in course.pages:
        h.update(f"{p.out}\0{p.kind}\0{p.title}\0{p.run}\0".encode())
    _hash_files(h, [p.src for p in course.pages])
    extra = [f for f in (course.manifest, course.intro) if f]
    _hash_files(h, extra + _tree(TEMPLATES) + _tree(STATIC) + _tree(BUILDER))
    return h.hexdigest()


def shared_key(course: Course, options: Options) -> str:
    """What every page shares: the builder, templates, styles, options, course title."""
    h = hashlib.sha256(__version__.encode())
    h.update(json.dumps([options.mathjax_url, course.title, course.tagline,
                         prerender_with(options) is not None]).encode())
    _hash_files(h, _tree(TEMPLATES) + _tree(STATIC) + _tree(BUILDER))
    return h.hexdigest()


def page_key(shared: str, prep: Prepared, course: Course, by_out: dict, hrefs: list[str]) -> str:
    """Everything one page's HTML is made from."""
    page, order = prep.page, course.pages
    i = order.index(page)
    neighbours = [order[i - 1] if i else None, order[i + 1] if i + 1 < len(order) else None]
    chapter = page.chapter
    nav = [[p.out, by_out[p.out].title] if p else None
           for p in neighbours + (chapter.pages if chapter else [])]
    meta = [chapter.title, chapter.part, chapter.number, chapter.time, chapter.run] if chapter else []
    data = json.dumps([prep.digest, page.out, page.run, page.title, nav, meta, hrefs])
    return hashlib.sha256((shared + data).encode()).hexdigest()


def read_state(out: Path) -> dict:
    try:
        return json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def jinja_env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True)


def build(course: Course, options: Options) -> Result:
    out = options.out.resolve()
    result = Result()
    state = read_state(out)
    digest = input_digest(course, options)
    if out.is_dir() and state.get("input") == digest and _assets_unchanged(state):
        result.up_to_date = True
        result.warnings.items = list(state.get("warnings", []))  # shown again, as last time
        return result
    pages = course.pages
    jobs = options.jobs or default_jobs()

    # Pass 1: prepare every page (parse, directives, anchors, math checks).
    def prepare_one(i: int):
        warnings = Warnings()
        prep = prepare(pages[i], warnings, course.missing_images_are_errors)
        prep.page = None  # sent back without the course it belongs to
        return prep, warnings

    prepared = []
    for page, (prep, warnings) in zip(pages, fork_map(prepare_one, len(pages), jobs)):
        prep.page = page
        prepared.append(prep)
        result.warnings.extend(warnings)
    by_out = {prep.page.out: prep for prep in prepared}
    resolver = Resolver([prep.target for prep in prepared])
    intro = _prepare_intro(course, result.warnings)
    if options.strict and result.warnings.errors:
        raise result.warnings.errors[0]
    every = prepared + ([intro] if intro else [])  # the pages and the course index
    hrefs = {}
    for prep in every:
        hrefs[prep.page.out] = [href for s in prep.sections
                                for href in resolver.check(s.docs, prep.target,
                                                           str(prep.page.src), s.docs_line)]

    shared = shared_key(course, options)
    old_keys = state.get("pages", {}) if out.is_dir() else {}
    new_keys = {p.page.out: page_key(shared, p, course, by_out, hrefs[p.page.out])
                for p in prepared}

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    except OSError as e:
        # The temporary folder is ours, not the reader's: name the folder they asked for.
        raise BuildError(out, None, f"cannot write the output folder: {e.strerror}") from None

    def reused(prep: Prepared) -> bool:
        """Whether the page is copied from the previous build (the index never is)."""
        out_file = prep.page.out
        return prep is not intro and old_keys.get(out_file) == new_keys[out_file] and \
            (out / out_file).is_file()

    # The first formulas of the pages about to be rendered are typeset by MathJax in
    # another process ([[prerender.py]]), started now so that it loads while they render;
    # none is started when no page with math is to be rendered.
    with_math = [p for p in every if p.has_math or p.maybe_comment_math]
    to_typeset = not all(reused(p) for p in with_math)
    typesetting = Prerender(prerender_with(options) if to_typeset else None, mathjax_dir())
    try:
        # Pass 2: render the pages whose key changed; copy the others.
        def render_one(i: int) -> bool:
            prep = prepared[i]
            page = prep.page
            dest = tmp / page.out
            dest.parent.mkdir(parents=True, exist_ok=True)
            (tmp / source_copy_path(page)).write_bytes(page.src.read_bytes())
            if reused(prep):
                shutil.copyfile(out / page.out, dest)
                return False
            tools = _tools()
            ctx = page_context(prep, course, by_out, tools["md"], resolver, tools["lexer_for"])
            ctx.update(_common(course, options, ctx["root"], ctx["has_math"]))
            template = "doc.html" if page.kind == "markdown" else "page.html"
            dest.write_text(tools["env"].get_template(template).render(ctx), encoding="utf8")
            return True

        for prep, rendered in zip(prepared, fork_map(render_one, len(prepared), jobs)):
            (result.rendered if rendered else result.reused).append(prep.page.out)

        tools = _tools()
        index_html = tools["env"].get_template("index.html").render(
            _index_context(course, by_out, intro, tools["md"], resolver, options))
        (tmp / "index.html").write_text(index_html, encoding="utf8")
        typesetting.send([tmp / "index.html"] + [tmp / p for p in result.rendered])
        _write_assets(tmp, prepared, bool(with_math) and not options.mathjax_url)
        _write_search_index(tmp, prepared, course)
        figures = [(str(c.figure), c.figure_out) for _, chapters in course.parts
                   for c in chapters if c.figure]
        assets = _copy_images(tmp, every, figures)
        typesetting.finish()
        (tmp / STATE_FILE).write_text(json.dumps({"input": digest, "pages": new_keys,
                                                  "assets": assets,
                                                  "warnings": result.warnings.items},
                                                 sort_keys=True, indent=1) + "\n")
    except BaseException:
        typesetting.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap(tmp, out)
    return result


def _copy_images(tmp: Path, prepared: list[Prepared],
                 extra: list[tuple[str, str]] = ()) -> dict[str, str]:
    """Copy the images pages refer to (and the chapters' index figures); return
    {path in site: hash} for the state file."""
    seen: dict[str, str] = {}
    hashes = {}
    for source, dest in [a for prep in prepared for a in prep.assets] + list(extra):
        if seen.setdefault(dest, source) != source:
            raise BuildError(source, None, f"{seen[dest]} and {source} would both be "
                             f"written to {dest}")
        data = Path(source).read_bytes()
        target = tmp / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        hashes[dest] = [source, hashlib.sha256(data).hexdigest()]
    return hashes


def _assets_unchanged(state: dict) -> bool:
    """Images are not among the hashed inputs (they are found while rendering), so a
    no-op build also checks the ones the last build copied."""
    for source, sha in state.get("assets", {}).values():
        try:
            if hashlib.sha256(Path(source).read_bytes()).hexdigest() != sha:
                return False
        except OSError:
            return False
    return True


# Each process (the parent, or a forked worker) makes its Markdown converter, template
# environment and lexers once and reuses them for every page it renders.
_TOOLS: dict = {}


def _tools() -> dict:
    if _TOOLS.get("pid") != os.getpid():
        lexers: dict = {}

        def lexer_for(path: str):
            lang = language_for(path)
            return lexers.setdefault(lang["name"], lang["lexer"])
        _TOOLS.update(pid=os.getpid(), md=make_markdown(), env=jinja_env(), lexer_for=lexer_for)
    return _TOOLS


def _swap(tmp: Path, out: Path) -> None:
    """Put the new site in place: two renames, then the old copy is removed."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        if not (out / STATE_FILE).exists() and any(out.iterdir()):
            shutil.rmtree(tmp, ignore_errors=True)
            raise BuildError(out, None, "output folder exists and was not made by this "
                             "builder; refusing to replace it (choose another --out)")
    try:
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(out, None, f"cannot replace the output folder: {e.strerror}") from None
    shutil.rmtree(old, ignore_errors=True)


def _common(course: Course, options: Options, root: str, has_math: bool) -> dict:
    return {
        "course": course,
        "root": root,
        "has_math": has_math,
        "mathjax_url": options.mathjax_url or f"{root}static/mathjax/{MATHJAX_ENTRY}",
        # Not where the first formulas are typeset at build time: MathJax is then not
        # needed for the first screen, and its scripts, fetched and run while the page
        # is parsed, would only delay the first paint (by 8-90 ms, measured).
        "mathjax_preload": [] if options.mathjax_url or prerender_with(options) else
                           [f"{root}static/mathjax/{name}" for name in MATHJAX_PRELOAD],
        "chapter_count": sum(len(chapters) for _, chapters in course.parts),
    }


def _prepare_intro(course: Course, warnings: Warnings) -> Prepared | None:
    if not course.intro:
        return None
    from .course import Page
    page = Page(course.intro.resolve(), "index.html", "markdown",
                course.intro.name, None, title=course.title)
    return prepare(page, warnings, course.missing_images_are_errors)


def _index_context(course, by_out, intro, md, resolver, options) -> dict:
    from .render import image_size, is_pixel_art, render_docs, size_images
    intro_html = ""
    if intro:
        sizes = {dest: image_size(source) for source, dest in intro.assets}
        intro_html = "".join(size_images(render_docs(md, s.docs, heads, resolver, intro.target,
                                                     str(intro.page.src), s.docs_line), sizes)
                             for s, heads in zip(intro.sections, intro.anchors.heading_ids))
    parts = []
    for title, chapters in course.parts:
        rows = []
        for c in chapters:
            # The chapter's title already links to its intro page: list the rest.
            pages = [{"href": p.out, "title": by_out[p.out].title, "kind": p.kind}
                     for k, p in enumerate(c.pages)
                     if not (k == 0 and p.kind == "markdown" and by_out[p.out].title == c.title)]
            size = image_size(c.figure) if c.figure else None
            rows.append({"chapter": c, "href": c.pages[0].out if c.pages else "#",
                         "pages": pages, "figure": c.figure_out, "figure_size": size,
                         "pixel_art": is_pixel_art(size)})
        parts.append({"title": title, "chapters": rows})
    ctx = {"title": course.title, "intro_html": intro_html, "parts": parts, "page": None,
           "prev": None, "next": {"href": course.pages[0].out,
                                  "title": by_out[course.pages[0].out].title}
           if course.pages else None}
    ctx.update(_common(course, options, "", bool(intro and intro.has_math)))
    return ctx


def _write_assets(tmp: Path, prepared, with_mathjax: bool) -> None:
    static = tmp / "static"
    static.mkdir(exist_ok=True)
    for f in _tree(STATIC):
        dest = static / f.relative_to(STATIC)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest)
    css = (STATIC / "annogen.css").read_text(encoding="utf8")
    (static / "pygments.css").write_text(pygments_css(css), encoding="utf8")
    if with_mathjax:
        src = mathjax_dir()
        for name in MATHJAX_FILES:
            if (src / name).is_dir():
                shutil.copytree(src / name, static / "mathjax" / name,
                                ignore=shutil.ignore_patterns("all-packages.js"))
            else:
                (static / "mathjax" / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / name, static / "mathjax" / name)


def _write_search_index(tmp: Path, prepared, course: Course) -> None:
    """The index is a script, not JSON: a page opened from `file://` may load a script
    but may not `fetch` a file, so search works in both cases."""
    entries = [{"u": prep.page.out, "p": prep.title,
                "c": prep.page.chapter.title if prep.page.chapter else "",
                "s": prep.search} for prep in prepared]
    data = json.dumps(entries, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    (tmp / "static" / "search-index.js").write_text(
        f"window.ANNOGEN_SEARCH = {data};\n", encoding="utf8")
