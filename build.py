#!/usr/bin/env python
r"""
# The command line

    python build.py                      # the course, into site/
    python build.py --serve              # serve it on 127.0.0.1, rebuild on change
    python build.py mycode/ other.py     # any annotated files, the way `pycco` is used
    python build.py --out /tmp/site      # choose the output folder
    python build.py --mathjax-url https://cdn.jsdelivr.net/npm/mathjax@3.2.2/es5/tex-svg.js

Any error ends the build with a non-zero exit status and a single line
`path:line: what is wrong`; the previous site is left as it was.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(HERE))

from site_builder.course import course_from_paths, load_course  # noqa: E402
from site_builder.errors import BuildError  # noqa: E402
from site_builder.site import Options, build  # noqa: E402

MANIFEST = HERE / "src" / "annogen" / "course.toml"


# argparse prints a usage block and then the error; we want one line, like every
# other error of this tool.
class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="build.py", description="Render annotated sources into the course site.")
    p.add_argument("paths", nargs="*", type=Path,
                   help="files or folders to render instead of the course")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: site/)")
    p.add_argument("--manifest", type=Path, default=MANIFEST, help="course manifest (TOML)")
    p.add_argument("--serve", action="store_true", help="serve on 127.0.0.1 and rebuild on change")
    p.add_argument("--port", type=int, default=8000, help="port for --serve (default 8000)")
    p.add_argument("--mathjax-url", default=None,
                   help="load MathJax from this URL instead of the local copy")
    p.add_argument("--no-prerender-math", dest="prerender_math", action="store_false",
                   help="leave every formula to MathJax in the browser (default: the first "
                        "formulas of each page are typeset at build time, with Node.js)")
    p.add_argument("--title", default="Documentation", help="site title when rendering PATHs")
    p.add_argument("--strict", action="store_true",
                   help="treat every warning as an error (e.g. a missing image in PATHs)")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port must be between 1 and 65535, not {args.port}")
    if args.out is None:
        args.out = Path("site") if not args.paths else Path("docs")
    return args


def load(args):
    if args.paths:
        return course_from_paths([p.resolve() for p in args.paths], args.title)
    return load_course(args.manifest.resolve())


def options(args) -> Options:
    return Options(out=args.out, mathjax_url=args.mathjax_url, strict=args.strict,
                   prerender_math=args.prerender_math)


def build_once(args) -> bool:
    """One build; prints the result or the error line. Returns success."""
    start = time.perf_counter()
    try:
        result = build(load(args), options(args))
    except BuildError as e:
        print(e, file=sys.stderr)
        return False
    except OSError as e:  # e.g. an output folder we may not write
        print(f"{args.out}: {e.strerror} ({e.filename})" if e.filename else
              f"{args.out}: {e.strerror}", file=sys.stderr)
        return False
    result.warnings.print()
    if not args.quiet:
        took = time.perf_counter() - start
        if result.up_to_date:
            print(f"{args.out}: up to date ({took:.2f} s)")
        else:
            print(f"{args.out}: rendered {len(result.rendered)} pages, reused "
                  f"{len(result.reused)} ({took:.2f} s)")
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.serve:
        from site_builder.serve import serve
        return serve(args, lambda: build(load(args), options(args)))
    return 0 if build_once(args) else 1


if __name__ == "__main__":
    sys.exit(main())
