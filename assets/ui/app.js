// llmtape's web view: four views over the admin JSON API
// (/_llmtape/api/...), routed by the URL's hash:
//   #/recordings?route=&model=&namespace=&fingerprint=&q=&offset=
//   #/recording/KEY   one recording whole
//   #/fingerprints    per model, which fingerprints were seen when
//   #/audit           the fingerprint flips, with diffs and logprob deltas
// and the live counters above them, polled every second.
//
// Everything is built with DOM calls and textContent (recorded text is
// never parsed as HTML), and nothing but this proxy is ever asked.
"use strict";

(function () {
  var API = "/_llmtape/api/";
  var PAGE = 50;
  var POLL_MS = 1000;
  // Rows of a stream's event table (the chart shows every event).
  var EVENT_ROWS = 500;
  var Charts = window.LlmtapeCharts;
  var view = document.getElementById("view");

  // ---- small helpers ------------------------------------------------------

  // h("div", {class: "x", "data-testid": "y", onclick: f}, child, "text", ...)
  function h(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === undefined || v === null || v === false) return;
        if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? "" : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) child.forEach(function (c) { append(node, c); });
    else node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  function getJSON(path) {
    return fetch(API + path, { headers: { accept: "application/json" }, cache: "no-store" }).then(function (r) {
      return r.text().then(function (body) {
        var doc = null;
        try { doc = JSON.parse(body); } catch (e) { /* not JSON: reported below */ }
        if (!r.ok) {
          var msg = doc && doc.error && doc.error.message ? doc.error.message : body.slice(0, 200);
          throw new Error(r.status + ": " + msg);
        }
        if (doc === null) throw new Error("the answer to " + path + " is not JSON");
        return doc;
      });
    });
  }

  function showError(where, err) {
    where.replaceChildren(h("div", { class: "error-box", "data-testid": "error" }, String(err.message || err)));
  }

  var numberFormat = new Intl.NumberFormat("en-US");
  function num(n) { return n === null || n === undefined ? "\u2013" : numberFormat.format(n); }
  function money(v) {
    if (v === null || v === undefined) return "\u2013";
    if (v === 0) return "$0";
    // Cents and up to four decimals; a smaller saving keeps two digits.
    return "$" + (v >= 100 ? v.toFixed(2) : v >= 1 ? v.toFixed(3) : v >= 0.01 ? v.toFixed(4) : v.toPrecision(2));
  }
  function when(rfc3339) {
    return rfc3339 ? String(rfc3339).replace("T", " ").replace(/(\.\d+)?Z$/, " UTC") : "\u2013";
  }
  function pretty(body) {
    if (body === null || body === undefined) return "";
    return typeof body === "string" ? body : JSON.stringify(body, null, 2);
  }
  function size(bytes) {
    if (bytes === null || bytes === undefined) return "\u2013";
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1048576) return (bytes / 1024).toFixed(1) + " KB";
    return (bytes / 1048576).toFixed(1) + " MB";
  }
  function orNone(s) { return s === null || s === undefined || s === "" ? "(none)" : s; }
  function shortKey(key) { return String(key).slice(0, 16); }

  function headersTable(headers) {
    if (!headers || headers.length === 0) return h("p", { class: "muted" }, "no headers");
    return h("table", { class: "headers" }, h("tbody", null, headers.map(function (pair) {
      return h("tr", null, h("td", null, pair[0]), h("td", null, pair[1]));
    })));
  }

  function kv(pairs) {
    var dl = h("dl", { class: "kv" });
    pairs.forEach(function (p) { dl.appendChild(h("dt", null, p[0])); dl.appendChild(h("dd", null, p[1])); });
    return dl;
  }

  // ---- live counters -----------------------------------------------------

  var counters = {
    hits: document.querySelector("[data-testid=count-hits]"),
    misses: document.querySelector("[data-testid=count-misses]"),
    rate: document.querySelector("[data-testid=count-hit-rate]"),
    recordings: document.querySelector("[data-testid=count-recordings]"),
    recorded: document.querySelector("[data-testid=count-recorded]"),
    tokens: document.querySelector("[data-testid=count-tokens]"),
    cost: document.querySelector("[data-testid=count-cost]"),
  };
  var live = document.querySelector("[data-testid=live]");
  var modeBadge = document.querySelector("[data-testid=mode]");

  function setCounter(node, value, title) {
    if (node.textContent !== value) {
      var first = node.textContent === "\u2013";
      node.textContent = value;
      var box = node.parentNode;
      if (!first) {
        box.classList.add("flash");
        setTimeout(function () { box.classList.remove("flash"); }, 700);
      }
    }
    if (title !== undefined) node.parentNode.title = title;
  }

  function pollStats() {
    getJSON("stats").then(function (s) {
      var served = s.hits + s.misses;
      setCounter(counters.hits, num(s.hits));
      setCounter(counters.misses, num(s.misses));
      setCounter(counters.rate, served ? Math.round((100 * s.hits) / served) + "%" : "\u2013");
      setCounter(counters.recordings, num(s.recordings));
      setCounter(counters.recorded, num(s.recorded));
      var saved = s.saved || {};
      var inTok = saved.input_tokens || 0, outTok = saved.output_tokens || 0;
      setCounter(counters.tokens, num(inTok + outTok), num(inTok) + " input + " + num(outTok) + " output tokens");
      var perModel = (s.models || []).map(function (m) {
        return m.model + ": " + num(m.hits) + " hits, " + (m.cost_usd === null ? "no [prices] entry" : money(m.cost_usd));
      }).join("\n");
      setCounter(counters.cost, money(saved.cost_usd), perModel || "no hits yet");
      modeBadge.textContent = s.mode ? "mode " + s.mode : "";
      live.className = "live on";
      live.lastChild.textContent = "live";
    }).catch(function (err) {
      live.className = "live off";
      live.lastChild.textContent = "stats unavailable: " + err.message;
    }).then(function () {
      setTimeout(pollStats, POLL_MS);
    });
  }

  // ---- recordings --------------------------------------------------------

  var FILTERS = [
    ["route", "routes", "Route"],
    ["model", "models", "Model"],
    ["namespace", "namespaces", "Namespace"],
    ["fingerprint", "fingerprints", "Fingerprint"],
  ];
  var ANY = "\u0000any";

  function recordingsView(params) {
    var state = {
      offset: Math.max(0, parseInt(params.get("offset") || "0", 10) || 0),
      q: params.get("q") || "",
    };
    FILTERS.forEach(function (f) { state[f[0]] = params.has(f[0]) ? params.get(f[0]) : ANY; });

    var selects = {};
    var filterBar = h("div", { class: "filters" });
    FILTERS.forEach(function (f) {
      var select = h("select", { "data-testid": "filter-" + f[0], onchange: function () {
        state[f[0]] = select.value; state.offset = 0; load();
      } }, h("option", { value: ANY }, "any"));
      selects[f[0]] = select;
      filterBar.appendChild(h("label", null, f[2], select));
    });
    var debounce = null;
    var search = h("input", { type: "search", placeholder: "text in request or answer", value: state.q,
      "data-testid": "filter-q", oninput: function () {
        clearTimeout(debounce);
        debounce = setTimeout(function () { state.q = search.value; state.offset = 0; load(); }, 300);
      } });
    filterBar.appendChild(h("label", null, "Text", search));
    var clear = h("button", { "data-testid": "filter-clear", onclick: function () {
      FILTERS.forEach(function (f) { state[f[0]] = ANY; });
      state.q = ""; search.value = ""; state.offset = 0; load();
    } }, "Clear");
    filterBar.appendChild(clear);

    var count = h("span", { class: "muted", "data-testid": "row-count" }, "loading\u2026");
    var tbody = h("tbody", { "data-testid": "recordings-rows" });
    var table = h("table", { "data-testid": "recordings-table" },
      h("thead", null, h("tr", null,
        h("th", null, "Recorded (UTC)"), h("th", null, "Route"), h("th", null, "Model"),
        h("th", null, "Request"), h("th", null, "Fingerprint"), h("th", null, "Status"),
        h("th", { class: "num" }, "Size"), h("th", { class: "num" }, "Hist."), h("th", null, "Answer"))),
      tbody);
    var prev = h("button", { "data-testid": "page-prev", onclick: function () { state.offset = Math.max(0, state.offset - PAGE); load(); } }, "\u2190 Newer");
    var next = h("button", { "data-testid": "page-next", onclick: function () { state.offset += PAGE; load(); } }, "Older \u2192");
    var pageInfo = h("span", { class: "muted", "data-testid": "page-info" });
    var status = h("div");
    view.replaceChildren(h("div", { class: "panel", "data-testid": "recordings-view" },
      h("h2", null, "Recordings ", count), filterBar, status,
      h("div", { class: "table-wrap" }, table),
      h("div", { class: "pager" }, prev, pageInfo, next)));

    function query() {
      var p = new URLSearchParams();
      FILTERS.forEach(function (f) { if (state[f[0]] !== ANY) p.set(f[0], state[f[0]]); });
      if (state.q) p.set("q", state.q);
      if (state.offset) p.set("offset", String(state.offset));
      return p;
    }

    function fillFacets(facets) {
      FILTERS.forEach(function (f) {
        var select = selects[f[0]];
        var values = (facets && facets[f[1]]) || [];
        var chosen = state[f[0]];
        if (chosen !== ANY && values.indexOf(chosen) < 0) values = values.concat([chosen]);
        select.replaceChildren(h("option", { value: ANY }, "any"));
        values.forEach(function (v) { select.appendChild(h("option", { value: v }, orNone(v))); });
        select.value = chosen;
      });
    }

    var seq = 0;
    function load() {
      var p = query();
      var hash = "#/recordings" + (p.toString() ? "?" + p : "");
      if (location.hash !== hash) history.replaceState(null, "", hash);
      p.set("limit", String(PAGE));
      if (!p.has("offset")) p.set("offset", "0");
      var mine = ++seq;
      getJSON("recordings?" + p).then(function (doc) {
        if (mine !== seq) return; // an older answer arriving late
        status.replaceChildren();
        fillFacets(doc.facets);
        var items = doc.items || [];
        tbody.replaceChildren();
        items.forEach(function (it) {
          var open = function () { location.hash = "#/recording/" + it.key; };
          var keys = function (e) { if (e.key === "Enter") open(); };
          tbody.appendChild(h("tr", { class: "row", "data-testid": "recording-row", "data-key": it.key, onclick: open, onkeydown: keys, tabindex: 0, title: it.key },
            h("td", { class: "mono nowrap" }, when(it.recorded_at).replace(" UTC", "")),
            h("td", null, h("span", { class: "pill" }, it.route)),
            h("td", { class: "nowrap" }, it.model || "\u2013"),
            h("td", { class: "mono nowrap" }, it.method + " " + it.path, it.namespace ? h("div", { class: "muted" }, "ns " + it.namespace) : null),
            h("td", { class: "mono" }, it.fingerprint || "\u2013"),
            h("td", { class: "nowrap" }, h("span", { class: "pill " + (it.status < 400 ? "ok" : "err") }, it.status),
              it.stream ? [" ", h("span", { class: "pill stream" }, "stream")] : null),
            h("td", { class: "num nowrap", title: num(it.size) + " bytes" }, size(it.size)),
            h("td", { class: "num" }, it.history ? num(it.history) : ""),
            h("td", { class: "preview" }, it.preview || "")));
        });
        if (items.length === 0) {
          tbody.appendChild(h("tr", null, h("td", { colspan: 9, class: "muted", "data-testid": "no-rows" }, "no recordings match")));
        }
        var total = doc.total || 0;
        count.textContent = num(total) + (total === 1 ? " recording" : " recordings");
        pageInfo.textContent = items.length ? num(doc.offset + 1) + "\u2013" + num(doc.offset + items.length) + " of " + num(total) : "";
        prev.disabled = doc.offset === 0;
        next.disabled = doc.offset + items.length >= total;
      }).catch(function (err) { if (mine === seq) showError(status, err); });
    }
    load();
  }

  function recordingView(key) {
    view.replaceChildren(h("div", { class: "panel muted" }, "loading " + key + "\u2026"));
    getJSON("recordings/" + encodeURIComponent(key)).then(function (doc) {
      var it = doc.item, req = doc.request || {}, res = doc.response || {};
      var events = doc.events;
      var head = h("div", { class: "panel", "data-testid": "recording-detail" },
        h("p", null, h("a", { href: "#/recordings", "data-testid": "back" }, "\u2190 all recordings")),
        h("h2", null, it.method + " " + it.path + " ",
          h("span", { class: "pill" }, it.route), " ",
          h("span", { class: "pill " + (it.status < 400 ? "ok" : "err") }, it.status),
          it.stream ? [" ", h("span", { class: "pill stream" }, "stream")] : null),
        kv([
          ["key", it.key], ["model", it.model || "\u2013"], ["namespace", orNone(it.namespace)],
          ["fingerprint", it.fingerprint || "\u2013"], ["recorded at", when(it.recorded_at)],
          ["size", num(it.size) + " bytes"], ["call", it.call === null || it.call === undefined ? "\u2013" : "#" + it.call],
          ["history", num(it.history) + " older recording(s)"],
        ]));
      var request = h("div", { class: "panel", "data-testid": "recording-request" },
        h("h3", null, "Request"),
        h("p", { class: "mono" }, (req.method || it.method) + " " + (req.path || it.path) + (req.query ? "?" + req.query : "")),
        headersTable(req.headers),
        h("h3", null, "Body"), h("pre", { class: "body", "data-testid": "request-body" }, pretty(req.body)));
      var answerBody = events
        ? h("p", { class: "muted" }, "a stream of " + events.length + " event(s): see below")
        : h("pre", { class: "body", "data-testid": "response-body" }, pretty(res.body));
      var response = h("div", { class: "panel", "data-testid": "recording-response" },
        h("h3", null, "Answer ", h("span", { class: "pill " + (res.status < 400 ? "ok" : "err") }, res.status)),
        headersTable(res.headers), h("h3", null, "Body"), answerBody);
      var parts = [head, h("div", { class: "detail-grid" }, request, response)];
      if (events) {
        var chart = h("div", { "data-testid": "events-chart" });
        var last = events.length ? events[events.length - 1].offset_ms : 0;
        parts.push(h("div", { class: "panel", "data-testid": "recording-events" },
          h("h3", null, "Stream events on a time axis ", h("span", { class: "muted" }, events.length + " events over " + num(last) + " ms")),
          chart,
          h("table", null, h("thead", null, h("tr", null, h("th", { class: "num" }, "#"), h("th", { class: "num" }, "offset"), h("th", null, "event"), h("th", null, "data"))),
            h("tbody", null, events.slice(0, EVENT_ROWS).map(function (e, i) {
              return h("tr", null, h("td", { class: "num" }, i + 1), h("td", { class: "num" }, e.offset_ms + " ms"),
                h("td", { class: "mono" }, e.event || "message"), h("td", { class: "mono preview" }, e.data));
            }))),
          events.length > EVENT_ROWS ? h("p", { class: "muted" }, "the first " + EVENT_ROWS + " of " + events.length + " events; the chart has them all") : null));
        Charts.events(chart, events.map(function (e) {
          return { offset_ms: e.offset_ms, label: (e.event ? e.event + ": " : "") + String(e.data).slice(0, 80) };
        }));
      }
      var history = doc.history || [];
      parts.push(h("div", { class: "panel", "data-testid": "recording-history" },
        h("h3", null, "History ", h("span", { class: "muted" }, history.length ? "older recordings of this key, newest first" : "none: this key was recorded once")),
        history.length ? h("table", null,
          h("thead", null, h("tr", null, h("th", null, "Recorded"), h("th", null, "Fingerprint"), h("th", null, "Answer"))),
          h("tbody", null, history.map(function (old) {
            var changed = old.fingerprint !== it.fingerprint;
            return h("tr", null, h("td", { class: "mono" }, when(old.recorded_at)),
              h("td", { class: "mono" }, old.fingerprint || "\u2013", changed ? [" ", h("span", { class: "pill logprobs" }, "differs")] : null),
              h("td", { class: "preview" }, old.preview || ""));
          }))) : null));
      view.replaceChildren.apply(view, parts);
    }).catch(function (err) { showError(view, err); });
  }

  // ---- fingerprints ------------------------------------------------------

  function fingerprintsView() {
    view.replaceChildren(h("div", { class: "panel muted" }, "loading fingerprints\u2026"));
    getJSON("fingerprints").then(function (doc) {
      var models = doc.models || [];
      var parts = [h("div", { class: "panel" }, h("h2", null, "Fingerprints"),
        h("p", { class: "muted" }, "Per model, each system_fingerprint from its first to its last sighting (current recordings and their history) and how many recordings carry it."))];
      if (models.length === 0) parts.push(h("div", { class: "panel muted", "data-testid": "no-fingerprints" }, "no recording carries a fingerprint yet"));
      models.forEach(function (m) {
        var chart = h("div", { "data-testid": "fingerprint-chart" });
        var fps = m.fingerprints || [];
        parts.push(h("div", { class: "panel", "data-testid": "fingerprint-model" },
          h("h3", null, m.model || "(no model)", " ", h("span", { class: "muted" }, fps.length + " fingerprint(s)")),
          chart,
          h("table", null, h("thead", null, h("tr", null, h("th", null, "Fingerprint"), h("th", null, "First seen"), h("th", null, "Last seen"), h("th", { class: "num" }, "Recordings"))),
            h("tbody", null, fps.map(function (f) {
              return h("tr", { "data-testid": "fingerprint-row" }, h("td", { class: "mono" }, orNone(f.fingerprint)), h("td", { class: "mono" }, when(f.first_seen)),
                h("td", { class: "mono" }, when(f.last_seen)), h("td", { class: "num" }, num(f.recordings)));
            })))));
        Charts.ranges(chart, fps.map(function (f, i) {
          return {
            label: orNone(f.fingerprint) + " (" + f.recordings + ")",
            start: Date.parse(f.first_seen), end: Date.parse(f.last_seen), cls: "c" + (i % 6),
            title: orNone(f.fingerprint) + ": " + when(f.first_seen) + " \u2192 " + when(f.last_seen) + ", " + f.recordings + " recording(s)",
          };
        }), { label: "fingerprints of " + m.model + " over time" });
      });
      view.replaceChildren.apply(view, parts);
    }).catch(function (err) { showError(view, err); });
  }

  // ---- audit -------------------------------------------------------------

  var CHANGE_WORDS = { text: "text changed", logprobs: "logprobs only", identical: "identical" };

  // The two sides of a word-level diff: the old text with its deletions
  // marked, the new one with its insertions.
  function diffSides(segments) {
    var left = h("div", { class: "side", "data-testid": "diff-old" }, h("h4", null, "before"));
    var right = h("div", { class: "side", "data-testid": "diff-new" }, h("h4", null, "after"));
    segments.forEach(function (s) {
      if (s.op === "equal") { left.appendChild(document.createTextNode(s.text)); right.appendChild(document.createTextNode(s.text)); }
      else if (s.op === "delete") left.appendChild(h("del", null, s.text));
      else if (s.op === "insert") right.appendChild(h("ins", null, s.text));
    });
    return h("div", { class: "diff", "data-testid": "diff" }, left, right);
  }

  function plainSides(oldText, newText) {
    return h("div", { class: "diff", "data-testid": "diff" },
      h("div", { class: "side", "data-testid": "diff-old" }, h("h4", null, "before"), oldText || ""),
      h("div", { class: "side", "data-testid": "diff-new" }, h("h4", null, "after"), newText || ""));
  }

  function flipCard(flip, i) {
    var card = h("div", { class: "panel flip", "data-testid": "flip", "data-change": flip.change },
      h("div", { class: "flip-head" },
        h("span", { class: "pill " + flip.change }, CHANGE_WORDS[flip.change] || flip.change),
        h("strong", null, flip.model || "(no model)"),
        h("span", { class: "mono muted" }, flip.method + " " + flip.path),
        h("span", { class: "fp" }, orNone(flip.old.fingerprint)), h("span", { class: "arrow" }, "\u2192"),
        h("span", { class: "fp" }, orNone(flip.new.fingerprint)),
        h("span", { class: "muted" }, when(flip.old.recorded_at) + " \u2192 " + when(flip.new.recorded_at)),
        h("a", { href: "#/recording/" + flip.key, class: "mono" }, shortKey(flip.key))));
    if (flip.change === "identical") card.appendChild(h("p", { class: "muted" }, "Same text, tool calls, finish reasons and logprobs under the new fingerprint."));
    (flip.choices || []).forEach(function (c, n) {
      if (flip.choices.length > 1) card.appendChild(h("h4", null, "choice " + c.index));
      if (c.segments) card.appendChild(diffSides(c.segments));
      else card.appendChild(plainSides((flip.old_text || [])[n], (flip.new_text || [])[n]));
      if (c.tool_calls) card.appendChild(h("p", { class: "mono" }, "tool calls: " + JSON.stringify(c.tool_calls[0]) + " \u2192 " + JSON.stringify(c.tool_calls[1])));
      if (c.finish_reason) card.appendChild(h("p", { class: "mono" }, "finish reason: " + c.finish_reason[0] + " \u2192 " + c.finish_reason[1]));
      if (c.aligned_tokens !== null && c.aligned_tokens !== undefined) card.appendChild(h("p", { class: "muted" }, c.aligned_tokens + " token(s) at the start line up in both answers; their logprob deltas are below."));
    });
    var deltas = flip.deltas || [];
    if (flip.change !== "identical") {
      var chart = h("div", { "data-testid": "delta-chart" });
      card.appendChild(h("h4", null, "Per-token logprob \u0394 (new \u2212 old)"));
      card.appendChild(chart);
      var several = (flip.choices || []).length > 1 || deltas.some(function (d) { return d.choice !== 0; });
      Charts.bars(chart, deltas.map(function (d) {
        return {
          label: (several ? "c" + d.choice + " " : "") + "#" + d.position + " " + JSON.stringify(d.token),
          value: d.delta,
          title: JSON.stringify(d.token) + " at " + d.position + ": " + d.old_percent.toFixed(3) + "% \u2192 " + d.new_percent.toFixed(3) + "% (\u0394 " + d.delta.toFixed(5) + ")",
        };
      }), { label: "logprob deltas of flip " + (i + 1), format: function (v) { return (v > 0 ? "+" : "") + v.toFixed(5); }, empty: "no aligned token's logprob moved" });
    }
    return card;
  }

  function auditView(params) {
    view.replaceChildren(h("div", { class: "panel muted" }, "loading the audit\u2026"));
    getJSON("audit").then(function (doc) {
      var flips = doc.flips || [];
      var model = params.get("model");
      var shown = model ? flips.filter(function (f) { return f.model === model; }) : flips;
      var models = [];
      flips.forEach(function (f) { if (models.indexOf(f.model) < 0) models.push(f.model); });
      var select = h("select", { "data-testid": "audit-model", onchange: function () {
        location.hash = "#/audit" + (select.value === ANY ? "" : "?model=" + encodeURIComponent(select.value));
      } }, h("option", { value: ANY }, "all models"), models.map(function (m) { return h("option", { value: m }, m); }));
      select.value = model && models.indexOf(model) >= 0 ? model : ANY;
      var keys = {};
      flips.forEach(function (f) { keys[f.key] = true; });
      var summary = h("div", { class: "panel", "data-testid": "audit-summary" },
        h("h2", null, "Audit: what changed when the fingerprint flipped"),
        h("p", null, h("strong", { "data-testid": "flip-count" }, flips.length + " flip(s)"), " in " + Object.keys(keys).length + " key(s)", " \u00b7 source ", h("code", null, doc.source || "")),
        h("div", { class: "filters" }, h("label", null, "Model", select)));
      var transitions = [];
      (doc.models || []).forEach(function (m) {
        (m.transitions || []).forEach(function (t) { transitions.push([m.model, t]); });
      });
      if (transitions.length) {
        summary.appendChild(h("table", { "data-testid": "transitions" },
          h("thead", null, h("tr", null, h("th", null, "Model"), h("th", null, "From \u2192 to"), h("th", { class: "num" }, "Flips"),
            h("th", { class: "num" }, "Text changed"), h("th", { class: "num" }, "Logprobs only"), h("th", { class: "num" }, "Identical"))),
          h("tbody", null, transitions.map(function (mt) {
            var t = mt[1];
            return h("tr", null, h("td", null, mt[0]), h("td", { class: "mono" }, orNone(t.from) + " \u2192 " + orNone(t.to)),
              h("td", { class: "num" }, t.flips), h("td", { class: "num" }, t.text), h("td", { class: "num" }, t.logprobs), h("td", { class: "num" }, t.identical));
          }))));
      }
      var parts = [summary];
      if (shown.length === 0) parts.push(h("div", { class: "panel muted", "data-testid": "no-flips" }, "no fingerprint flips recorded"));
      shown.forEach(function (f, i) { parts.push(flipCard(f, i)); });
      view.replaceChildren.apply(view, parts);
    }).catch(function (err) { showError(view, err); });
  }

  // ---- routing -----------------------------------------------------------

  function route() {
    var hash = location.hash.replace(/^#\/?/, "");
    var at = hash.indexOf("?");
    var path = at < 0 ? hash : hash.slice(0, at);
    var params = new URLSearchParams(at < 0 ? "" : hash.slice(at + 1));
    var parts = path.split("/");
    var name = parts[0] || "recordings";
    document.querySelectorAll(".tabs a").forEach(function (a) {
      var v = a.getAttribute("data-view");
      a.classList.toggle("active", v === name || (v === "recordings" && name === "recording"));
    });
    window.scrollTo(0, 0);
    if (name === "recording" && parts[1]) recordingView(decodeURIComponent(parts[1]));
    else if (name === "fingerprints") fingerprintsView();
    else if (name === "audit") auditView(params);
    else recordingsView(params);
  }

  window.addEventListener("hashchange", route);
  route();
  pollStats();
})();
