r"""
# Splitting a source file into sections

A page of this site is a list of **sections**: a piece of prose (Markdown) and the code
that follows it. Pycco already knows how to cut a file this way: a run of comment lines
is prose, the code after it belongs to it, and a new section starts at every `def`,
`class` or decorator line. We import Pycco's `parse` and its language table and keep
that logic as it is.

What Pycco gets wrong is the Python docstring. It looks for lines that *start or end*
with three double quotes, which breaks on a docstring closed on its own first line
(Pycco issues #108 and #120), on triple quotes inside ordinary strings, and
it strips every docstring line flat, destroying nested lists and indented code blocks
(#105, #32). So before Pycco sees a Python file we find the real docstrings with the
`tokenize` module — which knows exactly where every string starts and ends — and
rewrite each one as a block of `#` comments **with the same number of lines**. Pycco
then parses a file it handles well, and line numbers still match the original file.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import tokenize
from dataclasses import dataclass, field

from pycco.languages import supported_languages
from pycco.main import parse as pycco_parse

from .errors import BuildError, Warnings

# Pycco compiles its language table at import time (comment matcher, Pygments lexer).
# For Python we hand it a copy *without* the triple-quote delimiters: docstrings arrive as
# comments, so Pycco's own docstring handling never runs.
PYTHON = dict(supported_languages[".py"])
PYTHON.pop("multistart", None)
PYTHON.pop("multiend", None)


def language_for(path: str) -> dict | None:
    """The Pycco language entry for a file name, or `None` if Pycco does not know it."""
    for ext, lang in supported_languages.items():
        if path.endswith(ext):
            return PYTHON if ext == ".py" else lang
    return None


# A section, with the line numbers of the original file kept for error messages and
# for the line numbers shown beside the code. `marks` holds one highlight mark per code
# line ('' for none, or `add`, `del`, `hl`); the directives module fills it in.
@dataclass
class Section:
    docs: str
    docs_line: int
    code_lines: list[str]
    code_start: int
    docs_from_docstring: bool = False
    marks: list[str] = field(default_factory=list)
    index: int = 0
    # The file's line number of each code line. Usually consecutive from `code_start`,
    # but a function's `def` line sits above its docstring: see `keep_headers_with_docstrings`.
    linenos: list[int] = field(default_factory=list)

    def __post_init__(self):
        if not self.linenos:
            self.linenos = list(range(self.code_start, self.code_start + len(self.code_lines)))

    @property
    def code(self) -> str:
        return "\n".join(self.code_lines)

    def is_empty(self) -> bool:
        return not self.docs.strip() and not self.code.strip()


# === Finding docstrings ===
#
# A docstring here is any triple-quoted string that is a statement of its own, starting
# its line and ending it (a comment may follow). That covers module, class and function
# docstrings and the "prose strings" some authors put between statements, and it
# excludes `x = """..."""`, strings passed as arguments and `x = 1; """..."""`.
#
# Python's own parser finds them: `ast` knows every string statement and where it
# starts and ends, at C speed. We take the text *as written* from the source (so `\frac`
# stays `\frac` whatever the prefix), between the opening and closing quotes.

@dataclass
class Docstring:
    start: int  # first line, 1-based
    end: int  # last line
    col: int  # column of the string prefix
    prefix: str  # `r`, `u`, `` ...
    quote: str  # three double or three single quotes
    body: str  # the text between the quotes, as written in the file


@functools.lru_cache(maxsize=16)
def _ast(code: str) -> ast.Module | SyntaxError:
    try:
        return ast.parse(code)
    except SyntaxError as e:
        return e


def python_ast(code: str, path: str) -> ast.Module:
    """Parse once per source text; the anchors module asks for the same tree."""
    tree = _ast(code)
    if isinstance(tree, SyntaxError):
        raise BuildError(path, tree.lineno, f"cannot parse Python source: {tree.msg}")
    return tree


def statements(node: ast.AST):
    """Every statement below `node`: docstrings and definitions are statements, so we
    need not visit the (many more) expression nodes that `ast.walk` would."""
    for name in ("body", "orelse", "finalbody", "handlers", "cases"):
        for child in getattr(node, name, ()):
            yield child
            yield from statements(child)


OPENING = re.compile(r"([A-Za-z]{0,2})(\"\"\"|\'\'\')")


def find_docstrings(code: str, path: str = "<string>") -> list[Docstring]:
    lines = code.split("\n")
    found = []
    for node in statements(python_ast(code, path)):
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            continue
        v = node.value
        # `ast` counts columns in UTF-8 bytes.
        first = lines[v.lineno - 1].encode()
        last = lines[v.end_lineno - 1].encode()
        head, text = first[: v.col_offset].decode(), first[v.col_offset:].decode()
        tail = last[v.end_col_offset:].decode().strip()
        m = OPENING.match(text)
        if head.strip() or (tail and not tail.startswith("#")) or not m:
            continue
        prefix, quote = m.groups()
        if v.lineno == v.end_lineno:
            source = first[v.col_offset: v.end_col_offset].decode()
        else:
            source = "\n".join([text, *lines[v.lineno: v.end_lineno - 1],
                                last[: v.end_col_offset].decode()])
        body = source[len(prefix) + 3: -3]
        if "b" in prefix.lower() or not source.endswith(quote) or quote in body:
            continue  # bytes, or implicit concatenation of several strings
        found.append(Docstring(v.lineno, v.end_lineno, len(head), prefix, quote, body))
    return sorted(found, key=lambda d: d.start)


def comment_map(code: str, path: str) -> dict[int, str]:
    """Line number -> the `#` comment on that line, from `tokenize` (so that a `#` inside
    a string is not taken for one). Only files that contain a line marker need it."""
    if "[!code" not in code:
        return {}
    try:
        tokens = tokenize.generate_tokens(io.StringIO(code).readline)
        return {t.start[0]: t.string for t in tokens if t.type == tokenize.COMMENT}
    except (tokenize.TokenError, SyntaxError) as e:
        raise BuildError(path, None, f"cannot tokenize Python source: {e.args[0]}") from None


def dedent_docstring(body: str) -> list[str]:
    """Split a docstring body into lines and remove the common indentation.

    Like `inspect.cleandoc`, the first line is left alone and the others lose only the
    indentation they *all* share, so a nested list or an indented code block keeps its
    own indentation (Pycco strips every line flat). Unlike `cleandoc` we keep every
    line, blank ones included, so that line numbers survive."""
    lines = body.split("\n")
    rest = [ln for ln in lines[1:] if ln.strip()]
    margin = min((len(ln) - len(ln.lstrip()) for ln in rest), default=0)
    out = [lines[0].strip()]
    for ln in lines[1:]:
        out.append(ln[margin:].rstrip() if ln.strip() else "")
    return out


MATH_HINT = re.compile(r"\$|\\[A-Za-z]+")


def definition_headers(code: str, path: str) -> dict[int, int]:
    """Docstring start line -> first line of the `class`/`def` (or its first decorator)
    whose docstring it is."""
    headers = {}
    for node in statements(python_ast(code, path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str) and first.lineno > node.lineno):
                headers[first.lineno] = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return headers


def docstrings_to_comments(code: str, path: str, warnings: Warnings | None = None
                           ) -> tuple[str, set[int]]:
    """Rewrite every docstring as `#` comments, line for line.

    Returns the new source and the set of line numbers that were docstring lines."""
    docstrings = find_docstrings(code, path)
    lines = code.split("\n")
    doc_lines: set[int] = set()
    for d in docstrings:
        # A non-raw docstring with math in it has already been changed by Python:
        # `"\frac"` holds a form feed and `"\beta"` a backspace. The page shows the
        # text as written, but `help()` and the reader's copy do not, so we warn.
        if "r" not in d.prefix.lower() and MATH_HINT.search(d.body):
            if warnings is not None:
                warnings.warn(path, d.start, 'docstring contains math but is not a raw string '
                              '(write r""" so that backslashes survive)')
        indent = " " * d.col
        for offset, text in enumerate(dedent_docstring(d.body)):
            lines[d.start - 1 + offset] = f"{indent}# {text}" if text else f"{indent}#"
            doc_lines.add(d.start + offset)
    return "\n".join(lines), doc_lines


