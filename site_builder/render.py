r"""
# From a source file to a page

A page is made in two passes. The first, `prepare`, is cheap: it parses the file into
sections, applies the directives, finds the title, the anchors, the math and the text
for search, and checks every formula. The site needs this for *all* pages before it can
render *any* of them, because a cross-reference on one page must name an anchor on
another. The second pass, `render`, runs Markdown and Pygments and fills the template;
an incremental build skips it for pages whose inputs have not changed.
"""

from __future__ import annotations

import hashlib
import html
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from .course import Course, Page
from .directives import apply_directives
from .errors import BuildError, Warnings
from .highlight import highlight_sections, may_have_comment_math
from .mathtex import COMPLETE_MATH, check_math, mask_code, separate_display_math
from .parse import Section, comment_map, language_for, normalize_source, parse
from .xref import (Resolver, Target, heading_texts, page_anchors,
                   pycco_headings_to_markdown)

FRONT_MATTER = re.compile(r"\A\s*---\n(.*?)\n---[ \t]*\n", re.S)


@dataclass
class Prepared:
    page: Page
    text: str
    digest: str
    sections: list[Section]
    anchors: object
    title: str
    summary: str = ""
    has_math: bool = False  # in the prose
    maybe_comment_math: bool = False  # perhaps in a code comment
    target: Target | None = None
    search: list[dict] = field(default_factory=list)
    assets: list[tuple[str, str]] = field(default_factory=list)  # (source file, path in site)


def front_matter(section: Section) -> dict[str, str]:
    """`---` / `key: value` / `---` at the start of a page, as nn.labml.ai writes it."""
    m = FRONT_MATTER.match(section.docs)
    if not m:
        return {}
    section.docs = section.docs[m.end():]
    section.docs_line += m.group(0).count("\n")
    meta = {}
    for line in m.group(1).split("\n"):
        key, sep, value = line.partition(":")
        if sep:
            meta[key.strip()] = value.strip().strip("\"'")
    return meta


# Search shows snippets as plain text, so TeX source would show as it is written
# (`$$\operatorname{Attn}(Q, K, V)...`). Display formulas are left out; a short inline
# formula becomes readable text: Greek letters as letters, `\operatorname{Attn}` as
# Attn, other commands and braces dropped.
GREEK = {name: chr(code) for name, code in [
    ("alpha", 945), ("beta", 946), ("gamma", 947), ("delta", 948), ("epsilon", 949),
    ("varepsilon", 949), ("zeta", 950), ("eta", 951), ("theta", 952), ("iota", 953),
    ("kappa", 954), ("lambda", 955), ("mu", 956), ("nu", 957), ("xi", 958), ("pi", 960),
    ("rho", 961), ("sigma", 963), ("tau", 964), ("phi", 966), ("varphi", 966),
    ("chi", 967), ("psi", 968), ("omega", 969), ("Gamma", 915), ("Delta", 916),
    ("Theta", 920), ("Lambda", 923), ("Sigma", 931), ("Phi", 934), ("Psi", 936),
    ("Omega", 937), ("nabla", 8711), ("sum", 8721), ("infty", 8734), ("cdot", 183),
    ("times", 215), ("approx", 8776), ("leq", 8804), ("geq", 8805), ("in", 8712),
    ("sim", 8764), ("odot", 8857), ("varnothing", 8709), ("to", 8594), ("leftarrow", 8592)]}
DISPLAY_MATH = re.compile(r"\$\$.*?\$\$|\\\[.*?\\\]|\\begin\{([a-zA-Z]+\*?)\}.*?\\end\{\1\}", re.S)
INLINE_MATH = re.compile(r"(?<!\\)\$((?:\\.|[^\\$])+?)\$|\\\((.+?)\\\)", re.S)


def tex_to_text(tex: str) -> str:
    tex = re.sub(r"\\(?:operatorname|mathrm|text|mathbf|mathcal|boldsymbol|hat|tilde|bar)\s*"
                 r"\{([^{}]*)\}", r"\1", tex)
    tex = re.sub(r"\\([A-Za-z]+)", lambda m: GREEK.get(m.group(1), " "), tex)
    tex = re.sub(r"\\.|[{}]", "", tex)
    return re.sub(r"\s+", " ", tex).strip()


def without_tex(text: str) -> str:
    text = DISPLAY_MATH.sub(" ", text)
    text = INLINE_MATH.sub(lambda m: tex_to_text(m.group(1) or m.group(2)), text)
    return text.replace("\\$", "$")


