r"""
# The course: which pages, in which order

A course is read in order, so the order is written down once, in a manifest
(`src/annogen/course.toml`): the course title, then **parts**, each a list of
**chapters** with a title, a one-line summary and an estimated time. A chapter points
at a folder; the folder's `README.md` (Markdown with math; another file with `intro =`)
is the chapter's intro page and its source files follow, in the order the manifest gives or else by name with
`__init__.py` first.

Everything the templates need for navigation — breadcrumbs, prev/next, the syllabus on
the index page — is derived from this one list. When the builder is pointed at
arbitrary files instead (`python build.py PATH...`, the way the `pycco` command is
used), the same structures are made from the files themselves: one part, one chapter
per folder.
"""

from __future__ import annotations

import os
import posixpath
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BuildError
from .parse import language_for

SKIP_DIRS = {"__pycache__", ".git", ".venv", "venv", "node_modules", "site"}


@dataclass(eq=False)  # pages are compared by identity
class Page:
    src: Path  # absolute
    out: str  # path in the site, posix, e.g. "site-builder/parse.html"
    kind: str  # "code" or "markdown"
    rel_src: str  # path from the project root, posix
    chapter: "Chapter | None" = None
    title: str | None = None  # from the manifest; else found in the file
    run: str | None = None


@dataclass(eq=False)
class Chapter:
    id: str
    title: str
    summary: str = ""
    time: str = ""
    part: str = ""
    number: str = ""
    run: str | None = None
    pages: list[Page] = field(default_factory=list)
    figure: Path | None = None  # the chapter's main result, shown on its index card
    figure_out: str = ""  # where the figure goes in the site


@dataclass
class Course:
    title: str
    root: Path
    tagline: str = ""
    intro: Path | None = None
    parts: list[tuple[str, list[Chapter]]] = field(default_factory=list)
    manifest: Path | None = None
    # A course keeps its figures next to its pages, so a missing one is an error; files
    # rendered the way `pycco` is used often show images that live elsewhere (generated
    # at run time), so there it is a warning (an error with --strict).
    missing_images_are_errors: bool = True

    @property
    def pages(self) -> list[Page]:
        return [p for _, chapters in self.parts for c in chapters for p in c.pages]


# === The run command of a file ===
#
# A file is runnable when it has an `if __name__ == "__main__":` block (or is a
# `__main__.py`). Inside a package we give the `python -m` form, which is how the
# chapters are meant to be run; a loose script is run by its path.

MAIN_GUARD = re.compile(r"^if\s+__name__\s*==\s*['\"]__main__['\"]\s*:", re.M)


def module_name(path: Path) -> str | None:
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists():
        parts.insert(0, folder.name)
        folder = folder.parent
    if len(parts) == 1:
        return None
    if parts[-1] == "__main__":
        parts.pop()
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def run_command(path: Path, root: Path) -> str | None:
    if path.suffix != ".py":
        return None
    text = path.read_text(encoding="utf8", errors="replace")
    if path.name != "__main__.py" and not MAIN_GUARD.search(text):
        return None
    module = module_name(path)
    if module:
        return f"python -m {module}"
    return f"python {posixpath_rel(path, root)}"


def posixpath_rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def out_name(rel: str) -> str:
    """`model.py` -> `model.html`, `README.md` -> `index.html` (a folder's intro)."""
    head, _, name = rel.rpartition("/")
    name = "index.html" if name.lower() == "readme.md" else re.sub(r"\.[^.]*$", "", name) + ".html"
    return f"{head}/{name}" if head else name


def _sort_key(path: Path) -> tuple:
    return (path.name != "__init__.py", path.name != "__main__.py", path.as_posix())


def source_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in filenames:
            if language_for(name):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: (p.parent.as_posix(), _sort_key(p)))


def _check_unique(pages: list[Page], where: Path) -> None:
    seen: dict[str, Page] = {}
    for p in pages:
        if p.out in seen:
            raise BuildError(where, None, f"{seen[p.out].rel_src} and {p.rel_src} would both "
                             f"be written to {p.out}")
        seen[p.out] = p


# === Reading the manifest ===