# === Parsing ===
#
# Pycco drops a `#!` first line and a `coding:` line by removing them from its list of
# lines, which shifts every line number after them. We blank those lines instead, so
# the numbering is untouched, and then walk Pycco's sections counting lines: each docs
# line and each code line Pycco produced is exactly one line of the file.

def normalize_source(code: str) -> str:
    r"""What Python itself ignores or treats alike: a byte-order mark, and `\r\n` or a
    lone `\r` as line ends. Line numbers stay those an editor shows."""
    return code.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def parse(code: str, path: str, warnings: Warnings | None = None) -> list[Section]:
    language = language_for(path)
    if language is None:
        raise BuildError(path, None, "unsupported file type (Pycco has no language for it)")
    code = normalize_source(code)
    doc_lines: set[int] = set()
    lines = code.split("\n")
    if lines and lines[0].startswith("#!"):
        lines[0] = ""
    headers: dict[int, int] = {}
    if language is PYTHON:
        for i, ln in enumerate(lines[:2]):
            if re.search(r"coding[:=]\s*([-\w.]+)", ln) and ln.lstrip().startswith("#"):
                lines[i] = ""
        headers = definition_headers("\n".join(lines), path)
        code, doc_lines = docstrings_to_comments("\n".join(lines), path, warnings)
    else:
        code = "\n".join(lines)

    raw_sections = pycco_parse(code, language)

    sections: list[Section] = []
    line = 1
    for raw in raw_sections:
        docs_text, code_text = raw["docs_text"], raw["code_text"]
        n_docs = docs_text.count("\n")
        # Pycco ends every line it emits with "\n"; an empty code text (a file that ends
        # in a comment with no final newline) is no line at all.
        code_lines = code_text.split("\n")
        if code_text.endswith("\n") or not code_text:
            code_lines.pop()
        docs_line = line
        code_start = line + n_docs
        line = code_start + len(code_lines)
        # Blank lines around the code are not shown; skip them in the numbering too.
        while code_lines and not code_lines[0].strip():
            code_lines.pop(0)
            code_start += 1
        while code_lines and not code_lines[-1].strip():
            code_lines.pop()
        from_doc = n_docs > 0 and all(docs_line + k in doc_lines for k in range(n_docs))
        sections.append(Section(docs_text, docs_line, code_lines, code_start, from_doc))
    if line - 1 != len(code.split("\n")):
        raise BuildError(path, None, f"internal: line count mismatch ({line - 1} != "
                         f"{len(code.split(chr(10)))})")

    keep_headers_with_docstrings(sections, headers)
    # Pycco emits sections with neither prose nor code (a run of blank lines between two
    # comment blocks); they only add empty rows to the page.
    sections = [s for s in sections if not s.is_empty()]
    for i, s in enumerate(sections):
        s.index = i
        s.marks = [""] * len(s.code_lines)
    return sections