def plain_text(docs: str) -> str:
    """Markdown reduced to words, for the search index."""
    text = re.sub(r"```.*?```", " ", docs, flags=re.S)
    text = without_tex(text)
    text = re.sub(r"\[\[([^\]|]+\|)?([^\]]+)\]\]", r"\2", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    # Markup characters go; underscores stay, they belong to names (`score_labels`,
    # `__main__.py`) far more often than to emphasis.
    text = re.sub(r"[#*`>|]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def prepare(page: Page, warnings: Warnings, missing_images_are_errors: bool = True) -> Prepared:
    path = str(page.src)
    try:
        text = page.src.read_text(encoding="utf8")
    except UnicodeDecodeError as e:
        raise BuildError(path, None, f"not UTF-8 text (byte {e.start}): {e.reason}") from None
    except OSError as e:
        raise BuildError(path, None, f"cannot read: {e.strerror}") from None
    if page.kind == "markdown":
        lines = text.split("\n")
        sections = [Section(text, 1, [], len(lines) + 1)]
        code = None
    else:
        sections = parse(text, path, warnings)
        comments = comment_map(normalize_source(text), path) if language_for(path) and page.src.suffix == ".py" else None
        apply_directives(sections, path, comments)
        code = normalize_source(text) if page.src.suffix == ".py" else None
    meta = front_matter(sections[0]) if sections else {}
    for s in sections:
        s.docs = pycco_headings_to_markdown(s.docs)
        check_math(s.docs, path, s.docs_line)
    anchors = page_anchors(sections, code)

    first_headings = heading_texts(sections[0].docs) if sections else []
    title = page.title or meta.get("title") or (
        re.sub(r"[`*_]", "", first_headings[0]) if first_headings else page.src.name)
    has_math = any(p.search(mask_code(s.docs)) for s in sections for p in COMPLETE_MATH)
    prepared = Prepared(page, text, hashlib.sha256(text.encode()).hexdigest(), sections,
                        anchors, title, meta.get("summary", ""), has_math)
    if page.kind == "code":  # whether a code comment holds math is known after highlighting
        prepared.maybe_comment_math = may_have_comment_math(
            "\n".join(ln for s in sections for ln in s.code_lines))
    prepared.target = Target(page.src, page.rel_src, page.out, anchors.all, anchors.labels,
                             re.sub(r"[`*_]", "", title))
    prepared.assets = [a for s in sections for a in local_images(
        s, page, None if missing_images_are_errors else warnings)]
    for s, anchor, heads in zip(sections, anchors.section_ids, anchors.heading_ids):
        words = plain_text(s.docs)
        if words:
            heading = heading_texts(s.docs)[0] if heads else title
            prepared.search.append({"a": anchor, "h": re.sub(r"[`*$\\]", "", without_tex(heading)),
                                    "t": words})
    return prepared


# === Images ===
#
# A chapter's figures are files next to its sources (`![samples](figures/samples.png)`).
# We copy each image a page refers to into the site at the same relative place, so the
# link works served and from disk. In a course a missing image is a build error, like a
# broken link; when rendering any files (paths mode) it is a warning and the page keeps
# the reference as written.

IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
HTML_IMAGE = re.compile(r"<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.I)


def local_images(section: Section, page: Page,
                 warnings: Warnings | None = None) -> list[tuple[str, str]]:
    masked = mask_code(section.docs)
    found = []
    for m in [*IMAGE.finditer(masked), *HTML_IMAGE.finditer(masked)]:
        ref = section.docs[m.start(1): m.end(1)]
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:|/|#", ref):
            continue  # a URL, an absolute path or an anchor: not ours to copy
        line = section.docs_line + masked.count("\n", 0, m.start())
        source = (page.src.parent / ref).resolve()
        if not source.is_file():
            if warnings is None:
                raise BuildError(page.src, line, f"missing image {ref}")
            warnings.warn(page.src, line, f"missing image {ref}")
            continue
        dest = posixpath.normpath(posixpath.join(posixpath.dirname(page.out), ref))
        if dest.startswith("../") or dest == "..":
            raise BuildError(page.src, line, f"image {ref} lies outside the site; keep figures "
                             "next to or below the page that shows them")
        found.append((str(source), dest))
    return found


def image_size(path: str | Path) -> tuple[int, int] | None:
    """Width and height of a PNG or GIF, from its header (no imaging library needed)."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    return None


# A grid of generated samples is often a few hundred pixels wide: shown at its natural
# size it is a stamp, and scaled up smoothly it is a blur. Images this small are drawn
# with hard pixel edges (`image-rendering: pixelated`) and at least a readable width.
PIXEL_ART_MAX = 512


def is_pixel_art(size: tuple[int, int] | None) -> bool:
    return bool(size) and max(size) <= PIXEL_ART_MAX


IMG_TAG = re.compile(r'<img\b([^>]*?)\bsrc="([^"]+)"([^>]*)>')


def size_images(html_text: str, sizes: dict[str, tuple[int, int] | None]) -> str:
    """Give each local image its width and height (no layout jump while it loads) and
    the pixel-art class when it is small."""
    def fix(m: re.Match) -> str:
        size = sizes.get(html.unescape(m.group(2)))
        if not size:
            return m.group(0)
        extra = f' width="{size[0]}" height="{size[1]}"'
        if is_pixel_art(size) and "class=" not in m.group(1) + m.group(3):
            extra += ' class="pixel-art"'
        return f"<img{m.group(1)}src=\"{m.group(2)}\"{m.group(3).rstrip(' /')}{extra}>"
    return IMG_TAG.sub(fix, html_text)


# === Rendering the prose ===
#
# Each section's Markdown goes through the shared converter: cross-references become
# links, display math gets its blank lines, and after conversion each heading receives
# the id that `prepare` already promised to the rest of the site.

HEADING_TAG = re.compile(r"<h([1-6])>")

# A collapsed block, `<details><summary>Lab notes</summary> ... </details>`, holds
# Markdown like the rest of the page. Python-Markdown leaves the inside of an HTML
# block raw unless it carries `markdown="1"` (the md_in_html extension), so we add it.
DETAILS = re.compile(r"^([ \t]*)<details\b(?![^>]*\bmarkdown=)([^>]*)>", re.M | re.I)


def markdown_in_details(docs: str) -> str:
    if "<details" not in docs.lower():
        return docs
    masked = mask_code(docs)
    out, pos = [], 0
    for m in DETAILS.finditer(masked):
        out.append(docs[pos: m.start()])
        out.append(f'{m.group(1)}<details{docs[m.start(2): m.end(2)]} markdown="1">')
        pos = m.end()
    out.append(docs[pos:])
    return "".join(out)


def render_docs(md, docs: str, ids: list[str], resolver: Resolver, here: Target,
                path: str, first_line: int) -> str:
    docs = resolver.replace(docs, here, path, first_line)
    md.reset()
    out = md.convert(separate_display_math(markdown_in_details(docs)))
    queue = iter(ids)

    def add_id(m: re.Match) -> str:
        nid = next(queue, None)
        return f'<h{m.group(1)} id="{nid}">' if nid else m.group(0)
    return HEADING_TAG.sub(add_id, out)


def page_context(prep: Prepared, course: Course, all_prepared: dict[str, Prepared],
                 md, resolver: Resolver, lexer_for) -> dict:
    page = prep.page
    path = str(page.src)
    root = "../" * page.out.count("/")
    sections = []
    comment_math: list = []
    code_html = (highlight_sections(prep.sections, lexer_for(path), comment_math)
                 if page.kind == "code" else [""] * len(prep.sections))
    here = posixpath.dirname(page.out)
    sizes = {posixpath.relpath(dest, here or "."): image_size(source) for source, dest in prep.assets}
    for s, sid, heads, defs, code in zip(prep.sections, prep.anchors.section_ids,
                                         prep.anchors.heading_ids,
                                         prep.anchors.definition_ids, code_html):
        sections.append({
            "index": s.index,
            "anchor": sid,
            "extra_ids": [d for d in defs],
            "docs_html": size_images(render_docs(md, s.docs, heads, resolver, prep.target,
                                                 path, s.docs_line), sizes),
            "code_html": code,
        })
    order = course.pages
    i = order.index(page)

    def link(other: Page | None) -> dict | None:
        if other is None:
            return None
        return {"href": posixpath.relpath(other.out, posixpath.dirname(page.out) or "."),
                "title": all_prepared[other.out].title}
    chapter = page.chapter
    chapter_pages = [link(p) | {"current": p is page} for p in chapter.pages] if chapter else []
    return {
        "page": page,
        "title": prep.title,
        "summary": prep.summary,
        "root": root,
        "sections": sections,
        "has_math": prep.has_math or bool(comment_math),
        "prev": link(order[i - 1] if i > 0 else None),
        "next": link(order[i + 1] if i + 1 < len(order) else None),
        "chapter": chapter,
        "chapter_link": link(chapter.pages[0]) if chapter and chapter.pages else None,
        "chapter_pages": chapter_pages,
        "source_href": posixpath.basename(source_copy_path(page)),
        "source_name": page.rel_src,
        "run": page.run or (chapter.run if chapter and page.kind == "markdown" else None),
    }


def source_copy_path(page: Page) -> str:
    """Where the raw source is copied for "View source" (a `.txt` file, so that browsers
    show it as text over `file://` instead of offering a download)."""
    return page.out[: -len(".html")] + page.src.suffix + ".txt"


def escape(text: str) -> str:
    return html.escape(text, quote=True)
