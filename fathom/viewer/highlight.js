/* A tiny Python highlighter for the fathom viewer: one regex pass, HTML-escaped spans.
   Exposed as window.fathomHighlight(code) -> html. */
(function () {
  "use strict";
  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;");
  }
  var KW = {};
  ("False None True and as assert async await break class continue def del elif else except " +
   "finally for from global if import in is lambda nonlocal not or pass raise return try while " +
   "with yield match case").split(" ").forEach(function (k) { KW[k] = 1; });
  var BI = {};
  ("print len range enumerate zip map filter sorted sum min max list dict set tuple str int float " +
   "bool open isinstance type any all abs round reversed repr hasattr getattr json re " +
   "llm_query llm_query_batched rlm_query rlm_query_batched FINAL FINAL_VAR SHOW_VARS context " +
   "self Exception ValueError KeyError").split(" ").forEach(function (k) { BI[k] = 1; });
  var TOKEN = new RegExp(
    "(#[^\\n]*)" +                                                       // 1 comment
    "|((?:[rRbBuUfF]{1,2})?(?:\"\"\"[\\s\\S]*?(?:\"\"\"|$)|'''[\\s\\S]*?(?:'''|$)" +
    "|\"(?:\\\\.|[^\"\\\\\\n])*\"?|'(?:\\\\.|[^'\\\\\\n])*'?))" +        // 2 string
    "|(\\b(?:0[xXoObB][0-9a-fA-F_]+|\\d[\\d_]*\\.?[\\d_]*(?:[eE][+-]?\\d+)?j?)\\b)" + // 3 number
    "|(@[A-Za-z_][\\w.]*)" +                                              // 4 decorator
    "|([A-Za-z_]\\w*)", "g");                                              // 5 name
  function highlight(code) {
    var out = [], last = 0, prev = "", m;
    TOKEN.lastIndex = 0;
    while ((m = TOKEN.exec(code)) !== null) {
      if (m[0] === "") { TOKEN.lastIndex++; continue; }
      out.push(esc(code.slice(last, m.index)));
      var cls = "";
      if (m[1]) cls = "com";
      else if (m[2]) cls = "str";
      else if (m[3]) cls = "num";
      else if (m[4]) cls = "dec";
      else {
        var w = m[5];
        if (KW[w]) cls = "kw";
        else if (prev === "def" || prev === "class") cls = "fn";
        else if (BI[w]) cls = "bi";
        else if (/^\s*\(/.test(code.slice(TOKEN.lastIndex, TOKEN.lastIndex + 4))) cls = "fn";
        prev = w;
      }
      if (!m[5]) prev = "";
      out.push(cls ? '<span class="tok-' + cls + '">' + esc(m[0]) + "</span>" : esc(m[0]));
      last = TOKEN.lastIndex;
    }
    out.push(esc(code.slice(last)));
    return out.join("");
  }
  window.fathomHighlight = highlight;
})();
