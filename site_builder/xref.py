r"""
# Anchors and cross-references

Every section of a page can be linked to. Pycco numbers them (`#section-3`), which
breaks as soon as a section is added above; we keep those ids so old links still work,
and give each section stable names as well:

- each Markdown heading gets an id made from its text (`## The commitment loss` →
  `#the-commitment-loss`), and so does Pycco's `=== Name ===` heading line;
- each class and function gets its qualified name (`#VectorQuantizer.forward`).

A cross-reference is written `[[file.py]]`, `[[file.py#name]]`, `[[#name]]` (this page)
or with a label, `[[file.py#name|the quantiser]]`. The file is looked up next to the
current file first, then by its path from the project root, then by a unique file name
anywhere on the site. An unknown file, an ambiguous name or a missing anchor is a build
error with file and line: a course whose links rot is worse than one without links.
"""

from __future__ import annotations

import ast
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BuildError
from .mathtex import mask_code
from .parse import Section, python_ast

XREF = re.compile(r"(?<!`)\[\[([^\]\n]+?)\]\]")
ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
PYCCO_HEADING = re.compile(r"^(=+)[ \t]*([^=\n]+?)[ \t]*=*[ \t]*$")


def slugify(text: str) -> str:
    """A heading's text as a URL fragment: lower case, words joined by hyphens."""
    text = re.sub(r"\$[^$]*\$", "", text)  # formulas make poor ids
    text = re.sub(r"<[^>]+>|[`*_\[\]()]", "", text)
    words = re.findall(r"[\w.-]+", text.lower())
    return "-".join(w.strip("-.") for w in words if w.strip("-.")) or "section"


def pycco_headings_to_markdown(docs: str) -> str:
    """`=== Name ===` becomes a Markdown heading (one level per `=`, as Pycco does)."""
    def heading(m: re.Match) -> str:
        return "#" * min(len(m.group(1)), 6) + " " + m.group(2)
    masked = mask_code(docs).split("\n")
    lines = docs.split("\n")
    for i, ln in enumerate(masked):
        if ln.strip().startswith("==="):
            lines[i] = PYCCO_HEADING.sub(heading, ln.strip())
    return "\n".join(lines)


def heading_texts(docs: str) -> list[str]:
    """The ATX headings of a docs block, in order, skipping code blocks. The text is
    taken from the original line, so a code span inside a heading keeps its words."""
    return [m.group(2) for ln, orig in zip(mask_code(docs).split("\n"), docs.split("\n"))
            if ATX.match(ln) and (m := ATX.match(orig))]


@dataclass
class PageAnchors:
    """The names a page answers to, and which section each name belongs to."""
    section_ids: list[str] = field(default_factory=list)  # primary id per section
    heading_ids: list[list[str]] = field(default_factory=list)  # per section, per heading
    definition_ids: list[list[str]] = field(default_factory=list)  # per section
    all: set[str] = field(default_factory=set)
    # What a reference without its own label shows: a heading's text, or a class or
    # function name in code font, rather than the raw `file.py#anchor`.
    labels: dict[str, str] = field(default_factory=dict)

    def unique(self, name: str) -> str:
        base, n = name, 2
        while name in self.all:
            name, n = f"{base}-{n}", n + 1
        self.all.add(name)
        return name


def definitions(code: str) -> list[tuple[str, int]]:
    """Qualified names and first lines of the classes and functions of a Python file."""
    try:
        tree = python_ast(code, "<definitions>")
    except BuildError:
        return []
    out = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                out.append((name, first))
                if isinstance(child, ast.ClassDef):
                    walk(child, name + ".")
    walk(tree, "")
    return out


