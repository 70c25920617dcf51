"""Splitting files into sections: Pycco's parser, with its docstring bugs fixed."""

import re
from pathlib import Path

import pytest

from site_builder.errors import BuildError, Warnings
from site_builder.mathtex import make_markdown
from site_builder.parse import find_docstrings, parse

ROOT = Path(__file__).resolve().parent.parent


def sections_of(code: str, path="x.py", warnings=None):
    return parse(code, path, warnings)


def test_docstring_closed_on_its_first_line_is_prose_and_code_follows():
    code = 'def f():\n    """Return one."""\n    return 1\n'
    secs = sections_of(code)
    assert [s.docs.strip() for s in secs] == ["Return one."]
    assert secs[0].code_lines == ["def f():", "    return 1"]
    assert secs[0].linenos == [1, 3]


def test_def_line_sits_with_its_docstring_and_body():
    code = ('r"""Module."""\n\n# A helper.\n@decorator\ndef f(a,\n      b):\n'
            '    r"""Add $a$ and $b$."""\n    return a + b\n\n\nclass A:\n    """A class."""\n'
            '    x = 1\n\n    def g(self):\n        """G."""\n        return 2\n')
    lines = code.split("\n")
    secs = sections_of(code)
    by_docs = {s.docs.strip(): s for s in secs}
    f = by_docs["Add $a$ and $b$."]
    assert f.code_lines == ["@decorator", "def f(a,", "      b):", "    return a + b"]
    assert by_docs["A class."].code_lines == ["class A:", "    x = 1"]
    assert by_docs["G."].code_lines == ["    def g(self):", "        return 2"]
    # No section ends with a dangling header, and every line number is the file's.
    for s in secs:
        assert not (s.code_lines and re.match(r"\s*(def|class|@)", s.code_lines[-1]))
        for n, shown in zip(s.linenos, s.code_lines):
            assert lines[n - 1] == shown


def test_triple_quoted_strings_in_code_stay_code():
    code = 'x = """not\nprose"""\ny = 2\nprint("""also code""")\n'
    secs = sections_of(code)
    assert len(secs) == 1 and secs[0].docs == ""
    assert secs[0].code_lines == code.rstrip("\n").split("\n")


def test_docstring_keeps_relative_indentation_for_nested_lists_and_code():
    code = '''
def f():
    r"""Steps:

    - outer
        - inner

    Example:

        indented code
    """
    pass
'''
    secs = sections_of(code)
    docs = secs[0].docs
    assert "- outer\n    - inner\n\nExample:\n\n    indented code" in docs
    md = make_markdown()
    html = md.convert(docs)
    # The inner list is nested inside the outer item, and the code block survives.
    assert re.search(r"<li>outer\s*<ul>\s*<li>\s*<p>inner</p>", html) or \
        re.search(r"<li>outer\s*<ul>\s*<li>inner", html), html
    assert "<code>indented code" in html


@pytest.mark.parametrize("rel", sorted(p.relative_to(ROOT).as_posix()
                                       for p in (ROOT / "site_builder").glob("*.py")))
def test_line_numbers_match_the_original_file(rel):
    path = ROOT / rel
    original = path.read_text().split("\n")
    secs = parse(path.read_text(), str(path))
    assert secs, rel
    for s in secs:
        for i, line in enumerate(s.code_lines):
            assert original[s.linenos[i] - 1] == line, (rel, s.linenos[i])
        # The first docs line comes from the line we say it does.
        first = s.docs.split("\n")[0].strip()
        if first:
            assert first in original[s.docs_line - 1], (rel, s.docs_line)


def test_shebang_and_coding_lines_do_not_shift_numbers():
    code = "#!/usr/bin/env python\n# -*- coding: utf-8 -*-\n# Prose.\nx = 1\n"
    secs = sections_of(code)
    assert secs[-1].code_lines == ["x = 1"] and secs[-1].code_start == 4
    assert secs[-1].docs.strip() == "Prose."


def test_no_empty_sections():
    code = "# one\n\n\n\n# two\n\n\n\nx = 1\n\n\n\n\n"
    secs = sections_of(code)
    assert secs and all(s.docs.strip() or s.code.strip() for s in secs)
    assert [s.docs.strip() for s in secs] == ["one", "two"]


def test_sections_split_at_def_class_and_decorators():
    code = "import os\ndef a():\n    pass\n@dec\nclass B:\n    pass\n"
    secs = sections_of(code)
    assert [s.code_lines[0] for s in secs] == ["import os", "def a():", "@dec"]


def test_non_raw_docstring_with_math_warns_with_its_line():
    w = Warnings()
    sections_of('x = 1\n\n\ndef f():\n    """Uses $\\beta$."""\n', warnings=w)
    assert len(w.items) == 1 and ":5: warning:" in w.items[0] and 'r"""' in w.items[0]
    w2 = Warnings()
    sections_of('def f():\n    r"""Uses $\\beta$."""\n', warnings=w2)
    assert w2.items == []


def test_only_statement_strings_are_docstrings():
    code = 'f(\n    """arg"""\n)\n"""prose"""\nx = """y"""\n'
    found = find_docstrings(code)
    assert [d.body for d in found] == ["prose"]


def test_unparseable_python_is_a_build_error_with_a_line():
    with pytest.raises(BuildError) as e:
        sections_of('x = 1\ny = """never closed\n')
    assert "x.py:" in str(e.value)


def test_other_languages_use_pyccos_table():
    secs = parse("// A comment\nvar x = 1;\n", "a.js")
    assert secs[0].docs.strip() == "A comment" and secs[0].code_lines == ["var x = 1;"]
    with pytest.raises(BuildError, match="unsupported file type"):
        parse("x", "a.unknownext")
