// llmtape's charts: small SVG charts drawn by hand, shared by the web view
// (served at /_llmtape/ui) and the `probe --html` report (inlined).
//
// A classic script on purpose: it defines one global, `LlmtapeCharts`, so
// the report can inline it as it is and open from file:// (ES modules
// cannot be imported there). Nothing here touches the network, and no
// style attribute is written (the page's CSP forbids inline styles): looks
// come from classes in the style sheets.
"use strict";

var LlmtapeCharts = (function () {
  var NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) {
      if (attrs[k] !== undefined && attrs[k] !== null) node.setAttribute(k, String(attrs[k]));
    }
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, content, cls, anchor) {
    var t = el("text", { x: x, y: y, class: cls || "chart-label", "text-anchor": anchor || "start" }, parent);
    t.textContent = content;
    return t;
  }

  function tip(node, content) {
    el("title", {}, node).textContent = content;
  }

  function svg(container, width, height, label) {
    container.replaceChildren();
    var root = el("svg", {
      viewBox: "0 0 " + width + " " + height,
      width: "100%",
      class: "chart",
      role: "img",
      "aria-label": label || "chart",
      preserveAspectRatio: "xMinYMin meet",
    }, container);
    root.setAttribute("data-testid", "chart");
    return root;
  }

  // "Nice" tick values covering [lo, hi].
  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    var raw = (hi - lo) / Math.max(1, count);
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * mag; }).find(function (s) { return s >= raw; });
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Math.abs(v) < step * 1e-6 ? 0 : +v.toPrecision(12));
    }
    return out;
  }

  function shortNumber(v) {
    var a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 1) return String(+v.toFixed(2));
    if (a >= 1e-3) return String(+v.toPrecision(3));
    return v.toExponential(1);
  }

  function clip(s, n) {
    s = String(s);
    return s.length > n ? s.slice(0, n - 1) + "\u2026" : s;
  }

  // Horizontal bars, one row per item: {label, value, cls, title}. Values
  // may be negative (deltas): the bars then grow either way from zero.
  function bars(container, rows, opts) {
    opts = opts || {};
    var rowH = 26, labelW = opts.labelWidth || 220, width = opts.width || 760;
    var top = 8, axisH = 24, right = 70;
    var height = top + rows.length * rowH + axisH;
    var root = svg(container, width, height, opts.label);
    if (rows.length === 0) {
      text(root, width / 2, height / 2, opts.empty || "nothing to chart", "chart-empty", "middle");
      return root;
    }
    var values = rows.map(function (r) { return r.value; });
    var lo = Math.min(0, Math.min.apply(null, values));
    var hi = Math.max(0, Math.max.apply(null, values));
    if (lo === hi) hi = lo + 1;
    var plotW = width - labelW - right;
    var x = function (v) { return labelW + ((v - lo) / (hi - lo)) * plotW; };
    ticks(lo, hi, 5).forEach(function (t) {
      el("line", { x1: x(t), x2: x(t), y1: top, y2: height - axisH, class: "chart-grid" }, root);
      text(root, x(t), height - 8, shortNumber(t), "chart-tick", "middle");
    });
    el("line", { x1: x(0), x2: x(0), y1: top, y2: height - axisH, class: "chart-zero" }, root);
    rows.forEach(function (r, i) {
      var y = top + i * rowH;
      text(root, labelW - 8, y + rowH / 2 + 4, clip(r.label, opts.labelChars || 40), "chart-label", "end");
      var x0 = x(Math.min(0, r.value)), x1 = x(Math.max(0, r.value));
      var bar = el("rect", {
        x: x0, y: y + 4, width: Math.max(1.5, x1 - x0), height: rowH - 8, rx: 3,
        class: "chart-bar " + (r.cls || (r.value < 0 ? "neg" : "pos")),
      }, root);
      bar.setAttribute("data-testid", "chart-bar");
      tip(bar, r.title || r.label + ": " + r.value);
      var shown = opts.format ? opts.format(r.value) : shortNumber(r.value);
      text(root, x1 + 6, y + rowH / 2 + 4, shown, "chart-value");
    });
    return root;
  }

  function timeTicks(lo, hi, count) {
    var span = Math.max(1, hi - lo);
    var steps = [10, 50, 100, 250, 500, 1e3, 5e3, 15e3, 6e4, 3e5, 9e5, 36e5, 6 * 36e5, 864e5, 7 * 864e5, 30 * 864e5, 365 * 864e5];
    var step = steps.find(function (s) { return span / s <= count; }) || steps[steps.length - 1];
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi; t += step) out.push(t);
    if (out.length < 2) out = [lo, hi];
    return { values: out, step: step };
  }

  function timeLabel(ms, step) {
    var iso = new Date(ms).toISOString();
    if (step < 1e3) return iso.slice(17, 23) + " s";
    if (step < 6e4) return iso.slice(11, 19);
    if (step < 864e5) return iso.slice(5, 10) + " " + iso.slice(11, 16);
    return iso.slice(0, 10);
  }

  // Ranges on a time axis, one row each: {label, start, end (ms since the
  // epoch), cls, title}: which fingerprint was seen from when to when.
  function ranges(container, rows, opts) {
    opts = opts || {};
    var rowH = 28, labelW = opts.labelWidth || 200, width = opts.width || 760;
    var top = 8, axisH = 26, right = 24;
    var height = top + rows.length * rowH + axisH;
    var root = svg(container, width, height, opts.label);
    if (rows.length === 0) {
      text(root, width / 2, height / 2, "nothing to chart", "chart-empty", "middle");
      return root;
    }
    var lo = Math.min.apply(null, rows.map(function (r) { return r.start; }));
    var hi = Math.max.apply(null, rows.map(function (r) { return r.end; }));
    var pad = Math.max(20, (hi - lo) * 0.04);
    lo -= pad; hi += pad;
    var plotW = width - labelW - right;
    var x = function (t) { return labelW + ((t - lo) / (hi - lo)) * plotW; };
    var tk = timeTicks(lo, hi, 9);
    tk.values.forEach(function (t) {
      el("line", { x1: x(t), x2: x(t), y1: top, y2: height - axisH, class: "chart-grid" }, root);
      text(root, x(t), height - 8, timeLabel(t, tk.step), "chart-tick", "middle");
    });
    rows.forEach(function (r, i) {
      var y = top + i * rowH;
      text(root, labelW - 8, y + rowH / 2 + 4, clip(r.label, 30), "chart-label", "end");
      var x0 = x(r.start), x1 = x(r.end);
      var bar = el("rect", {
        x: x0 - 4, y: y + 6, width: Math.max(8, x1 - x0 + 8), height: rowH - 12, rx: 6,
        class: "chart-range " + (r.cls || ""),
      }, root);
      bar.setAttribute("data-testid", "chart-bar");
      tip(bar, r.title || r.label);
    });
    return root;
  }

  // A stream's events on a time axis: {offset_ms, label}. Each event is a
  // tick at its offset; the step line counts the events arrived so far.
  function events(container, points, opts) {
    opts = opts || {};
    var width = opts.width || 760, height = 170, left = 44, right = 20, top = 12, bottom = 30;
    var root = svg(container, width, height, opts.label || "stream events over time");
    if (points.length === 0) {
      text(root, width / 2, height / 2, "no events", "chart-empty", "middle");
      return root;
    }
    var maxT = Math.max(1, Math.max.apply(null, points.map(function (p) { return p.offset_ms; })));
    var x = function (t) { return left + (t / maxT) * (width - left - right); };
    var y = function (n) { return height - bottom - (n / points.length) * (height - top - bottom); };
    ticks(0, maxT, 6).forEach(function (t) {
      el("line", { x1: x(t), x2: x(t), y1: top, y2: height - bottom, class: "chart-grid" }, root);
      text(root, x(t), height - 10, shortNumber(t) + " ms", "chart-tick", "middle");
    });
    ticks(0, points.length, 3).forEach(function (n) {
      if (n !== Math.round(n)) return;
      text(root, left - 6, y(n) + 4, String(n), "chart-tick", "end");
    });
    var d = "M" + x(0) + "," + y(0);
    points.forEach(function (p, i) {
      d += " H" + x(p.offset_ms) + " V" + y(i + 1);
    });
    el("path", { d: d, class: "chart-step" }, root);
    points.forEach(function (p, i) {
      var dot = el("circle", { cx: x(p.offset_ms), cy: y(i + 1), r: 4, class: "chart-dot" }, root);
      dot.setAttribute("data-testid", "chart-event");
      tip(dot, "#" + (i + 1) + " at " + p.offset_ms + " ms" + (p.label ? ": " + p.label : ""));
    });
    return root;
  }

  return { bars: bars, ranges: ranges, events: events, shortNumber: shortNumber };
})();
