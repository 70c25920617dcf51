// Typesets formulas at build time with MathJax's own code: the same MathJax 3.2.2
// components the pages load (TeX input, CommonHTML output, the assistive MathML), run
// in Node.js on MathJax's LiteDOM instead of a browser's DOM. See [[prerender.py]].
//
//   node typeset.js MATHJAX_ES5_DIR < pages.json > typeset.json
//
// stdin:  [[[tex, display], ...], ...]        the formulas of each page, in page order
// stdout: {"pages": [{"html": [...], "css": "..."}, ...], "x_height": 0.442}
//         the markup MathJax would put in each formula's element, and, per page, the
//         CommonHTML stylesheet those formulas need (its general rules and one rule per
//         character used), without @font-face rules: the pages declare those themselves.
"use strict";
const path = require("path");
const es5 = process.argv[2];
require(path.join(es5, "node-main.js")).init({
  loader: {paths: {mathjax: es5},
           load: ["adaptors/liteDOM", "input/tex", "output/chtml", "a11y/assistive-mml"]},
  // The size is set by the page's CSS, from the surrounding text's x-height, as
  // MathJax does in the browser by measuring it (there is no text to measure here).
  chtml: {matchFontHeight: false},
  startup: {typeset: false},
}).then(async (MathJax) => {
  // The formulas are read once MathJax has loaded: the build starts this process
  // early, so that the loading happens while it renders the pages.
  const pages = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const output = MathJax.startup.output, adaptor = MathJax.startup.adaptor;
  output.font.constructor.defaultFonts = {};
  const result = [];
  for (const formulas of pages) {
    // Each page starts afresh, as each page's MathJax does in the browser: no labels
    // or equation numbers, and no characters' rules, from the pages typeset before.
    MathJax.texReset();
    output.clearCache();
    const html = [];
    for (const [tex, display] of formulas) {
      // The promise form waits for TeX extensions loaded on demand (\boldsymbol, ...).
      const node = await MathJax.tex2chtmlPromise(tex, {display});
      html.push(adaptor.outerHTML(node));
    }
    result.push({html, css: adaptor.textContent(MathJax.chtmlStylesheet())});
  }
  process.stdout.write(JSON.stringify({pages: result, x_height: output.font.params.x_height}));
}).catch((e) => {
  process.stderr.write(`typeset.js: ${e && e.message || e}\n`);
  process.exit(1);
});