# === A definition and its docstring, side by side ===
#
# Pycco cuts before a `def` line, and the docstring that follows it is prose, so the
# signature would end up alone (or at the bottom of the previous section) while its
# docstring starts the next one, with the body far below. We move the header lines
# (decorators, the `def`/`class` line, a signature over several lines) into the
# docstring's section, ahead of the body: signature and body beside the prose that
# explains them. The line numbers shown stay those of the file.

def keep_headers_with_docstrings(sections: list[Section], headers: dict[int, int]) -> None:
    for k, s in enumerate(sections):
        first = headers.get(s.docs_line) if s.docs_from_docstring else None
        if first is None:
            continue
        moved: list[tuple[int, str]] = []
        for prev in sections[:k]:
            keep = [(n, ln) for n, ln in zip(prev.linenos, prev.code_lines)
                    if not first <= n < s.docs_line]
            moved += [(n, ln) for n, ln in zip(prev.linenos, prev.code_lines)
                      if first <= n < s.docs_line]
            prev.linenos = [n for n, _ in keep]
            prev.code_lines = [ln for _, ln in keep]
            if prev.linenos:
                prev.code_start = prev.linenos[0]
        if moved:
            s.linenos = [n for n, _ in moved] + s.linenos
            s.code_lines = [ln for _, ln in moved] + s.code_lines
            s.code_start = s.linenos[0]
