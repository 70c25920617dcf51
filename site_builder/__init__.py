r"""
---
title: How this site is built
summary: A modified Pycco that renders annotated Python into a two-column course, with math, diffs, cross-references and search.
---

# How this site is built

Every page of this course is rendered from an annotated Python file by the small
program you are reading now. It is built on [Pycco](https://pypi.org/project/Pycco/),
the Python port of Docco: we import Pycco's parser and its language table and replace
the parts it lacks for a course on generative models — math that survives Markdown,
directives that highlight added and removed code, cross-references that fail loudly,
course navigation, search, and builds that are atomic and incremental.

The modules, in the order a build uses them:

- [[parse.py]] splits a file into sections of prose and code (and fixes Pycco's
  docstring bugs);
- [[directives.py]] marks added, removed and emphasised code;
- [[mathtex.py]] protects formulas from Markdown and finds unclosed ones;
- [[xref.py]] gives sections stable anchors and resolves `[[file.py#name]]` links;
- [[highlight.py]] colours the code one line at a time;
- [[course.py]] reads the course manifest; [[render.py]] turns one file into a page;
- [[site.py]] builds the whole site, atomically and incrementally, spreading the pages
  over the cores with [[parallel.py]]; [[prerender.py]] typesets each page's first
  formulas with MathJax in Node.js ([[typeset.js]]); [[serve.py]] serves it and rebuilds
  on change;
- [[errors.py]] gives every problem its `path:line:` form;
- [[build.py]] is the command line.
"""

__version__ = "0.1.0"
