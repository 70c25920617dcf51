/* annogen course site: theme toggle, copy buttons, search. No dependencies, and
   nothing here needs a server: pages work the same from file://. */
(function () {
  "use strict";
  var KEY = "annogen-theme";
  var root = document.documentElement;

  /* ---- theme: follows the OS until the reader chooses; the choice persists ---- */
  function stored() {
    try { return localStorage.getItem(KEY); } catch (e) { return null; }
  }
  function setTheme(t, persist) {
    root.setAttribute("data-theme", t);
    if (persist) { try { localStorage.setItem(KEY, t); } catch (e) {} }
    var b = document.getElementById("theme-toggle");
    if (b) b.setAttribute("aria-pressed", t === "dark" ? "true" : "false");
  }
  var toggle = document.getElementById("theme-toggle");
  if (toggle) {
    setTheme(root.getAttribute("data-theme") || "light", false);
    toggle.addEventListener("click", function () {
      setTheme(root.getAttribute("data-theme") === "dark" ? "light" : "dark", true);
    });
  }
  if (window.matchMedia) {
    var mq = matchMedia("(prefers-color-scheme: dark)");
    var onChange = function (e) { if (!stored()) setTheme(e.matches ? "dark" : "light", false); };
    if (mq.addEventListener) mq.addEventListener("change", onChange);
  }

  /* ---- copy buttons: a section's code without removed lines, or a run command ---- */
  function copyText(text, button) {
    var done = function () {
      var old = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = old; }, 1200);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallback(text); done(); });
    } else { fallback(text); done(); }
  }
  function fallback(text) {
    var ta = document.createElement("textarea");
    ta.value = text; ta.setAttribute("readonly", ""); ta.style.position = "fixed"; ta.style.opacity = "0";
    document.body.appendChild(ta); ta.select();
    try { document.execCommand("copy"); } catch (e) {}
    document.body.removeChild(ta);
  }
  function sectionCode(button) {
    var lines = button.parentNode.querySelectorAll(".line:not(.del)");
    return Array.prototype.map.call(lines, function (l) {
      /* A formula typeset in a comment is copied as the TeX written in the file. */
      var copy = l.cloneNode(true);
      Array.prototype.forEach.call(copy.querySelectorAll(".arithmatex[data-src]"), function (m) {
        m.replaceWith(document.createTextNode(m.getAttribute("data-src")));
      });
      return copy.textContent;
    }).join("\n") + "\n";
  }
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest(".copy-btn");
    if (!b) return;
    copyText(b.hasAttribute("data-copy") ? b.getAttribute("data-copy") : sectionCode(b), b);
  });

  /* ---- progress: chapters marked as done, kept in localStorage (which Chromium and
     Firefox also give pages opened from file://); without storage, for this page only ---- */
  var DONE_KEY = "annogen-done", memory = [];
  function doneList() {
    try {
      var v = JSON.parse(localStorage.getItem(DONE_KEY) || "[]");
      return Array.isArray(v) ? v : [];
    } catch (e) { return memory; }
  }
  function saveDone(list) {
    memory = list;
    try { localStorage.setItem(DONE_KEY, JSON.stringify(list)); } catch (e) {}
  }
  function showProgress() {
    var done = doneList();
    Array.prototype.forEach.call(document.querySelectorAll("li.chapter[data-chapter]"), function (li) {
      var on = done.indexOf(li.getAttribute("data-chapter")) >= 0;
      li.classList.toggle("done", on);
      var badge = li.querySelector(".done-badge");
      if (badge) badge.hidden = !on;
    });
    Array.prototype.forEach.call(document.querySelectorAll(".done-toggle"), function (b) {
      var on = done.indexOf(b.getAttribute("data-chapter")) >= 0;
      b.setAttribute("aria-pressed", on ? "true" : "false");
      b.textContent = on ? "\u2713 Chapter done" : "Mark chapter as done";
    });
    Array.prototype.forEach.call(document.querySelectorAll(".course-progress"), function (p) {
      var total = parseInt(p.getAttribute("data-total"), 10) || 0;
      p.textContent = total ? done.length + " of " + total + " chapters done" : "";
    });
  }
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest(".done-toggle");
    if (!b) return;
    var id = b.getAttribute("data-chapter"), done = doneList().filter(function (x) { return x !== id; });
    if (b.getAttribute("aria-pressed") !== "true") done.push(id);
    saveDone(done.sort());
    showProgress();
  });
  window.addEventListener("storage", function (e) { if (e.key === DONE_KEY) showProgress(); });
  showProgress();

  /* ---- an inline formula wider than its line scrolls in its own box ---- */
  function markWide() {
    /* Writes, then all reads, then writes: measuring between class changes would make the
       browser lay the page out again for every formula. */
    var spans = Array.prototype.filter.call(document.querySelectorAll("span.arithmatex"), function (el) {
      return el.querySelector("mjx-container");
    });
    spans.forEach(function (el) { el.classList.remove("wide"); });
    var wide = spans.filter(function (el) {
      var block = el.parentElement;
      while (block.parentElement && getComputedStyle(block).display.indexOf("inline") === 0) block = block.parentElement;
      var box = block.getBoundingClientRect(), r = el.querySelector("mjx-container").getBoundingClientRect();
      return r.width > box.width || r.right > box.right + 1;
    });
    wide.forEach(function (el) { el.classList.add("wide"); });
  }
  /* A box that scrolls sideways (code, a wide table or formula) must be reachable from
     the keyboard, so that arrow keys can scroll it: it gets a tab stop, and only while
     it actually overflows. */
  var SCROLLERS = "pre, .docs table, .prose table, div.arithmatex, .arithmatex-display, .arithmatex.wide";
  function markScrollable() {
    Array.prototype.forEach.call(document.querySelectorAll(SCROLLERS), function (el) {
      if (el.scrollWidth > el.clientWidth) {
        if (!el.hasAttribute("tabindex")) el.setAttribute("tabindex", "0");
      } else if (el.getAttribute("tabindex") === "0") {
        el.removeAttribute("tabindex");
      }
    });
  }
  function relayout() { markWide(); markScrollable(); }
  /* Measuring every box forces a layout of the whole page, sections far from the screen
     included: not while the page is loading (it would delay the first formulas). A page
     with formulas does it when MathJax has typeset them all (below); a page without,
     once it has loaded; and a page whose MathJax never reports (it failed to load) a
     few seconds after that. */
  var typeset = false;
  window.addEventListener("load", function () {
    if (!document.querySelector(".arithmatex")) markScrollable();
    else setTimeout(function () { if (!typeset) relayout(); }, 3000);
  });
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer); resizeTimer = setTimeout(relayout, 150);
  });
  /* Typeset formulas change widths: the page says when MathJax is done (MathJax loads
     asynchronously, so it may not have started when this runs). */
  document.addEventListener("annogen:typeset", function () { typeset = true; relayout(); });

  /* ---- search over window.ANNOGEN_SEARCH (static/search-index.js) ---- */
  var input = document.getElementById("search-input");
  var list = document.getElementById("search-results");
  var base = (function () {
    /* The page's path back to the site root, from the stylesheet link it already has. */
    var link = document.querySelector('link[href$="static/annogen.css"]');
    return link ? link.getAttribute("href").replace(/static\/annogen\.css$/, "") : "";
  })();
  function escapeHtml(s) {
    return s.replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }
  function snippet(text, words) {
    var lower = text.toLowerCase(), at = lower.indexOf(words[0]);
    var start = Math.max(0, at - 60), s = text.slice(start, start + 180);
    s = escapeHtml((start > 0 ? "\u2026" : "") + s + (start + 180 < text.length ? "\u2026" : ""));
    words.forEach(function (w) {
      s = s.replace(new RegExp("(" + w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + ")", "ig"), "<mark>$1</mark>");
    });
    return s;
  }
  function search(q) {
    var words = q.toLowerCase().split(/\s+/).filter(Boolean);
    var hits = [];
    if (!words.length || !window.ANNOGEN_SEARCH) return hits;
    /* A section holding every word as a whole word ranks above one that only holds
       longer words containing them ("tokenize" before "tokenizer"). */
    var whole = words.map(function (w) {
      return new RegExp("(^|[^a-z0-9_])" + w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "($|[^a-z0-9_])");
    });
    window.ANNOGEN_SEARCH.forEach(function (page) {
      page.s.forEach(function (sec) {
        var hay = (page.p + " " + sec.h + " " + sec.t).toLowerCase();
        if (!words.every(function (w) { return hay.indexOf(w) >= 0; })) return;
        var score = 0;
        words.forEach(function (w) {
          if (sec.h.toLowerCase().indexOf(w) >= 0) score += 5;
          if (page.p.toLowerCase().indexOf(w) >= 0) score += 3;
          score += Math.min(5, sec.t.toLowerCase().split(w).length - 1);
        });
        var exact = whole.every(function (re) { return re.test(hay); });
        hits.push({ page: page, sec: sec, score: score, exact: exact ? 1 : 0 });
      });
    });
    hits.sort(function (a, b) { return (b.exact - a.exact) || (b.score - a.score); });
    return hits.slice(0, 20).map(function (h) {
      return { href: base + h.page.u + "#" + h.sec.a, title: h.sec.h, where: (h.page.c ? h.page.c + " \u203a " : "") + h.page.p,
               text: snippet(h.sec.t, words) };
    });
  }
  function show(results, q) {
    list.innerHTML = "";
    if (!q) { list.hidden = true; return; }
    if (!results.length) {
      list.innerHTML = '<li class="none">No results for \u201c' + escapeHtml(q) + "\u201d</li>";
    }
    results.forEach(function (r) {
      var li = document.createElement("li");
      li.innerHTML = '<a href="' + escapeHtml(r.href) + '"><span class="r-title">' + escapeHtml(r.title) +
        '</span> <span class="r-where">' + escapeHtml(r.where) + '</span><span class="r-text">' + r.text + "</span></a>";
      list.appendChild(li);
    });
    list.hidden = false;
  }
  /* The index is loaded the first time the reader uses the search box, as a script
     (which works over file://, where fetch() does not), so pages stay light. */
  var loading = null;
  function withIndex(done) {
    if (window.ANNOGEN_SEARCH) { done(); return; }
    if (!loading) {
      loading = [];
      var s = document.createElement("script");
      s.src = base + "static/search-index.js";
      s.onload = function () { loading.forEach(function (f) { f(); }); };
      document.head.appendChild(s);
    }
    loading.push(done);
  }
  function update() {
    withIndex(function () { show(search(input.value.trim()), input.value.trim()); });
  }
  if (input && list) {
    input.addEventListener("focus", function () { withIndex(function () {}); });
    input.addEventListener("input", update);
    input.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { input.value = ""; show([], ""); }
      if (e.key === "Enter") { var a = list.querySelector("a"); if (a) window.location.href = a.href; }
    });
    document.addEventListener("keydown", function (e) {
      if (e.key === "/" && document.activeElement !== input && !/INPUT|TEXTAREA/.test(document.activeElement.tagName)) {
        e.preventDefault(); input.focus();
      }
    });
    document.addEventListener("click", function (e) {
      if (!e.target.closest(".search")) list.hidden = true;
    });
  }
})();
