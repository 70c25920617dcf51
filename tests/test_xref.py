"""Anchors and cross-references across the whole site."""

import re

import pytest

import build
from site_builder.xref import slugify


def run(args, capsys):
    code = build.main([str(a) for a in args])
    return code, capsys.readouterr()


@pytest.fixture
def project(write):
    write("pkg/model.py", '''
        r"""
        # The model

        See [[train.py#the-loop]], [[train.py#Trainer.step|the step]] and [[#helper]].
        """


        # === Shared helper ===
        def helper():
            return 1


        class Net:
            def forward(self, x):
                return x
        ''')
    write("pkg/train.py", '''
        # ## The loop
        #
        # Calls [[model.py#Net.forward]] and [[pkg/model.py]].
        class Trainer:
            def step(self):
                pass
        ''')
    write("other/model.py", "# Another model.\nx = 1\n")
    return write


def page(out, rel):
    return (out / rel).read_text()


def test_references_resolve_to_relative_links_with_anchors(project, tmp_path, capsys):
    out = tmp_path / "out"
    code, io = run([tmp_path / "pkg", tmp_path / "other", "--out", out, "-q"], capsys)
    assert code == 0, io.err
    model = page(out, "pkg/model.html")
    assert 'href="train.html#the-loop"' in model
    assert '<a href="train.html#Trainer.step">the step</a>' in model
    assert 'href="#helper"' in model
    train = page(out, "pkg/train.html")
    assert 'href="model.html#Net.forward"' in train and 'href="model.html"' in train
    # Every anchor a link points at exists as an id in the target page.
    for name, text in [("model.html", model), ("train.html", train)]:
        for href in re.findall(r'href="([^"]*#[^"]+)"', text):
            file, anchor = href.split("#")
            assert f'id="{anchor}"' in page(out, "pkg/" + (file or name)), href


def test_sections_keep_numbered_ids_and_get_stable_heading_ids(project, tmp_path, capsys):
    out = tmp_path / "out"
    assert run([tmp_path / "pkg", tmp_path / "other", "--out", out, "-q"], capsys)[0] == 0
    model = page(out, "pkg/model.html")
    for n in range(3):
        assert f'id="section-{n}"' in model
    assert 'id="the-model"' in model and 'id="shared-helper"' in model
    assert 'id="Net"' in model and 'id="Net.forward"' in model


@pytest.mark.parametrize("ref,message", [
    ("[[nothere.py]]", "broken cross-reference [[nothere.py]]: no such file on the site"),
    ("[[train.py#no-such-anchor]]", "train.py has no anchor 'no-such-anchor'"),
    ("[[#missing]]", "has no anchor 'missing'"),
])
def test_broken_reference_is_an_error_with_file_and_line(project, tmp_path, capsys, ref, message):
    project("pkg/bad.py", f"x = 1\n\n# Text\n# more {ref} here\ny = 2\n")
    code, io = run([tmp_path / "pkg", tmp_path / "other", "--out", tmp_path / "out", "-q"], capsys)
    assert code == 1
    lines = io.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("bad.py:4: " + lines[0].split("bad.py:4: ")[1])
    assert message in lines[0] and "bad.py:4:" in lines[0]


def test_ambiguous_file_name_is_an_error(project, tmp_path, capsys):
    project("third.py", "# Links to [[model.py]]\nx = 1\n")
    code, io = run([tmp_path / "pkg", tmp_path / "other", tmp_path / "third.py",
                    "--out", tmp_path / "out", "-q"], capsys)
    assert code == 1 and "ambiguous cross-reference [[model.py]]" in io.err
    assert "other/model.py" in io.err and "pkg/model.py" in io.err


def test_reference_in_code_span_is_left_alone(project, tmp_path, capsys):
    project("pkg/lit.py", "# Write `[[file.py]]` to link.\nx = 1\n")
    out = tmp_path / "out"
    assert run([tmp_path / "pkg", tmp_path / "other", "--out", out, "-q"], capsys)[0] == 0
    assert "<code>[[file.py]]</code>" in page(out, "pkg/lit.html")


def test_slugify_matches_pyccos_section_names():
    assert slugify("Highlighting the source code") == "highlighting-the-source-code"
    assert slugify("The loss $\\beta$ term") == "the-loss-term"
    assert slugify("`VectorQuantizer.forward`") == "vectorquantizer.forward"


def test_reference_without_label_shows_a_readable_one(project, tmp_path, capsys):
    out = tmp_path / "out"
    assert run([tmp_path / "pkg", tmp_path / "other", "--out", out, "-q"], capsys)[0] == 0
    model, train = page(out, "pkg/model.html"), page(out, "pkg/train.html")
    # A heading's text, a definition's name (in code font), the page title.
    assert '<a href="train.html#the-loop">The loop</a>' in model
    assert '<a href="#helper"><code>helper</code></a>' in model
    assert '<a href="model.html#Net.forward"><code>Net.forward</code></a>' in train
    assert '<a href="model.html">The model</a>' in train
    assert not re.search(r">[^<]*\.py#[^<]*</a>", model + train)


def test_relabelled_heading_re_renders_the_page_that_links_to_it(project, tmp_path, capsys):
    out = tmp_path / "out"
    assert run([tmp_path / "pkg", tmp_path / "other", "--out", out, "-q"], capsys)[0] == 0
    # Same anchor (`the-loop`), new text: only train.py changed, yet model.py's link
    # label must follow.
    train = (tmp_path / "pkg" / "train.py").read_text().replace("## The loop", "## The `loop`")
    (tmp_path / "pkg" / "train.py").write_text(train)
    code, io = run([tmp_path / "pkg", tmp_path / "other", "--out", out, "-q"], capsys)
    assert code == 0, io.err
    assert '<a href="train.html#the-loop">The <code>loop</code></a>' in page(out, "pkg/model.html")
