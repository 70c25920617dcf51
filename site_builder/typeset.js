// Typesets formulas at build time with MathJax's own code: the same MathJax 3.2.2
// components the pages load (TeX input, SVG output, the assistive MathML), run in
// Node.js on MathJax's LiteDOM instead of a browser's DOM. See [[prerender.py]].
//
//   node typeset.js MATHJAX_ES5_DIR < pages.json > typeset.json
//
// stdin:  [[[tex, display], ...], ...]        the formulas of each page, in page order
// stdout: {"pages": [{"html": [...], "paths": "...", "css": "..."}, ...]}
//         the markup MathJax would put in each formula's element, and, per page, the
//         paths of the characters those formulas use (a <defs> element) and the SVG
//         output's style sheet.
"use strict";
const path = require("path");
const es5 = process.argv[2];
require(path.join(es5, "node-main.js")).init({
  loader: {paths: {mathjax: es5},
           load: ["adaptors/liteDOM", "input/tex", "output/svg", "a11y/assistive-mml"]},
  // The paths of a page's characters are written once for the page (MathJax's "global"
  // font cache), not into each formula that uses them (the "local" cache, which the
  // browser's MathJax uses).
  svg: {fontCache: "global"},
  startup: {typeset: false},
}).then(async (MathJax) => {
  // The formulas are read once MathJax has loaded: the build starts this process
  // early, so that the loading happens while it renders the pages.
  const pages = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const output = MathJax.startup.output, adaptor = MathJax.startup.adaptor;
  const result = [];
  for (const formulas of pages) {
    // Each page starts afresh, as each page's MathJax does in the browser: no labels
    // or equation numbers, and no paths, from the pages typeset before.
    MathJax.texReset();
    output.fontCache.clearCache();
    const html = [];
    for (const [tex, display] of formulas) {
      // The promise form waits for TeX extensions loaded on demand (\boldsymbol, ...).
      const node = await MathJax.tex2svgPromise(tex, {display});
      html.push(adaptor.outerHTML(node));
    }
    result.push({html, paths: adaptor.outerHTML(output.fontCache.getCache()),
                 css: adaptor.textContent(MathJax.svgStylesheet())});
  }
  process.stdout.write(JSON.stringify({pages: result}));
}).catch((e) => {
  process.stderr.write(`typeset.js: ${e && e.message || e}\n`);
  process.exit(1);
});
