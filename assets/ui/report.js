// The `llmtape probe --html` report: renders the probe's JSON document (the
// same as `probe --json`, embedded in the file as #probe-data) with the
// charts of charts.js. Inlined into one file by src/cmd/probe/html.rs, so
// it opens offline from file://; it asks nothing of any network.
"use strict";

(function () {
  var doc = JSON.parse(document.getElementById("probe-data").textContent);
  var root = document.getElementById("report");
  var Charts = window.LlmtapeCharts;

  function h(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      if (Array.isArray(c)) c.forEach(function (x) { node.appendChild(x instanceof Node ? x : document.createTextNode(String(x))); });
      else node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  function share(count, of) { return (of ? (100 * count) / of : 0).toFixed(1) + "%"; }
  function table(head, rows) {
    return h("table", null,
      h("thead", null, h("tr", null, head.map(function (c) { return h("th", c[1] ? { class: "num" } : null, c[0]); }))),
      h("tbody", null, rows));
  }

  var answered = doc.answered;
  var withLogprobs = answered - doc.without_logprobs;
  var clusters = doc.first_token_logprobs || [];
  var tokens = [];
  clusters.forEach(function (c) { if (tokens.indexOf(c.token) < 0) tokens.push(c.token); });

  var summary = h("div", { class: "panel", "data-testid": "summary" },
    h("h2", null, doc.requests + " identical request(s) to " + doc.method + " " + doc.upstream + doc.path),
    h("div", { class: "counters bare" },
      [["answered", answered], ["failed", doc.failed], ["distinct outputs", doc.outputs.length],
       ["fingerprints", doc.fingerprints.length], ["first-token logprobs", clusters.length]].map(function (p) {
        return h("div", { class: "counter" }, h("span", { class: "n" }, p[1]), h("span", { class: "k" }, p[0]));
      })));

  var chart = h("div", { "data-testid": "logprob-chart" });
  var note = clusters.length === 0
    ? (doc.logprobs_requested ? "The upstream sent no logprobs." : "The request did not ask for logprobs; add \"logprobs\": true (chat) or \"logprobs\": 1 (completions) to measure them.")
    : "Each bar is a distinct first-token logprob (values within " + doc.tolerance + " of each other are one), its length the number of answers that had it" +
      (doc.without_logprobs ? "; " + doc.without_logprobs + " answer(s) had no first-token logprob." : ".");
  var logprobs = h("div", { class: "panel" },
    h("h3", null, "First-token logprob distribution over the " + answered + " answer(s)"),
    h("p", { class: "muted" }, note), chart,
    clusters.length ? table([["Count", 1], ["Share", 1], ["Token"], ["Logprob", 1], ["Probability", 1], ["Range"]],
      clusters.map(function (c) {
        return h("tr", { "data-testid": "cluster-row" }, h("td", { class: "num" }, c.count), h("td", { class: "num" }, share(c.count, withLogprobs)),
          h("td", { class: "mono" }, JSON.stringify(c.token)), h("td", { class: "num mono" }, c.logprob.toFixed(8)),
          h("td", { class: "num" }, c.probability_percent.toFixed(4) + "%"),
          h("td", { class: "mono" }, c.min === c.max ? "exact" : c.min + " \u2026 " + c.max));
      })) : null);
  Charts.bars(chart, clusters.map(function (c) {
    return {
      label: JSON.stringify(c.token) + " " + c.logprob.toFixed(6) + " (" + c.probability_percent.toFixed(2) + "%)",
      value: c.count,
      cls: "c" + (tokens.indexOf(c.token) % 6),
      title: JSON.stringify(c.token) + ": logprob " + c.logprob + " (" + c.probability_percent.toFixed(4) + "%), " + c.count + " answer(s)",
    };
  }), { label: "first-token logprob distribution", labelWidth: 300, empty: "no first-token logprobs" });

  var outputs = h("div", { class: "panel" }, h("h3", null, doc.outputs.length + " distinct output(s)"),
    table([["Count", 1], ["Share", 1], ["Output"]], doc.outputs.map(function (o) {
      return h("tr", { "data-testid": "output-row" }, h("td", { class: "num" }, o.count), h("td", { class: "num" }, share(o.count, answered)),
        h("td", { class: "output" }, o.text));
    })));
  var fingerprints = h("div", { class: "panel" }, h("h3", null, doc.fingerprints.length + " distinct fingerprint(s)"),
    table([["Count", 1], ["Share", 1], ["system_fingerprint"]], doc.fingerprints.map(function (f) {
      return h("tr", { "data-testid": "fingerprint-row" }, h("td", { class: "num" }, f.count), h("td", { class: "num" }, share(f.count, answered)),
        h("td", { class: "mono" }, f.fingerprint === null ? "(none)" : f.fingerprint));
    })));
  var parts = [summary, logprobs, h("div", { class: "detail-grid" }, outputs, fingerprints)];
  if ((doc.errors || []).length) {
    parts.push(h("div", { class: "panel" }, h("h3", null, doc.errors.length + " distinct error(s)"),
      table([["Count", 1], ["Error"]], doc.errors.map(function (e) {
        return h("tr", null, h("td", { class: "num" }, e.count), h("td", { class: "mono" }, e.error));
      }))));
  }
  root.replaceChildren.apply(root, parts);
})();
