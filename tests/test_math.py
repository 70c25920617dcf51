"""Every Markdown + LaTeX pitfall of the reference, and the unclosed-formula checks."""

import html
import re
from pathlib import Path

import pytest

from site_builder.course import Page
from site_builder.errors import BuildError, Warnings
from site_builder.mathtex import check_math, make_markdown
from site_builder.render import prepare, render_docs
from site_builder.xref import Resolver, Target


def render(text: str) -> str:
    here = Target(Path("/x/a.py"), "a.py", "a.html", set())
    return render_docs(make_markdown(), text, [], Resolver([here]), here, "a.py", 1)


def formulas(out: str) -> list[str]:
    """The TeX inside each arithmatex element, unescaped, without its delimiters."""
    found = re.findall(r'class="arithmatex[^"]*">(.*?)</(?:span|div)>', out, re.S)
    return [html.unescape(f)[2:-2].strip() for f in found]


@pytest.mark.parametrize("tex", [
    r"\begin{aligned} a &= b \\ c &= d \end{aligned}",  # \\ must stay \\ (rows)
    r"\{x \mid x > 0\}",  # \{ must stay \{
    r"\# \text{items}",  # \# must stay \#
    r"a_1 * b_2 * c_3",  # * and _ must not become <em>
    r"x_{t-1} = \frac{x_t - \beta_t}{\sqrt{\alpha}}",
    r"p<b>q",  # no raw HTML
    r"a -- b \text{``q''}",  # smarty must not touch math
])
@pytest.mark.parametrize("form", ["inline", "display", "display-under-prose", "inline-dollars"])
def test_formula_survives_markdown_byte_for_byte(tex, form):
    if form == "inline":
        out = render(f"Prose ${tex}$ more.")
    elif form == "display":
        out = render(f"Prose.\n\n$$\n{tex}\n$$\n\nMore.")
    elif form == "display-under-prose":
        out = render(f"A line of prose directly above:\n$$\n{tex}\n$$\nand directly below.")
    else:
        out = render(f"Mid-line display $${tex}$$ in a sentence.")
    assert formulas(out) == [tex]
    assert "<em>" not in out and "<b>" not in out and "&ndash;" not in out.split("arithmatex")[1]
    if form == "display-under-prose":
        assert '<div class="arithmatex">' in out  # seen as a display block
    if form == "inline-dollars":
        assert "$" not in re.sub(r'<span class="arithmatex[^>]*>.*?</span>', "", out)


def test_round_and_square_bracket_delimiters_survive():
    out = render(r"Inline \(x^2\) and" + "\n\n" + r"\[y = \{1\}\]")
    assert formulas(out) == ["x^2", r"y = \{1\}"]


def test_bare_environment_is_display_math():
    tex = r"\begin{aligned} a &= 1 \\ b &= 2 \end{aligned}"
    out = render(f"Text:\n\n{tex}\n")
    assert html.unescape(out).count(tex) == 1 and '<div class="arithmatex">' in out


def test_prices_are_not_math_and_mathjax2_tags_are_never_emitted():
    out = render("It costs $2.00 or $3.50, and $x$ is math.")
    assert formulas(out) == ["x"] and "$2.00 or $3.50" in out
    assert 'type="math/tex"' not in render("$x$ and $$y$$")


def test_code_spans_and_fences_are_not_math():
    out = render("Use `$x$` and\n\n```\n$y$\n```\n")
    assert formulas(out) == []
    out = render("A line that starts with `$$` and ends with `$$` is display math.")
    assert formulas(out) == [] and out.count("<code>$$</code>") == 2


def test_display_math_in_a_list_item_stays_in_the_item():
    out = render("- item text\n    $$\n    z = 1\n    $$\n- next")
    assert re.search(r"<li>.*item text.*arithmatex.*</li>\s*<li>.*next", out, re.S), out
    assert formulas(out) == ["z = 1"]


def test_math_and_links_in_an_indented_list_paragraph_are_not_taken_for_code():
    out = render("- item\n\n    more about $x_1$ here\n- next")
    assert formulas(out) == ["x_1"]
    with pytest.raises(BuildError, match="unclosed inline formula"):
        check_math("- item\n\n    broken $x here\n", "m.py", 1)
    check_math("Example:\n\n    $ echo $HOME\n", "m.py", 1)  # an indented code block


@pytest.mark.parametrize("text,line,what", [
    ("fine $x$\nbroken $y + 1 here\n", 2, "unclosed inline formula"),
    ("a\nb\n$$\nx = 1\n\nmore\n", 3, "unclosed display formula"),
    ("ok\n$$x = 1\n", 2, "unclosed display formula"),
    ("ok\n\\begin{aligned} a &= b\n", 2, "unclosed environment"),
])
def test_unclosed_formulas_are_errors_at_their_line(text, line, what):
    with pytest.raises(BuildError) as e:
        check_math(text, "m.py", 10)
    assert str(e.value).startswith(f"m.py:{10 + line - 1}: {what}")


