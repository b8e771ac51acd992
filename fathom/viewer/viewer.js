/* fathom trace viewer: builds the run tree from the embedded JSONL events.
   Only headers are drawn up front; a node's body is built the first time it is opened,
   so traces of tens of thousands of events open at once. No network, no dependencies. */
(function () {
  "use strict";
  var PAGE = 100; // sub-calls drawn per "show more" step

  // ---------- small helpers ----------
  function esc(s) {
    return String(s == null ? "" : s).replace(/&/g, "&amp;").replace(/</g, "&lt;")
      .replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }
  function el(tag, cls, html) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (html != null) e.innerHTML = html;
    return e;
  }
  function short(s, n) {
    s = String(s == null ? "" : s).replace(/\s+/g, " ").trim();
    return s.length > n ? s.slice(0, n - 1) + "\u2026" : s;
  }
  function fmtTok(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(2) + "M";
    if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return String(n);
  }
  function fmtUsd(x) {
    if (!x) return "$0";
    return x >= 0.1 ? "$" + x.toFixed(2) : "$" + x.toFixed(x >= 0.001 ? 4 : 6);
  }
  function fmtSec(s) {
    if (s == null || isNaN(s)) return "";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    return Math.floor(s / 60) + "m" + String(Math.round(s % 60)).padStart(2, "0") + "s";
  }
  function tot() { return { calls: 0, failed: 0, refused: 0, pt: 0, ct: 0, usd: 0, kt: 0 }; }
  // The one counting rule, as fathom.progress.CallCounts: every lm_call is a call; of them,
  // `refused` the budget refused or cut off, `failed` ended in another error.
  function addCall(t, e) {
    t.calls += 1;
    if (e.refused) t.refused += 1;
    else if (e.error) t.failed += 1;
    t.pt += e.prompt_tokens || 0;
    t.ct += e.completion_tokens || 0;
    t.usd += e.usd || 0;
    t.kt += e.cached_tokens || 0;  // prompt tokens the provider's prompt cache held
  }
  function addTot(a, b) {
    a.calls += b.calls; a.failed += b.failed; a.refused += b.refused; a.pt += b.pt; a.ct += b.ct; a.usd += b.usd;
    a.kt += b.kt;
  }
  function totText(t) {
    return fmtTok(t.pt + t.ct) + " tok \u00b7 " + fmtUsd(t.usd);
  }

  var highlight = window.fathomHighlight;

  // ---------- index the events (one pass) ----------
  var DATA = JSON.parse(document.getElementById("fathom-trace").textContent);
  var events = DATA.events;
  var runs = {}, runOrder = [], childStart = {}, calls = [], inflight = {}, truncated = null;
  var limits = [];  // concurrency events: each endpoint's limit as it changed
  function run(id) {
    var r = runs[id];
    if (!r) {
      r = runs[id] = { id: id, start: null, end: null, fin: null, iters: {}, iterList: [],
        depth: 0, direct: tot(), lastT: 0, firstT: null, parent: null, children: [], total: null,
        cites: [], pendingCites: [] };
      runOrder.push(id);
    }
    return r;
  }
  function iter(r, n) {
    var it = r.iters[n];
    if (!it) {
      it = r.iters[n] = { n: n, ev: null, root: [], subs: [], execs: [], children: [], fin: null,
        refused: [],
        direct: tot(), firstT: null, inflight: [] };
      r.iterList.push(it);
    }
    return it;
  }
  for (var i = 0; i < events.length; i++) {
    var e = events[i];
    e._i = i;
    var r = run(e.run_id);
    r.depth = e.depth || 0;
    if (e.t > r.lastT) r.lastT = e.t;
    if (r.firstT == null) r.firstT = e.t;
    var it = e.iteration != null && e.type !== "run_end" ? iter(r, e.iteration) : null;
    if (it && it.firstT == null) it.firstT = e.t;
    switch (e.type) {
      case "run_start": r.start = e; break;
      case "iteration": it.ev = e; it.firstT = Math.min(it.firstT, e.t); break;
      case "lm_call":
        (e.role === "root" ? it.root : it.subs).push(e);
        addCall(it.direct, e); addCall(r.direct, e); calls.push(e);
        if (e.call_id) delete inflight[e.call_id];
        break;
      case "lm_call_start": if (e.call_id) inflight[e.call_id] = e; break;
      case "exec":  // the block that ran the cite() calls just before it
        it.execs.push(e); e._cites = r.pendingCites; r.pendingCites = [];
        e._cites.forEach(function (c) { c._exec = e; });
        break;
      case "citation": r.cites.push(e); r.pendingCites.push(e); break;
      case "answer_refused": it.refused.push(e); break;
      case "subrlm_start":
        var c = { start: e, end: null, id: e.child_run_id };
        it.children.push(c); childStart[e.child_run_id] = c;
        break;
      case "subrlm_end": if (childStart[e.child_run_id]) childStart[e.child_run_id].end = e; break;
      case "final": r.fin = e; it.fin = e; break;
      case "run_end": r.end = e; break;
      case "trace_truncated": truncated = e; break;
      case "concurrency": limits.push(e); break;
      // any other type (from a newer fathom) is counted, not drawn
    }
  }
  // Calls started but not finished: a trace still being written (or a run that was killed).
  // A stuck call has waited until the trace's end, or until the page was made if the run
  // is still going (its start_at maps the page's wall clock to trace time).
  var lastT = 0;
  events.forEach(function (e) { if (e.t > lastT) lastT = e.t; });
  function waitedSince(s) {
    var root = rootId != null ? runs[rootId] : null;
    var startedAt = root && root.start ? root.start.started_at : 0;
    var until = lastT;
    if (root && !root.end && startedAt && DATA.rendered_at) {
      until = Math.max(lastT, DATA.rendered_at - startedAt);
    }
    return Math.max(0, until - s.t);
  }
  Object.keys(inflight).forEach(function (id) {
    var s = inflight[id];
    iter(run(s.run_id), s.iteration).inflight.push(s);
  });
  runOrder.forEach(function (id) {
    var r = runs[id];
    r.iterList.sort(function (a, b) { return a.n - b.n; });
    var cs = childStart[id];
    if (cs) { r.parent = cs.start.run_id; runs[cs.start.run_id].children.push(id); }
    else if (r.start && r.start.parent_run_id && runs[r.start.parent_run_id]) {
      r.parent = r.start.parent_run_id; runs[r.parent].children.push(id);
    }
  });
  function runTotal(r) {
    if (!r.total) {
      r.total = tot(); addTot(r.total, r.direct);
      r.children.forEach(function (c) { if (runs[c]) addTot(r.total, runTotal(runs[c])); });
    }
    return r.total;
  }
  function iterTotal(it) {
    var t = tot(); addTot(t, it.direct);
    it.children.forEach(function (c) { if (runs[c.id]) addTot(t, runTotal(runs[c.id])); });
    return t;
  }
  var rootId = null;
  for (var k = 0; k < runOrder.length; k++) {
    var rr = runs[runOrder[k]];
    if (!rr.parent && (!rr.start || !rr.start.parent_run_id)) { rootId = rr.id; break; }
  }
  if (rootId == null && runOrder.length) rootId = runOrder[0];

  // ---------- collapsible nodes, built lazily ----------
  var runNodes = {}, iterNodes = {};
  function node(opts) {
    var n = el("div", "node " + (opts.cls || ""));
    var head = el("div", "head");
    head.innerHTML = '<span class="tw">\u25b6</span><span class="title">' + opts.title + "</span>" +
      '<span class="sum">' + (opts.sum || "") + "</span>" +
      '<span class="meta">' + (opts.meta || "") + "</span>";
    var body = el("div", "body");
    n.appendChild(head); n.appendChild(body);
    n._build = opts.build; n._built = false;
    head.addEventListener("click", function () { toggle(n); });
    if (opts.open) openNode(n);
    return n;
  }
  function ensureBuilt(n) {
    if (!n._built) { n._built = true; n._build(n.lastChild); }
  }
  function openNode(n) {
    ensureBuilt(n);
    n.classList.add("open");
    for (var p = n.parentElement; p; p = p.parentElement) {
      if (p.classList && p.classList.contains("node")) p.classList.add("open");
    }
  }
  function toggle(n) {
    if (n.classList.contains("open")) n.classList.remove("open"); else openNode(n);
  }
  function pre(text, cls) {
    var b = el("div", "block " + (cls || ""));
    var p = el("pre"); p.textContent = text; b.appendChild(p);
    return b;
  }
  function codeBlock(code) {
    var b = el("div", "block code");
    b.appendChild(el("pre", null, highlight(code)));
    return b;
  }
  function label(text) { return el("div", "label", esc(text)); }
  // A span cite() recorded: where it is (path:line), its text, and the code that found it.
  function citeWhere(c) {
    var lines = c.line_start === c.line_end ? String(c.line_start) : c.line_start + "-" + c.line_end;
    if (typeof c.source === "string") return c.source + ":" + lines;
    return "context" + (c.source == null ? "" : "[" + c.source + "]") + ":" + lines;
  }
  function citeCard(c, withCode) {
    var card = el("div", "cite");
    card.appendChild(el("div", "where", esc(citeWhere(c))));
    card.appendChild(pre(c.text || ""));
    if (withCode && c._exec) {
      card.appendChild(node({ title: "code that found it", sum: esc(short(c._exec.code, 100)),
        build: function (b) { b.appendChild(codeBlock(c._exec.code || "")); } }));
    }
    return card;
  }

  // ---------- a run ----------
  function runNode(r, open) {
    var s = r.start || {};
    var status = r.end ? r.end.stop_reason : "running";
    var bad = r.end && (r.end.stop_reason === "error" || r.end.error);
    var t = runTotal(r);
    var n = node({
      cls: "run depth" + Math.min(r.depth, 3) + (bad ? " failed" : ""),
      title: (r.depth ? "Child RLM" : "Run") + ' <span class="badge">depth ' + r.depth + "</span>",
      sum: esc(short(s.query || "", 160)),
      meta: esc(r.iterList.length + " it \u00b7 " + totText(t) + " \u00b7 ") +
        '<span class="badge ' + (status === "final" ? "ok" : status === "running" ? "" : "bad") + '">' +
        esc(status) + "</span>",
      open: open,
      build: function (body) { buildRun(r, body); }
    });
    n.dataset.run = r.id;
    runNodes[r.id] = n;
    return n;
  }
  function buildRun(r, body) {
    var s = r.start || {};
    if (s.query) { body.appendChild(label("Query")); body.appendChild(pre(s.query)); }
    var meta = [];
    if (s.model) meta.push("model " + s.model);
    if (s.sub_model && s.sub_model !== s.model) meta.push("sub-model " + s.sub_model);
    var ctx = s.context || {};
    if (ctx.kind) meta.push("context " + ctx.kind + ", " + (ctx.total_chars || 0).toLocaleString() +
      " chars, " + (ctx.items || 0) + " item(s)");
    meta.push("run " + r.id);
    body.appendChild(el("div", "muted", esc(meta.join(" \u00b7 "))));
    if (ctx.preview) {
      body.appendChild(node({ title: "Context preview", sum: esc(short(ctx.preview, 120)),
        build: function (b) { b.appendChild(pre(ctx.preview)); } }));
    }
    r.iterList.forEach(function (it) { body.appendChild(iterNode(r, it)); });
    if (r.end) {
      body.appendChild(label("Answer (" + r.end.stop_reason + ", " + fmtSec(r.end.seconds) + ")"));
      body.appendChild(pre(r.end.answer || "(no answer)", r.end.error ? "err" : ""));
      if (r.end.error) body.appendChild(pre(r.end.error, "err"));
    } else {
      body.appendChild(el("div", "banner", "This run has not ended in the trace yet."));
    }
  }

  // ---------- an iteration ----------
  function iterBounds(r, it) {
    var idx = r.iterList.indexOf(it);
    var start = it.ev ? it.ev.t : it.firstT;
    var next = r.iterList[idx + 1];
    var end = next ? (next.ev ? next.ev.t : next.firstT) : (r.end ? r.end.t : r.lastT);
    return [start, end];
  }
  function iterNode(r, it) {
    var t = iterTotal(it);
    var b = iterBounds(r, it);
    var reply = it.root.length ? it.root[it.root.length - 1].response || "" : "";
    var reasoning = stripCode(reply);
    var nSub = it.subs.length, nFail = 0;
    it.subs.forEach(function (c) { if (c.error) nFail++; });
    var bits = [];
    if (it.execs.length) bits.push(it.execs.length + " block" + (it.execs.length > 1 ? "s" : ""));
    if (nSub) bits.push(nSub + " sub-call" + (nSub > 1 ? "s" : ""));
    if (it.children.length) bits.push(it.children.length + " child RLM" + (it.children.length > 1 ? "s" : ""));
    var badges = "";
    if (nFail) badges += ' <span class="badge bad">' + nFail + " failed</span>";
    if (it.fin) badges += ' <span class="badge ok">FINAL</span>';
    if (it.ev && it.ev.compacted) badges += ' <span class="badge">compacted</span>';
    if (it.inflight.length) badges += ' <span class="badge">' + it.inflight.length + " in flight</span>";
    var n = node({
      cls: "iter",
      title: "Iteration " + it.n + badges,
      sum: esc(short(reasoning || reply, 140)),
      meta: esc((bits.length ? bits.join(", ") + " \u00b7 " : "") + totText(t) + " \u00b7 " +
        fmtSec(Math.max(0, b[1] - b[0]))),
      build: function (body) { buildIter(r, it, body); }
    });
    n.dataset.iter = r.id + ":" + it.n;
    iterNodes[r.id + ":" + it.n] = n;
    return n;
  }
  function stripCode(reply) {
    return reply.replace(/```[A-Za-z0-9_+-]*[ \t]*\n[\s\S]*?```/g, "\u27e8code\u27e9").trim();
  }
  function replyBlocks(reply) {
    var re = /```([A-Za-z0-9_+-]*)[ \t]*\n([\s\S]*?)```/g, m, out = [];
    while ((m = re.exec(reply)) !== null) out.push(m[2]);
    return out;
  }
  function buildIter(r, it, body) {
    it.root.forEach(function (c, i) {
      var head = it.root.length > 1 ? "Model reply " + (i + 1) : "Model reply";
      body.appendChild(label(head + " \u2014 " + c.model + ", " + fmtTok(c.prompt_tokens) + " in / " +
        fmtTok(c.completion_tokens) + " out, " + fmtUsd(c.usd) + ", " + fmtSec(c.seconds) +
        (c.cached ? ", cached" : "")));
      if (c.error) body.appendChild(pre(c.error, "err"));
      var text = stripCode(c.response || "");
      if (text) body.appendChild(el("div", "reasoning", esc(text)));
      if (c.prompt) {
        body.appendChild(node({ title: "Prompt", sum: esc(short(c.prompt, 120)),
          meta: esc(c.prompt.length.toLocaleString() + " chars"),
          build: function (b) { b.appendChild(pre(c.prompt)); } }));
      }
    });
    // Sub-calls and child runs happen while a block runs; its exec event comes when it ends.
    var execs = it.execs.slice().sort(function (a, b) { return a.t - b.t; });
    var items = it.subs.map(function (c) { return { t: c.t, call: c, batch: c.batch_id }; })
      .concat(it.children.map(function (c) { return { t: c.start.t, child: c, batch: c.start.batch_id }; }))
      .sort(function (a, b) { return a.t - b.t; });
    var buckets = execs.map(function () { return []; }), orphan = [];
    items.forEach(function (x) {
      for (var j = 0; j < execs.length; j++) if (execs[j].t >= x.t) { buckets[j].push(x); return; }
      orphan.push(x);
    });
    execs.forEach(function (x, j) {
      var title = "Code" + (execs.length > 1 ? " block " + (j + 1) : "") + " \u2014 ran in " + fmtSec(x.seconds);
      body.appendChild(label(title));
      body.appendChild(codeBlock(x.code || ""));
      if (x.stdout) { body.appendChild(label("Output")); body.appendChild(pre(x.stdout)); }
      if (x.stderr) { body.appendChild(label("Stderr")); body.appendChild(pre(x.stderr, "err")); }
      if (x.error) { body.appendChild(label("Error")); body.appendChild(pre(x.error, "err")); }
      if (x.notice) { body.appendChild(label("Notice")); body.appendChild(pre(x.notice, "notice")); }
      if (x._cites && x._cites.length) {
        body.appendChild(label("Cited"));
        x._cites.forEach(function (c) { body.appendChild(citeCard(c, false)); });
      }
      if (!x.stdout && !x.stderr && !x.error) body.appendChild(el("div", "muted", "(no output)"));
      appendCalls(body, buckets[j]);
    });
    if (orphan.length || (!execs.length && it.root.length)) {
      var pending = replyBlocks(it.root.length ? it.root[it.root.length - 1].response || "" : "");
      pending.slice(execs.length).forEach(function (code) {
        body.appendChild(label("Code (running, no result in the trace yet)"));
        body.appendChild(codeBlock(code));
      });
      appendCalls(body, orphan);
    }
    if (it.inflight.length) {
      body.appendChild(label("In flight (started, no reply in the trace yet)"));
      it.inflight.forEach(function (s) {
        body.appendChild(node({ cls: "call inflight", title: s.role === "root" ? "model call" : "llm_query",
          sum: esc(short(s.prompt, 140)),
          meta: esc(s.model) + " \u00b7 waiting " + fmtSec(waitedSince(s)),
          build: function (b) { b.appendChild(pre(s.prompt || "")); } }));
      });
    }
    it.refused.forEach(function (x) {
      body.appendChild(label("FINAL refused: it does not match the schema"));
      body.appendChild(pre(x.answer || "", "err"));
      body.appendChild(pre((x.errors || []).join("\n"), "err"));
    });
    if (it.fin) {
      body.appendChild(label("FINAL (" + it.fin.source + ")"));
      body.appendChild(pre(it.fin.answer, ""));
    }
  }
  function appendCalls(body, items) {
    if (!items.length) return;
    body.appendChild(label("Sub-calls"));
    // The calls of one batch share an id and may finish interleaved with others: group them.
    var groups = {}, out = [];
    items.forEach(function (x) {
      if (!x.batch) { out.push(x); return; }
      if (!groups[x.batch]) { groups[x.batch] = []; out.push(groups[x.batch]); }
      groups[x.batch].push(x);
    });
    out.forEach(function (x) {
      if (Array.isArray(x)) body.appendChild(batchNode(x));
      else body.appendChild(x.call ? callNode(x.call) : childNode(x.child));
    });
  }
  function batchNode(group) {
    var isChild = !!group[0].child, t = tot(), failed = 0;
    group.forEach(function (x) {
      if (x.call) { addCall(t, x.call); if (x.call.error) failed++; }
      else if (runs[x.child.id]) { addTot(t, runTotal(runs[x.child.id])); if (x.child.end && x.child.end.error) failed++; }
    });
    var first = group[0], span = 0;
    group.forEach(function (x) { if (x.call) span = Math.max(span, x.call.seconds || 0); });
    return node({
      cls: "batch",
      title: (isChild ? "rlm_query_batched" : "llm_query_batched") + " \u00d7 " + group.length +
        (failed ? ' <span class="badge bad">' + failed + " failed</span>" : ""),
      sum: esc(short(first.call ? first.call.prompt : first.child.start.prompt, 100)),
      meta: esc(totText(t)),
      build: function (body) {
        var shown = 0;
        var more = el("div", "more");
        function page() {
          var stop = Math.min(group.length, shown + PAGE);
          for (; shown < stop; shown++) {
            var x = group[shown];
            body.insertBefore(x.call ? callNode(x.call, shown + 1) : childNode(x.child, shown + 1), more);
          }
          more.innerHTML = "";
          if (shown < group.length) {
            var btn = el("button", null, "Show " + Math.min(PAGE, group.length - shown) + " more of " +
              (group.length - shown));
            btn.addEventListener("click", page);
            more.appendChild(btn);
          }
        }
        body.appendChild(more);
        page();
      }
    });
  }
  function callNode(c, index) {
    var n = node({
      cls: "call" + (c.error ? " failed" : ""),
      title: (index ? "#" + index + " " : "") + "llm_query" + (c.error ? ' <span class="badge bad">failed</span>' : "") +
        (c.cached ? ' <span class="badge">cached</span>' : ""),
      sum: esc(short(c.prompt, 110)) + " \u2192 " + esc(short(c.error || c.response, 80)),
      meta: esc(c.model + " \u00b7 " + fmtTok((c.prompt_tokens || 0) + (c.completion_tokens || 0)) +
        " tok \u00b7 " + fmtUsd(c.usd) + " \u00b7 " + fmtSec(c.seconds)),
      build: function (body) {
        body.appendChild(label("Prompt (" + (c.prompt || "").length.toLocaleString() + " chars)"));
        body.appendChild(pre(c.prompt || ""));
        body.appendChild(label(c.error ? "Error" : "Reply"));
        body.appendChild(pre(c.error || c.response || "", c.error ? "err" : ""));
      }
    });
    n.dataset.call = c.call_id || "";
    return n;
  }
  function childNode(c, index) {
    var r = runs[c.id];
    if (!r) {
      return node({ title: (index ? "#" + index + " " : "") + "rlm_query (no events yet)",
        sum: esc(short(c.start.prompt, 120)), build: function (b) { b.appendChild(pre(c.start.prompt)); } });
    }
    return runNode(r, false);
  }

  // ---------- header, stats, per-model table ----------
  function renderHeader(root) {
    var app = document.getElementById("app");
    var s = root.start || {};
    var endT = 0;
    events.forEach(function (e) { if (e.t > endT) endT = e.t; });
    app.appendChild(el("h1", null, "fathom run" + (s.model ? " \u2014 " + esc(s.model) : "")));
    var sub = [];
    if (s.started_at) sub.push(new Date(s.started_at * 1000).toLocaleString());
    sub.push(events.length.toLocaleString() + " events");
    sub.push(esc(DATA.source || ""));
    app.appendChild(el("div", "muted", sub.join(" \u00b7 ")));
    if (!root.end) {
      app.appendChild(el("div", "banner", "This trace is still being written (no run_end yet): " +
        "showing the " + events.length.toLocaleString() + " events recorded so far. Run `fathom view` again to refresh."));
    }
    if (DATA.problems && DATA.problems.length) {
      var skipped = el("div", "banner", "Skipped " + DATA.problems.length + " unreadable line(s) of the trace: " +
        esc(DATA.problems.slice(0, 5).join("; ")) + (DATA.problems.length > 5 ? "; \u2026" : ""));
      skipped.id = "trace-problems";
      app.appendChild(skipped);
    }
    if (truncated) {
      app.appendChild(el("div", "banner", "The trace reached its size limit (" +
        (truncated.max_bytes / 1048576).toLocaleString() + " MB, RLM(trace_max_mb=...)) at " +
        fmtSec(truncated.t) + ": later events were dropped, except the run's end."));
    }
    if (s.query) { app.appendChild(el("h2", null, "Query")); app.appendChild(el("div", "card reasoning", esc(s.query))); }
    if (root.end && root.end.error) {  // a failed run says why before anything else
      app.appendChild(el("h2", null, "Error"));
      var why = pre(root.end.error, "err");
      why.id = "run-error";
      app.appendChild(why);
    }
    app.appendChild(el("h2", null, "Answer"));
    var ans = root.end ? root.end.answer : root.fin ? root.fin.answer : "";
    var failed = root.end && root.end.stop_reason !== "final";
    var answerRow = el("div", "answer-row");  // the answer, and beside it what it cites
    answerRow.appendChild(el("div", "card answer" + (failed ? " failed" : ""),
      esc(ans || (root.end ? "(no answer)" : "(not answered yet)"))));
    if (root.cites.length) {
      var cited = el("div", "citations", '<div class="label">Citations (' + root.cites.length + ")</div>");
      root.cites.forEach(function (c) { cited.appendChild(citeCard(c, true)); });
      answerRow.appendChild(cited);
    }
    app.appendChild(answerRow);
    var all = tot(), roots = 0, subs = 0, maxDepth = 0, nRuns = runOrder.length;
    calls.forEach(function (c) { addCall(all, c); if (c.role === "root") roots++; else subs++; });
    runOrder.forEach(function (id) { maxDepth = Math.max(maxDepth, runs[id].depth); });
    var stats = [
      [root.end ? root.end.stop_reason : "running", "stop reason"],
      [String(root.iterList.length), "iterations"],
      [String(all.calls), "calls (" + roots + " root, " + subs + " sub)", "calls"],
      [all.failed + " / " + all.refused, "failed / refused calls", "failed-refused"],
      [String(nRuns - 1), "child RLMs (max depth " + maxDepth + ")"],
      [fmtTok(all.pt) + " / " + fmtTok(all.ct), "tokens in / out"],
      [fmtTok(all.kt), "tokens in from the prompt cache", "cached-tokens"],
      [fmtUsd(all.usd), "cost"],
      [fmtSec(root.end ? root.end.seconds || endT : endT), "elapsed"]
    ];
    var box = el("div", "stats");
    stats.forEach(function (x) {
      var stat = el("div", "stat", "<b>" + esc(x[0]) + "</b><span>" + esc(x[1]) + "</span>");
      if (x[2]) stat.setAttribute("data-stat", x[2]);
      box.appendChild(stat);
    });
    app.appendChild(box);
    var byModel = {};
    calls.forEach(function (c) {
      var m = byModel[c.model] || (byModel[c.model] = { t: tot(), cached: 0, sec: 0 });
      addCall(m.t, c); if (c.cached) m.cached++; m.sec += c.seconds || 0;
    });
    var rows = Object.keys(byModel).sort().map(function (m) {
      var x = byModel[m];
      return "<tr><td class=mono>" + esc(m) + "</td><td class=num>" + x.t.calls + "</td><td class=num>" +
        x.t.failed + "</td><td class=num>" + x.cached + "</td><td class=num>" + x.t.pt.toLocaleString() +
        "</td><td class=num>" + x.t.ct.toLocaleString() + "</td><td class=num>" + fmtUsd(x.t.usd) +
        "</td><td class=num>" + fmtSec(x.sec) + "</td></tr>";
    });
    if (rows.length) {
      app.appendChild(el("h2", null, "Models"));
      app.appendChild(el("div", "card", "<table><tr><th>model</th><th class=num>calls</th><th class=num>failed</th>" +
        "<th class=num>cached</th><th class=num>prompt tok</th><th class=num>completion tok</th>" +
        "<th class=num>cost</th><th class=num>model time</th></tr>" + rows.join("") + "</table>"));
    }
    return endT;
  }

  // ---------- timeline (canvas: fine for tens of thousands of calls) ----------
  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function renderTimeline(endT) {
    var app = document.getElementById("app");
    app.appendChild(el("h2", null, "Timeline"));
    var lanes = [], laneOf = {};
    calls.forEach(function (c) {
      var key = c.depth + ":" + c.role;
      if (!(key in laneOf)) { laneOf[key] = -1; lanes.push({ key: key, depth: c.depth, role: c.role }); }
    });
    lanes.sort(function (a, b) { return a.depth - b.depth || (a.role === "root" ? -1 : 1); });
    lanes.forEach(function (l, i) { laneOf[l.key] = i; });
    var colors = [css("--d0"), css("--d1"), css("--d2"), css("--d3")];
    var legend = el("div", "legend");
    lanes.forEach(function (l) {
      legend.appendChild(el("span", null, '<i style="background:' + colors[Math.min(l.depth, 3)] +
        (l.role === "sub" ? ";opacity:.55" : "") + '"></i>depth ' + l.depth + " " + l.role + " calls"));
    });
    legend.appendChild(el("span", null, '<i style="background:' + css("--bad") + '"></i>failed'));
    legend.appendChild(el("span", null, "\u2014 lines: cumulative tokens (solid) and dollars (dashed)" +
      (limits.length ? ", concurrency limit (dotted, steps)" : "") + ". Click a call to open it."));
    app.appendChild(legend);
    var gantt = el("canvas"); gantt.id = "gantt";
    var cum = el("canvas"); cum.id = "cumulative";
    app.appendChild(gantt); app.appendChild(el("div", null, "&nbsp;")); app.appendChild(cum);
    var tip = document.getElementById("tip");
    var laneH = 16, pad = 44, span = Math.max(endT, 1e-3);
    var sorted = calls.slice().sort(function (a, b) { return a.t - b.t; });
    var iterT = [];
    var root = runs[rootId];
    if (root) root.iterList.forEach(function (it) { iterT.push([it.n, it.ev ? it.ev.t : it.firstT]); });
    function x(t, w) { return pad + (w - pad - 10) * (t / span); }
    function draw() {
      var dpr = window.devicePixelRatio || 1, w = gantt.clientWidth;
      var gh = Math.max(1, lanes.length) * laneH + 24, ch = 120;
      [[gantt, gh], [cum, ch]].forEach(function (p) {
        p[0].width = w * dpr; p[0].height = p[1] * dpr; p[0].style.height = p[1] + "px";
        p[0].getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
      });
      var g = gantt.getContext("2d");
      g.font = "11px system-ui, sans-serif"; g.fillStyle = css("--muted"); g.strokeStyle = css("--line");
      iterT.forEach(function (p) {
        var xx = x(p[1], w); g.beginPath(); g.moveTo(xx, 0); g.lineTo(xx, gh - 14); g.stroke();
        g.fillText(String(p[0]), xx + 2, gh - 3);
      });
      lanes.forEach(function (l, i) { g.fillText("d" + l.depth + " " + l.role, 2, i * laneH + 12); });
      var bad = css("--bad");
      sorted.forEach(function (c) {
        var lane = laneOf[c.depth + ":" + c.role];
        var x0 = x(Math.max(0, c.t - (c.seconds || 0)), w), x1 = x(c.t, w);
        g.globalAlpha = c.role === "sub" ? 0.55 : 0.9;
        g.fillStyle = c.error ? bad : colors[Math.min(c.depth, 3)];
        g.fillRect(x0, lane * laneH + 3, Math.max(1.5, x1 - x0), laneH - 6);
      });
      g.globalAlpha = 1;
      var cx = cum.getContext("2d"), ptok = 0, pusd = 0, totTok = 0, totUsd = 0;
      sorted.forEach(function (c) { totTok += (c.prompt_tokens || 0) + (c.completion_tokens || 0); totUsd += c.usd || 0; });
      [["tok", css("--accent"), []], ["usd", css("--ok"), [5, 4]]].forEach(function (spec) {
        cx.strokeStyle = spec[1]; cx.setLineDash(spec[2]); cx.lineWidth = 1.5; cx.beginPath();
        cx.moveTo(x(0, w), ch - 16); ptok = 0; pusd = 0;
        sorted.forEach(function (c) {
          ptok += (c.prompt_tokens || 0) + (c.completion_tokens || 0); pusd += c.usd || 0;
          var v = spec[0] === "tok" ? (totTok ? ptok / totTok : 0) : (totUsd ? pusd / totUsd : 0);
          cx.lineTo(x(c.t, w), ch - 16 - v * (ch - 30));
        });
        cx.stroke();
      });
      drawLimits(cx, w, ch);
      cx.setLineDash([]); cx.font = "11px system-ui, sans-serif"; cx.fillStyle = css("--muted");
      cx.fillText(fmtTok(totTok) + " tok", 2, 14); cx.fillText(fmtUsd(totUsd), 2, 28);
      cx.fillText("0 s", pad, ch - 3); cx.fillText(fmtSec(span), w - 60, ch - 3);
    }
    // Each endpoint's concurrency limit (fathom.limiter) as a step line, scaled to the highest.
    function drawLimits(cx, w, ch) {
      if (!limits.length) return;
      var top = Math.max.apply(null, limits.map(function (e) { return e.limit; })), by = {};
      limits.forEach(function (e) { (by[e.endpoint] = by[e.endpoint] || []).push(e); });
      cx.strokeStyle = css("--warn") || css("--muted"); cx.setLineDash([2, 3]); cx.lineWidth = 1.5;
      Object.keys(by).forEach(function (k) {
        var y = function (v) { return ch - 16 - (v / top) * (ch - 30); }, prev = null;
        cx.beginPath();
        by[k].forEach(function (e) {
          if (prev === null) cx.moveTo(x(e.t, w), y(e.limit));
          else { cx.lineTo(x(e.t, w), y(prev)); cx.lineTo(x(e.t, w), y(e.limit)); }
          prev = e.limit;
        });
        cx.lineTo(x(span, w), y(prev));
        cx.stroke();
      });
      cx.setLineDash([]); cx.fillStyle = css("--muted");
      cx.fillText("limit " + limits[limits.length - 1].limit + " (max " + top + ")", 2, 42);
    }
    function hit(ev) {
      var rect = gantt.getBoundingClientRect(), w = gantt.clientWidth;
      var lane = Math.floor((ev.clientY - rect.top) / laneH), px = ev.clientX - rect.left, best = null;
      for (var i = 0; i < sorted.length; i++) {
        var c = sorted[i];
        if (laneOf[c.depth + ":" + c.role] !== lane) continue;
        var x0 = x(Math.max(0, c.t - (c.seconds || 0)), w), x1 = Math.max(x0 + 1.5, x(c.t, w));
        if (px >= x0 - 2 && px <= x1 + 2) best = c;
      }
      return best;
    }
    gantt.addEventListener("mousemove", function (ev) {
      var c = hit(ev);
      if (!c) { tip.style.display = "none"; return; }
      tip.textContent = c.role + " call \u00b7 " + c.model + " \u00b7 iteration " + c.iteration + " \u00b7 depth " +
        c.depth + "\n" + fmtSec(c.seconds) + " \u00b7 " + fmtTok((c.prompt_tokens || 0) + (c.completion_tokens || 0)) +
        " tok" + (c.cached_tokens ? " (" + fmtTok(c.cached_tokens) + " cached)" : "") +
        " \u00b7 " + fmtUsd(c.usd) + (c.error ? "\n" + short(c.error, 200) : "\n" + short(c.prompt, 160));
      tip.style.display = "block"; tip.style.left = ev.clientX + 12 + "px"; tip.style.top = ev.clientY + 12 + "px";
    });
    gantt.addEventListener("mouseleave", function () { tip.style.display = "none"; });
    gantt.addEventListener("click", function (ev) { var c = hit(ev); if (c) reveal(c); });
    draw();
    window.addEventListener("resize", draw);
  }

  // Open the iteration (and batch) holding an event, building only the nodes on the way.
  function revealRun(id) {
    if (!runNodes[id]) {
      var cs = childStart[id];
      if (!cs) return null;
      var parentIter = revealIter(cs.start.run_id, cs.start.iteration);
      if (!parentIter) return null;
    }
    var n = runNodes[id];
    if (n) openNode(n);
    return n;
  }
  function revealIter(runId, n) {
    if (!revealRun(runId)) return null;
    var it = iterNodes[runId + ":" + n];
    if (it) openNode(it);
    return it;
  }
  function reveal(c) {
    var n = revealIter(c.run_id, c.iteration);
    if (!n) return;
    var target = n;
    if (c.call_id) {
      var found = n.querySelector('[data-call="' + c.call_id + '"]');
      if (!found && c.batch_id) {
        var batches = n.querySelectorAll(".node.batch");
        for (var i = 0; i < batches.length && !found; i++) {
          openNode(batches[i]); found = batches[i].querySelector('[data-call="' + c.call_id + '"]');
        }
      }
      if (found) { openNode(found); target = found; }
    }
    target.scrollIntoView({ block: "center" });
    target.classList.add("hl");
    setTimeout(function () { target.classList.remove("hl"); }, 1500);
  }

  // ---------- search: scan every event's text, list matches, open the one clicked ----------
  var FIELDS = ["query", "prompt", "response", "code", "stdout", "stderr", "error", "answer",
    "text"];  // text: what a citation quotes
  function revealEvent(e) {
    if (e.type === "lm_call") { reveal(e); return; }
    var target = null;
    if (e.type === "subrlm_start") target = revealRun(e.child_run_id);
    else if (e.iteration != null && e.type !== "run_end") target = revealIter(e.run_id, e.iteration);
    else target = revealRun(e.run_id);
    if (!target) return;
    target.scrollIntoView({ block: "center" });
    target.classList.add("hl");
    setTimeout(function () { target.classList.remove("hl"); }, 1500);
  }
  function search(q, out) {
    out.innerHTML = "";
    if (q.length < 2) return;
    var needle = q.toLowerCase(), hits = 0, LIMIT = 50;
    for (var i = 0; i < events.length && hits < LIMIT; i++) {
      var e = events[i];
      if (e.type === "lm_call_start" && !inflight[e.call_id]) continue; // its lm_call says it all
      for (var f = 0; f < FIELDS.length; f++) {
        var v = e[FIELDS[f]];
        if (typeof v !== "string") continue;
        var at = v.toLowerCase().indexOf(needle);
        if (at < 0) continue;
        var a = Math.max(0, at - 50), b = Math.min(v.length, at + q.length + 70);
        var row = el("div", "hit", '<span class="badge">' + esc(e.type + " \u00b7 depth " + e.depth +
          (e.iteration != null && e.type !== "run_end" ? " \u00b7 it " + e.iteration : "")) + "</span> " +
          '<span class="muted">' + FIELDS[f] + ":</span> " + esc(v.slice(a, at)) + "<mark>" +
          esc(v.slice(at, at + q.length)) + "</mark>" + esc(v.slice(at + q.length, b)));
        row.addEventListener("click", revealEvent.bind(null, e));
        out.appendChild(row);
        hits++;
        break;
      }
    }
    if (!hits) out.appendChild(el("div", "muted", "No event mentions that."));
    else if (hits === LIMIT) out.appendChild(el("div", "muted", "First " + LIMIT + " matches shown."));
  }

  // ---------- page ----------
  var app = document.getElementById("app");
  if (!rootId) {
    app.appendChild(el("h1", null, "fathom run"));
    app.appendChild(el("div", "banner", "The trace has no events yet."));
    return;
  }
  var rootRun = runs[rootId];
  var endT = renderHeader(rootRun);
  if (calls.length) renderTimeline(endT);
  app.appendChild(el("h2", null, "Run tree"));
  var bar = el("div", "toolbar");
  var expand = el("button", null, "Expand all iterations");
  expand.addEventListener("click", function () {
    rootRun.iterList.forEach(function (it) { var n = iterNodes[rootId + ":" + it.n]; if (n) openNode(n); });
  });
  var collapse = el("button", null, "Collapse all");
  collapse.addEventListener("click", function () {
    var open = document.querySelectorAll(".node.open");
    for (var i = 0; i < open.length; i++) if (open[i] !== runNodes[rootId]) open[i].classList.remove("open");
  });
  var box = el("input"); box.type = "search"; box.id = "search";
  box.placeholder = "Search prompts, replies, code, output\u2026";
  var results = el("div"); results.id = "hits";
  var timer = null;
  box.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { search(box.value.trim(), results); }, 150);
  });
  bar.appendChild(expand); bar.appendChild(collapse); bar.appendChild(box);
  app.appendChild(bar);
  app.appendChild(results);
  var tree = el("div"); tree.id = "tree";
  app.appendChild(tree);
  tree.appendChild(runNode(rootRun, true));
  runOrder.forEach(function (id) { // runs whose parent is not in the trace still get shown
    var r = runs[id];
    if (id !== rootId && !childStart[id] && !(r.start && r.start.parent_run_id && runs[r.start.parent_run_id])) {
      tree.appendChild(runNode(r, false));
    }
  });
  document.body.setAttribute("data-ready", "1");
})();
