/* Tiny SVG chart helpers (no library): line chart, horizontal bars, the slot strip of one day.
   Each chart is drawn at a pixel width (its text at its CSS size, 12 px) and carries ``redraw(width)``:
   Charts.fit(root) redraws every chart at the width its container has, so nothing is scaled down (a chart
   drawn wider than its card and shrunk by CSS had 7 px labels). */
"use strict";
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  function el(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(w, h, label) {
    // drawn at its own pixel size (text stays legible); CSS shrinks it to narrow containers
    const s = el("svg", {viewBox: `0 0 ${w} ${h}`, width: w, height: h, class: "chart", role: "img",
                         preserveAspectRatio: "xMinYMin meet"});
    if (label) s.appendChild(el("title", {}, label));
    return s;
  }
  // series: [{name, color, points: [[x, y|null], ...]}]; x numeric; fmtX(x) and fmtY(y) for labels.
  function line(series, opt) {
    const W = opt.width || 640, H = opt.height || 200, L = 48, R = 10, T = 10, B = 24;
    const s = svg(W, H, opt.label);
    const xs = series.flatMap(r => r.points.map(p => p[0]));
    const ys = series.flatMap(r => r.points.map(p => p[1]).filter(v => v !== null && v !== undefined));
    if (!xs.length || !ys.length) { s.appendChild(el("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, opt.empty || "—")); return s; }
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    let y0 = opt.yMin !== undefined ? opt.yMin : Math.min(...ys, ...(opt.refs || []).map(r => r.y));
    let y1 = opt.yMax !== undefined ? opt.yMax : Math.max(...ys, ...(opt.refs || []).map(r => r.y));
    if (!isFinite(y0) || !isFinite(y1)) { y0 = 0; y1 = 1; }
    if (y0 === y1) { y0 -= 1; y1 += 1; }
    const X = x => L + (x - x0) / (x1 - x0) * (W - L - R);
    const Y = y => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    for (let i = 0; i <= 4; i++) {
      const v = y0 + (y1 - y0) * i / 4, y = Y(v);
      s.appendChild(el("line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#eceff1"}));
      s.appendChild(el("text", {x: L - 4, y: y + 4, "text-anchor": "end"}, opt.fmtY ? opt.fmtY(v) : v.toFixed(0)));
    }
    const ticks = Math.min(opt.ticks || 6, new Set(xs).size);
    for (let i = 0; i < ticks; i++) {
      const v = ticks === 1 ? x0 : x0 + (x1 - x0) * i / (ticks - 1);
      s.appendChild(el("text", {x: X(v), y: H - 6, "text-anchor": i === 0 ? "start" : i === ticks - 1 ? "end" : "middle"},
                       opt.fmtX ? opt.fmtX(v) : String(v)));
    }
    for (const r of opt.refs || []) {
      s.appendChild(el("line", {x1: L, x2: W - R, y1: Y(r.y), y2: Y(r.y), stroke: r.color || "#c62828",
                                "stroke-dasharray": "4 3"}));
      s.appendChild(el("text", {x: W - R, y: Y(r.y) - 3, "text-anchor": "end"}, r.label || ""));
    }
    for (const r of series) {
      let d = "", pen = false;
      for (const [x, y] of r.points) {
        if (y === null || y === undefined) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`;
        pen = true;
      }
      if (d) s.appendChild(el("path", {d, fill: "none", stroke: r.color, "stroke-width": 1.8, "data-series": r.name}));
      const pts = r.points.filter(p => p[1] !== null && p[1] !== undefined);
      if (pts.length <= 40) for (const [x, y] of pts) s.appendChild(el("circle", {cx: X(x), cy: Y(y), r: 2.4, fill: r.color}));
    }
    return s;
  }
  // rows: [{label, value, href?}]
  function bars(rows, opt) {
    const W = opt.width || 420, rowH = 22, L = opt.labelWidth || 130, H = rows.length * rowH + 4;
    const s = svg(W, Math.max(H, 24), opt.label);
    const max = Math.max(1, ...rows.map(r => r.value));
    rows.forEach((r, i) => {
      const y = i * rowH + 2, w = (W - L - 50) * r.value / max;
      s.appendChild(el("text", {x: L - 6, y: y + 15, "text-anchor": "end"}, r.label));
      s.appendChild(el("rect", {x: L, y: y + 3, width: Math.max(w, 1), height: rowH - 8, fill: opt.color || "#1565c0",
                                "data-label": r.label, "data-value": r.value}));
      s.appendChild(el("text", {x: L + w + 6, y: y + 15}, String(r.value) + (opt.suffix ? opt.suffix(r) : "")));
    });
    if (!rows.length) s.appendChild(el("text", {x: 4, y: 16}, opt.empty || "—"));
    return s;
  }
  // runs: [{from, to, color, title}] in minutes of the day (0..1440)
  function strip(runs, opt) {
    const W = opt.width || 960, H = 46, L = 4, R = 4;
    const s = svg(W, H, opt.label);
    const X = m => L + m / 1440 * (W - L - R);
    for (const r of runs) {
      const rect = el("rect", {x: X(r.from), y: 4, width: Math.max(X(r.to) - X(r.from), 0.6), height: 22, fill: r.color,
                               "data-kind": r.kind});
      rect.appendChild(el("title", {}, r.title));
      s.appendChild(rect);
    }
    for (let h = 0; h <= 24; h += 3) {
      s.appendChild(el("line", {x1: X(h * 60), x2: X(h * 60), y1: 26, y2: 31, stroke: "#90a4ae"}));
      s.appendChild(el("text", {x: X(h * 60), y: 42, "text-anchor": h === 0 ? "start" : h === 24 ? "end" : "middle"},
                       `${String(h).padStart(2, "0")}:00`));
    }
    return s;
  }
  // every chart under root, redrawn at its container's width (labels stay at their CSS size)
  function fit(root) {
    for (const s of [...(root || document).querySelectorAll("svg.chart")]) {
      if (!s.redraw || !s.parentElement) continue;
      const cs = getComputedStyle(s.parentElement);  // the content box: clientWidth counts the padding too
      const w = Math.floor(s.parentElement.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight));
      if (w > 0 && Math.abs(w - s.viewBox.baseVal.width) > 1) s.replaceWith(s.redraw(w));
    }
  }
  const fitted = fn => (data, opt) => {
    const s = fn(data, opt);
    s.redraw = w => fitted(fn)(data, Object.assign({}, opt, {width: w}));
    return s;
  };
  return {line: fitted(line), bars: fitted(bars), strip: fitted(strip), fit};
})();