def load_course(manifest: Path) -> Course:
    try:
        data = tomllib.loads(manifest.read_text(encoding="utf8"))
    except FileNotFoundError:
        raise BuildError(manifest, None, "course manifest not found") from None
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise BuildError(manifest, int(m.group(1)) if m else None, f"invalid TOML: {e}") from None
    head = data.get("course", {})
    root = (manifest.parent / head.get("root", ".")).resolve()
    course = Course(title=head.get("title", "Course"), tagline=head.get("tagline", ""),
                    root=root, manifest=manifest)
    if head.get("intro"):
        course.intro = root / head["intro"]
        if not course.intro.exists():
            raise BuildError(manifest, None, f"intro file {head['intro']} does not exist")
    ids = set()
    for p_index, part in enumerate(data.get("parts", []), 1):
        chapters = []
        for c_index, entry in enumerate(part.get("chapters", []), 1):
            for key in ("id", "title", "path"):
                if key not in entry:
                    raise BuildError(manifest, None, f"chapter {c_index} of part {p_index} "
                                     f"has no '{key}'")
            if entry["id"] in ids or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", entry["id"]):
                raise BuildError(manifest, None, f"chapter id '{entry['id']}' must be unique and "
                                 "lower-case letters, digits, - or _")
            ids.add(entry["id"])
            folder = root / entry["path"]
            if not folder.exists():
                raise BuildError(manifest, None, f"chapter '{entry['id']}': path "
                                 f"{entry['path']} does not exist")
            chapter = Chapter(id=entry["id"], title=entry["title"], summary=entry.get("summary", ""),
                              time=entry.get("time", ""), part=part.get("title", ""),
                              number=f"{p_index}.{c_index}")
            readme = folder / entry.get("intro", "README.md")
            if "intro" in entry and not readme.is_file():
                raise BuildError(manifest, None, f"chapter '{chapter.id}': intro {entry['intro']} "
                                 "does not exist")
            if readme.exists():
                chapter.pages.append(Page(readme, f"{chapter.id}/index.html", "markdown",
                                          posixpath_rel(readme, root), chapter,
                                          title=entry["title"]))
            files = ([folder / f for f in entry["files"]] if "files" in entry
                     else source_files(folder))
            for f in files:
                if not f.exists():
                    raise BuildError(manifest, None, f"chapter '{chapter.id}': file {f} does not exist")
                rel = os.path.relpath(f.resolve(), folder.resolve()).replace(os.sep, "/")
                rel = rel.replace("../", "")
                chapter.pages.append(Page(f.resolve(), f"{chapter.id}/{out_name(rel)}", "code",
                                          posixpath_rel(f, root), chapter,
                                          run=run_command(f, root)))
            if "figure" in entry:
                # Relative to the chapter folder, like the figures its pages show.
                figure = folder / entry["figure"]
                if not figure.is_file():
                    raise BuildError(manifest, None, f"chapter '{chapter.id}': figure "
                                     f"{entry['figure']} does not exist")
                chapter.figure = figure.resolve()
                chapter.figure_out = posixpath.normpath(f"{chapter.id}/{entry['figure']}")
                if not chapter.figure_out.startswith(f"{chapter.id}/"):
                    raise BuildError(manifest, None, f"chapter '{chapter.id}': figure "
                                     f"{entry['figure']} must lie in the chapter folder")
            main = folder / "__main__.py"
            chapter.run = entry.get("run") or (run_command(main, root) if main.exists() else None)
            chapters.append(chapter)
        course.parts.append((part.get("title", ""), chapters))
    _check_unique(course.pages, manifest)
    return course


# === Any files, the way `pycco` is used ===

def course_from_paths(paths: list[Path], title: str = "Documentation") -> Course:
    files: list[Path] = []
    for p in paths:
        if not p.exists():
            raise BuildError(p, None, "no such file or folder")
        if p.is_dir():
            files.extend(source_files(p))
            files.extend(p / name for name in ("README.md",) if (p / name).is_file())
        elif language_for(p.name) or p.suffix.lower() == ".md":
            files.append(p)
        else:
            raise BuildError(p, None, "unsupported file type (Pycco has no language for it)")
    if not files:
        raise BuildError(paths[0] if paths else Path("."), None, "no source files found")
    files = list(dict.fromkeys(f.resolve() for f in files))
    root = Path(os.path.commonpath([f.parent for f in files]))
    course = Course(title=title, root=root, missing_images_are_errors=False)
    # A README.md at the top is the index page's introduction, as in a course.
    top_readme = [f for f in files if f.parent == root and f.name.lower() == "readme.md"]
    if top_readme:
        course.intro = top_readme[0]
        files.remove(top_readme[0])
    by_folder: dict[str, Chapter] = {}
    for f in files:
        rel = f.relative_to(root).as_posix()
        folder = rel.rpartition("/")[0]
        chapter = by_folder.get(folder)
        if chapter is None:
            chapter = by_folder[folder] = Chapter(id=folder or ".", title=folder or root.name)
        kind = "markdown" if f.suffix.lower() == ".md" else "code"
        chapter.pages.append(Page(f, out_name(rel), kind, rel, chapter, run=run_command(f, root)))
    course.parts.append(("", list(by_folder.values())))
    _check_unique(course.pages, root)
    return course