def page_anchors(sections: list[Section], code: str | None) -> PageAnchors:
    anchors = PageAnchors()
    for s in sections:
        anchors.all.add(f"section-{s.index}")
    defs = definitions(code) if code is not None else []
    for s in sections:
        texts = heading_texts(s.docs)
        ids = [anchors.unique(slugify(h)) for h in texts]
        anchors.heading_ids.append(ids)
        shown = set(s.linenos)
        mine = [(name, line) for name, line in defs if line in shown]
        here = [anchors.unique(name) for name, _ in mine]
        anchors.definition_ids.append(here)
        anchors.section_ids.append((ids or here or [f"section-{s.index}"])[0])
        for i, text in zip(ids, texts):
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link inside a label
            anchors.labels[i] = re.sub(r"[ \t]+#+$", "", text).strip()
        for i, (name, line) in zip(here, mine):
            anchors.labels[i] = f"`{name}`"
        first = (texts[:1] and anchors.labels[ids[0]]) or (here[:1] and anchors.labels[here[0]])
        if first:
            anchors.labels[f"section-{s.index}"] = first
    return anchors


# === Resolving a reference ===

@dataclass
class Target:
    src: Path  # absolute path of the source file
    rel_src: str  # its path from the project root, posix
    out: str  # the page's path in the site, posix
    anchors: set[str]
    labels: dict[str, str] = field(default_factory=dict)  # anchor -> readable label
    title: str = ""  # the page's title, the label of a reference to the whole page


class Resolver:
    def __init__(self, targets: list[Target]):
        self.targets = targets
        self.by_src = {t.src.resolve(): t for t in targets}

    def find(self, name: str, here: Target, path: str, line: int) -> Target:
        if not name:
            return here
        near = (here.src.parent / name).resolve()
        if near in self.by_src:
            return self.by_src[near]
        exact = [t for t in self.targets if t.rel_src == name]
        if len(exact) == 1:
            return exact[0]
        ends = [t for t in self.targets if t.rel_src.endswith("/" + name) or t.rel_src == name]
        if len(ends) == 1:
            return ends[0]
        if ends:
            options = ", ".join(sorted(t.rel_src for t in ends))
            raise BuildError(path, line, f"ambiguous cross-reference [[{name}]]: matches {options}")
        raise BuildError(path, line, f"broken cross-reference [[{name}]]: no such file on the site")

    def link(self, ref: str, here: Target, path: str, line: int) -> tuple[str, str]:
        """Resolve `file#anchor|label`; returns (href, label)."""
        target, _, label = ref.partition("|")
        name, _, anchor = target.strip().partition("#")
        page = self.find(name.strip(), here, path, line)
        if anchor and anchor not in page.anchors:
            raise BuildError(path, line, f"broken cross-reference [[{target.strip()}]]: "
                             f"{page.rel_src} has no anchor '{anchor}'")
        href = posixpath.relpath(page.out, posixpath.dirname(here.out) or ".")
        if page is here:
            href = "" if anchor else posixpath.basename(page.out)
        if anchor:
            href += "#" + anchor
        if label.strip():
            return href, label.strip()
        # No label given: a readable one (the heading, the definition's name, the page's
        # title); the raw target only when there is nothing better.
        readable = page.labels.get(anchor) if anchor else page.title
        return href, readable or target.strip()

    def replace(self, docs: str, here: Target, path: str, first_line: int,
                hrefs: list[str] | None = None) -> str:
        """Turn every `[[...]]` in a docs block into a Markdown link (and note its href)."""
        masked = mask_code(docs)
        out, pos = [], 0
        for m in XREF.finditer(masked):
            line = first_line + masked.count("\n", 0, m.start())
            href, label = self.link(docs[m.start(1): m.end(1)], here, path, line)
            if hrefs is not None:  # the label too: a renamed heading changes this page
                hrefs.append(f"{href} {label}")
            out.append(docs[pos: m.start()])
            out.append(f"[{label}]({href})")
            pos = m.end()
        out.append(docs[pos:])
        return "".join(out)

    def check(self, docs: str, here: Target, path: str, first_line: int) -> list[str]:
        """Resolve every reference (raising on a broken one); return the hrefs."""
        hrefs: list[str] = []
        self.replace(docs, here, path, first_line, hrefs)
        return hrefs
