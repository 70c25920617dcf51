"""Highlight directives: block forms, line markers, and their errors."""

import pytest

from site_builder.directives import apply_directives
from site_builder.errors import BuildError
from site_builder.parse import comment_map, parse
from site_builder.render import prepare
from site_builder.course import Page
from site_builder.errors import Warnings


def marked(code: str):
    """(code line, mark) for every code line, after directives are applied."""
    secs = parse(code, "x.py")
    apply_directives(secs, "x.py", comment_map(code, "x.py"))
    return [(line, mark) for s in secs for line, mark in zip(s.code_lines, s.marks)], secs


ADDED_CLASS = '''
import torch

# ===ADD===
# The new loss.
def hinge(a):
    r"""Hinge loss."""
    x = 1
    return x

@decorated
class Disc:
    def forward(self):
        return 2

# Back to normal prose.
y = 3
'''


def test_block_directive_spans_def_class_decorator_splits_and_docstrings():
    lines, secs = marked(ADDED_CLASS)
    marks = dict(lines)
    assert marks["import torch"] == ""
    for line in ["def hinge(a):", "    x = 1", "    return x", "@decorated", "class Disc:",
                 "    def forward(self):", "        return 2"]:
        assert marks[line] == "add", line
    assert marks["y = 3"] == ""


def test_directive_line_is_removed_from_prose_and_never_a_heading():
    _, secs = marked(ADDED_CLASS)
    docs = "".join(s.docs for s in secs)
    assert "===ADD===" not in docs and "ADD" not in docs
    assert "The new loss." in docs


@pytest.mark.parametrize("word,kind", [("ADD", "add"), ("DEL", "del"), ("HL", "hl")])
def test_each_block_kind(word, kind):
    lines, _ = marked(f"# ===={word}====\n".replace("====", "===") + "a = 1\nb = 2\n")
    assert lines == [("a = 1", kind), ("b = 2", kind)]


def test_directive_only_comment_block_has_no_prose():
    _, secs = marked("# ===DEL===\nold = 1\n")
    assert secs[0].docs.strip() == ""


@pytest.mark.parametrize("marker,kind", [("++", "add"), ("--", "del"), ("hl", "hl")])
def test_line_markers_mark_one_line_and_are_removed(marker, kind):
    lines, _ = marked(f"a = 1\nb = 2  # [!code {marker}]\nc = 3\n")
    assert lines == [("a = 1", ""), ("b = 2", kind), ("c = 3", "")]


def test_marker_inside_a_string_is_not_a_directive():
    code = 's = "x  # [!code ++]"\n'
    lines, _ = marked(code)
    assert lines == [('s = "x  # [!code ++]"', "")]


@pytest.mark.parametrize("code,line,fragment", [
    ("x = 1\n# ===ADDD===\ny = 2\n", 2, "unknown directive '===ADDD==='"),
    ("# ===FOO===\ny = 2\n", 1, "unknown directive"),
    ("# ==ADD==\ny = 2\n", 1, "malformed directive"),
    ("# === DEL ===\ny = 2\n", 1, "malformed directive"),
    ("# Some prose first.\n# ===ADD===\ny = 2\n", 2, "must be the first line"),
    ("a = 1\nb = 2  # [!code +]\n", 2, "malformed line marker '# [!code +]'"),
    ("a = 1  # [!code add]\n", 1, "malformed line marker"),
    ("a = 1  # [!code ++] trailing\n", 1, "malformed line marker"),
])
def test_malformed_directives_are_errors_with_file_and_line(code, line, fragment):
    with pytest.raises(BuildError) as e:
        marked(code)
    assert str(e.value).startswith(f"x.py:{line}: ")
    assert fragment in str(e.value)


def test_pycco_heading_with_spaces_is_still_a_heading(tmp_path):
    f = tmp_path / "h.py"
    f.write_text("# === Training loop ===\nx = 1\n")
    prep = prepare(Page(f, "h.html", "code", "h.py"), Warnings())
    assert "training-loop" in prep.anchors.all
