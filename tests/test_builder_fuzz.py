"""Odd file shapes never reach an internal error.

Every shape below is a file Python (and Pycco) accepts. For each one, and for random
combinations of them, the parser must succeed and keep its promise about line numbers:
every code line it shows is the file's line at the number it reports, and every line
of the file appears exactly once (as prose or as code, or it is blank / a dropped
shebang or coding line). A whole build of the shapes in paths mode must succeed too.
"""

from __future__ import annotations

import random

import pytest

import build
from site_builder.errors import BuildError
from site_builder.parse import parse

DOCSTRING_ONLY = 'r"""\n# Title\n\nSome prose with $x$.\n"""'
SHAPES = {
    "empty": "",
    "newline": "\n",
    "blank lines": "\n\n\n",
    "only a comment": "# just a comment",
    "only comments": "# one\n# two\n#\n# three\n",
    "only a docstring, no final newline": DOCSTRING_ONLY,
    "only a docstring": DOCSTRING_ONLY + "\n",
    "one-line docstring, no newline": '"""Only this."""',
    "code, no final newline": "x = 1\ny = 2",
    "comment after code, no newline": "x = 1\n# trailing comment",
    "crlf": 'r"""\r\nTitle\r\n"""\r\n\r\n# a comment\r\nx = 1\r\n',
    "lone cr": "# a comment\rx = 1\r",
    "tabs": "def f():\n\t# indented with a tab\n\treturn 1\n",
    "bom": '\ufeff"""Doc."""\nx = 1\n',
    "coding line": "# -*- coding: utf-8 -*-\n# prose\nx = 1\n",
    "shebang": "#!/usr/bin/env python\n# prose\nx = 1\n",
    "shebang and coding": "#!/usr/bin/env python\n# -*- coding: utf-8 -*-\nx = 1\n",
    "very long lines": "# " + "word " * 4000 + "\nx = '" + "y" * 20000 + "'\n",
    "docstring then def, no newline": '"""Mod."""\ndef f():\n    """Doc."""\n    return 1',
    "decorator": "@staticmethod\ndef f():\n    pass\n",
    "comment-only def body": "def f():\n    # nothing\n    pass\n",
    "nested docstrings": 'class A:\n    """A."""\n    def f(self):\n        """F."""\n',
    "unicode": "# Größe, 変数, émoji 🙂\nπ = 3.14\n",
    "formfeed": "x = 1\n\x0c\n# next page\ny = 2\n",
}


def check_line_promise(code: str, name: str) -> None:
    sections = parse(code, f"{name}.py")
    text = code.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    seen = set()
    for s in sections:
        for n, shown in zip(s.linenos, s.code_lines):
            assert lines[n - 1] == shown, (name, n, shown)
            assert n not in seen
            seen.add(n)
    for n, line in enumerate(lines, 1):
        if n in seen or not line.strip():
            continue
        stripped = line.strip()
        # Not shown as code: it must be prose (a comment or inside a docstring).
        assert stripped.startswith("#") or any(
            s.docs_from_docstring or s.docs for s in sections), (name, n, line)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_odd_shapes_parse_and_keep_line_numbers(name):
    check_line_promise(SHAPES[name], name)


def test_random_combinations_of_shapes_never_fail_internally():
    rng = random.Random(14)
    pieces = [v for v in SHAPES.values() if v and not v.startswith(("\ufeff", "#!"))]
    for trial in range(150):
        parts = rng.sample(pieces, rng.randint(1, 4))
        joiner = rng.choice(["\n", "\n\n", "\r\n"])
        code = joiner.join(p.rstrip("\r\n") if rng.random() < 0.5 else p for p in parts)
        if rng.random() < 0.3:
            code = code.rstrip("\n")
        try:
            compile(code.replace("\r\n", "\n"), "x", "exec")
        except (SyntaxError, ValueError):
            # Not Python: a one-line error, never an internal one.
            with pytest.raises(BuildError) as e:
                parse(code, "x.py")
            assert "internal" not in str(e.value)
            continue
        try:
            check_line_promise(code, f"trial {trial}")
        except BuildError as e:  # pragma: no cover - shows the input that failed
            raise AssertionError(f"{e} for {code!r}") from None


def test_build_of_every_shape_succeeds(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i, code in enumerate(SHAPES.values()):
        (src / f"shape_{i:02d}.py").write_bytes(code.encode("utf8"))
    out = tmp_path / "site"
    assert build.main([str(src), "--out", str(out), "-q"]) == 0, capsys.readouterr().err
    assert "internal" not in capsys.readouterr().err
    for i in range(len(SHAPES)):
        assert (out / f"shape_{i:02d}.html").is_file()
