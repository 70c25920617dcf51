r"""
# Serving the site while you write

`python build.py --serve` builds the site, serves it on `127.0.0.1` (never on other
interfaces: this is a writing tool, not a web server) and watches the inputs. When a
file changes it rebuilds — incrementally, so usually only the page you edited — and the
open page reloads itself.

The built files stay exactly what `python build.py` writes: the server adds a small
script to each HTML page *as it sends it*. The script asks the server every 700 ms for
the build number; when it changes, the page reloads. A failed build does not stop the
server: the previous site stays up and the error line is shown at the bottom of the
page until the next good build.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .errors import BuildError
from .site import BUILDER, STATIC, TEMPLATES

LIVE_JS = b"""(function () {
  var seen = null, box = null;
  function poll() {
    fetch("/__annogen__/state", {cache: "no-store"}).then(function (r) { return r.json(); })
      .then(function (s) {
        if (seen !== null && s.version !== seen && !s.error) { location.reload(); return; }
        seen = s.version;
        if (s.error) {
          if (!box) { box = document.createElement("div"); box.className = "annogen-error";
                      box.setAttribute("role", "alert"); document.body.appendChild(box); }
          box.textContent = "Build failed: " + s.error;
        } else if (box) { box.remove(); box = null; }
      }).catch(function () {}).then(function () { setTimeout(poll, 700); });
  }
  poll();
})();
"""


class State:
    def __init__(self):
        self.version = 0
        self.error: str | None = None
        self.lock = threading.Lock()


def make_handler(root: Path, state: State):
    class Handler(SimpleHTTPRequestHandler):
        extensions_map = {**SimpleHTTPRequestHandler.extensions_map,
                          ".js": "text/javascript", ".woff": "font/woff"}

        def log_message(self, fmt, *args):  # keep the terminal for build messages
            pass

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/__annogen__/state":
                with state.lock:
                    body = json.dumps({"version": state.version, "error": state.error}).encode()
                return self._send(body, "application/json")
            if path == "/__annogen__/live.js":
                return self._send(LIVE_JS, "text/javascript")
            local = Path(self.translate_path(path))
            if local.is_dir():
                local = local / "index.html"
            if local.suffix == ".html" and local.is_file():
                html = local.read_bytes()
                tag = b'<script src="/__annogen__/live.js"></script>\n</body>'
                return self._send(html.replace(b"</body>", tag, 1), "text/html; charset=utf-8")
            return super().do_GET()

        def _send(self, body: bytes, ctype: str):
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

    return partial(Handler, directory=str(root))


def fingerprint(paths) -> tuple:
    """Sizes and modification times of every input file; cheap enough to poll."""
    items = []
    for base in paths:
        base = Path(base)
        files = [base] if base.is_file() else sorted(
            p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            items.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(items)


def watched(args) -> list[Path]:
    roots = [TEMPLATES, STATIC, BUILDER, BUILDER.parent / "build.py"]
    if args.paths:
        roots += [p.resolve() for p in args.paths]
    else:
        roots.append(args.manifest.resolve().parent)
    return roots


def serve(args, rebuild, poll_seconds: float = 0.4) -> int:
    state = State()

    def run_build():
        try:
            result = rebuild()
            result.warnings.print()
            with state.lock:
                state.error = None
                state.version += 1
            if not args.quiet and not result.up_to_date:
                print(f"rebuilt: {len(result.rendered)} pages rendered, "
                      f"{len(result.reused)} reused", flush=True)
        except BuildError as e:
            with state.lock:
                state.error = str(e)
            print(e, file=sys.stderr, flush=True)

    run_build()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(out, state))
    # The site folder is replaced by each build; serve from its path, not a handle.
    print(f"serving {out} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)",
          flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    roots = watched(args)
    last = fingerprint(roots)
    try:
        while True:
            time.sleep(poll_seconds)
            now = fingerprint(roots)
            if now != last:
                last = now
                run_build()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0