@pytest.mark.parametrize("text", ["$x$ and $$y$$", r"a literal \$5 sign", "costs $5",
                                  "`$unclosed in code`", r"\begin{cases} 1 \end{cases}"])
def test_valid_text_passes_the_math_check(text):
    check_math(text, "m.py", 1)


def test_unclosed_formula_in_a_file_reports_the_file_line(tmp_path):
    f = tmp_path / "model.py"
    f.write_text('r"""\nTitle\n"""\n\nx = 1\n\n\n# Loss is $\\beta +\ny = 2\n')
    with pytest.raises(BuildError) as e:
        prepare(Page(f, "model.html", "code", "model.py"), Warnings())
    assert str(e.value).endswith("model.py:8: unclosed inline formula: `$` has no closing `$` "
                                 "(write \\$ for a literal dollar sign)")


def test_math_inside_raw_docstring_renders_exactly(tmp_path):
    f = tmp_path / "d.py"
    f.write_text('def f():\n    r"""The rows\n    $$\n    \\begin{aligned} a &= \\frac{1}{2} \\\\ '
                 'b &= \\beta \\end{aligned}\n    $$\n    """\n')
    prep = prepare(Page(f, "d.html", "code", "d.py"), Warnings())
    out = render(prep.sections[0].docs)
    assert formulas(out) == [r"\begin{aligned} a &= \frac{1}{2} \\ b &= \beta \end{aligned}"]


# === Inline formulas over several lines of one paragraph ===

ADAM = ("# Update $\\theta_t \\leftarrow \\theta_{t-1} - \\alpha \\cdot\n"
        "#  \\frac{m_t}{\\sqrt{v_t}}$ every step.\n"
        "theta = theta - alpha * m / v ** 0.5\n")


def test_inline_formula_across_comment_lines_builds_and_renders(tmp_path):
    f = tmp_path / "adam.py"
    f.write_text(ADAM)
    prep = prepare(Page(f, "adam.html", "code", "adam.py"), Warnings())
    assert prep.has_math and not prep.maybe_comment_math
    out = render(prep.sections[0].docs)
    [tex] = formulas(out)
    assert tex.startswith("\\theta_t") and tex.endswith("\\frac{m_t}{\\sqrt{v_t}}")
    assert "$" not in re.sub(r"<span class=\"arithmatex\">.*?</span>", "", out, flags=re.S)


@pytest.mark.parametrize("text,line", [
    # The paragraph ends without its `$`; a later paragraph's `$` must not close it.
    ("The weight $\\beta is small.\n\nAs in the paper$).\n", 1),
    ("The weight $\\beta is small.\n   \nAs in the paper $x$ and y$.\n", 1),
    ("ok $a$\nthen $b\n\n", 2),
])
def test_inline_formula_never_pairs_across_a_blank_line(text, line):
    with pytest.raises(BuildError) as e:
        check_math(text, "m.py", 1)
    assert str(e.value).startswith(f"m.py:{line}: unclosed inline formula")


def test_multiline_inline_formula_in_one_paragraph_passes_the_check():
    check_math("Update $a +\n b$ and $c$.\n\nNext $d\n+ e$ paragraph.", "m.py", 1)


# === Dunder names ===

def test_dunder_names_are_never_emphasis():
    out = render("Run `python -m x`, i.e. __main__.py; __init__ and __call__() too.")
    assert "<strong>" not in out and "<em>" not in out
    assert "__main__.py" in out and "__init__" in out and "__call__()" in out
    assert "<strong>real bold</strong>" in render("__real bold__ stays bold")
    assert formulas(render("$a__b__$")) == ["a__b__"]


# === Search text without TeX ===

def test_search_text_has_no_tex_source():
    from site_builder.render import plain_text
    text = plain_text("The loss $\\beta_t \\operatorname{Attn}(Q)$ is\n\n"
                      "$$\n\\operatorname{Attn}(Q, K, V) = \\frac{QK^T}{\\sqrt{d}}\n$$\n\n"
                      "and \\$5, and $$x^2$$ inline.")
    assert "$" not in text.replace("$5", "") and "\\" not in text, text
    assert "β" in text and "Attn(Q)" in text and "frac" not in text and "$5" in text
    assert "__main__.py" in plain_text("Run **__main__.py** or `score_labels`.")
    assert "score_labels" in plain_text("Run **__main__.py** or `score_labels`.")
