// Trends page (templates/trends.html): one inline-SVG chart per metric, from GET /api/trends.
// Our own small drawing code, no library: mean line, min–max band, threshold bands (warning /
// critical / info areas shaded) and lines. Gaps in the data (absent buckets) break the line rather
// than drawing across them. Strings come from the page's catalogue (boot.t), times in the site's zone.
"use strict";
(function () {
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const t = boot.t;
  const NS = "http://www.w3.org/2000/svg";
  const W = 760, H = 250;
  const M = { left: 58, right: 14, top: 10, bottom: 30 };
  const LEVEL_ORDER = { info: 0, warning: 1, critical: 2 };

  function fill(text, values) {
    return text.replace(/\{(\w+)\}/g, (_, k) => (k in values ? String(values[k]) : "{" + k + "}"));
  }

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function num(v) {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
  }

  // "Nice" tick values: 1, 2 or 5 × 10^n steps, about `count` of them.
  function ticks(lo, hi, count) {
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let i = Math.ceil(lo / step); i * step <= hi + step * 1e-9; i++) out.push(Number((i * step).toPrecision(12)));
    return out;
  }

  function timeLabel(ms, range) {
    const opts = range === "24h"
      ? { hour: "2-digit", minute: "2-digit" }
      : { month: "numeric", day: "numeric" };
    return new Intl.DateTimeFormat(boot.lang === "ja" ? "ja-JP" : "en-GB", { timeZone: boot.timezone, ...opts })
      .format(new Date(ms));
  }

  // Split buckets where one is missing (fill(none): an empty bucket is absent).
  function segments(buckets, bucketMs) {
    const out = [];
    let cur = [];
    for (const b of buckets) {
      if (cur.length && b.start - cur[cur.length - 1].start > bucketMs) {
        out.push(cur);
        cur = [];
      }
      cur.push(b);
    }
    if (cur.length) out.push(cur);
    return out;
  }

  function draw(section, data, metricInfo) {
    const plot = section.querySelector(".plot");
    plot.textContent = "";
    const latest = section.querySelector(".latest");
    if (!data.buckets.length) {
      section.dataset.state = "empty";
      latest.textContent = "";
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = t["trends.empty"];
      plot.appendChild(p);
      return;
    }
    section.dataset.state = "ready";
    const last = data.buckets[data.buckets.length - 1];
    latest.textContent = fill(t["trends.latest"], { value: num(last.mean) + " " + data.unit });

    // Y domain: the data and every threshold, so the bands are always on the chart.
    let lo = Math.min(...data.buckets.map((b) => b.min), ...data.thresholds.map((th) => th.value));
    let hi = Math.max(...data.buckets.map((b) => b.max), ...data.thresholds.map((th) => th.value));
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.06;
    lo -= pad; hi += pad;
    const x0 = M.left, x1 = W - M.right, y0 = H - M.bottom, y1 = M.top;
    const x = (ms) => x0 + ((ms + data.bucket_ms / 2 - data.start_ms) / (data.end_ms - data.start_ms)) * (x1 - x0);
    const y = (v) => y0 - ((v - lo) / (hi - lo)) * (y0 - y1);
    const clampY = (v) => Math.max(y1, Math.min(y0, v));

    const svg = el("svg", {
      viewBox: `0 0 ${W} ${H}`, class: "trend", role: "img",
      "aria-label": fill(t["trends.chart_label"], { metric: metricInfo.label, unit: data.unit }),
    });
    svg.appendChild(el("rect", { class: "frame", x: x0, y: y1, width: x1 - x0, height: y0 - y1 }));

    // Threshold bands: "above" from the value up to the next higher "above" level (or the top),
    // "below" from the value down to the next lower "below" level (or the bottom).
    const above = data.thresholds.filter((th) => th.direction === "above").sort((a, b) => a.value - b.value);
    const below = data.thresholds.filter((th) => th.direction === "below").sort((a, b) => b.value - a.value);
    const bands = el("g", { class: "bands" });
    above.forEach((th, i) => {
      const top = i + 1 < above.length ? y(above[i + 1].value) : y1;
      const bottom = clampY(y(th.value));
      bands.appendChild(el("rect", {
        class: `band band-${th.level}`, "data-key": th.key, "data-level": th.level,
        x: x0, y: clampY(top), width: x1 - x0, height: Math.max(0, bottom - clampY(top)),
      }));
    });
    below.forEach((th, i) => {
      const bottom = i + 1 < below.length ? y(below[i + 1].value) : y0;
      const top = clampY(y(th.value));
      bands.appendChild(el("rect", {
        class: `band band-${th.level}`, "data-key": th.key, "data-level": th.level,
        x: x0, y: top, width: x1 - x0, height: Math.max(0, clampY(bottom) - top),
      }));
    });
    svg.appendChild(bands);

    // Axes: horizontal grid with values, time labels below.
    const axes = el("g", { class: "axes" });
    for (const v of ticks(lo, hi, 5)) {
      axes.appendChild(el("line", { class: "grid", x1: x0, x2: x1, y1: y(v), y2: y(v) }));
      axes.appendChild(el("text", { class: "ytick", x: x0 - 6, y: y(v) + 4, "text-anchor": "end" }, num(v)));
    }
    const span = data.end_ms - data.start_ms;
    for (let i = 0; i <= 6; i++) {
      const ms = data.start_ms + (span * i) / 6;
      const px = x0 + ((x1 - x0) * i) / 6;
      axes.appendChild(el("text", { class: "xtick", x: px, y: H - 10, "text-anchor": "middle" }, timeLabel(ms, boot.range)));
    }
    svg.appendChild(axes);

    // Threshold lines, labelled with their value.
    for (const th of data.thresholds) {
      const ty = y(th.value);
      svg.appendChild(el("line", { class: `threshold th-${th.level}`, "data-key": th.key, x1: x0, x2: x1, y1: ty, y2: ty }));
      svg.appendChild(el("text", { class: `thlabel th-${th.level}`, x: x1 - 4, y: ty - 3, "text-anchor": "end" },
        `${th.value} ${data.unit}`));
    }

    // Min–max band and mean line, one piece per run of consecutive buckets.
    const segs = segments(data.buckets, data.bucket_ms);
    let band = "", line = "";
    for (const seg of segs) {
      const top = seg.map((b, i) => `${i ? "L" : "M"}${x(b.start).toFixed(1)},${y(b.max).toFixed(1)}`).join(" ");
      const bottom = seg.slice().reverse().map((b) => `L${x(b.start).toFixed(1)},${y(b.min).toFixed(1)}`).join(" ");
      band += `${top} ${bottom} Z `;
      line += seg.map((b, i) => `${i ? "L" : "M"}${x(b.start).toFixed(1)},${y(b.mean).toFixed(1)}`).join(" ") + " ";
    }
    svg.appendChild(el("path", { class: "minmax", d: band.trim() }));
    svg.appendChild(el("path", { class: "mean", d: line.trim(), "data-points": data.buckets.length }));
    // A lone bucket between gaps is a point, not a line: mark it so it stays visible.
    for (const seg of segs) {
      if (seg.length === 1) {
        svg.appendChild(el("circle", { class: "mean-dot", cx: x(seg[0].start), cy: y(seg[0].mean), r: 2.5 }));
      }
    }
    plot.appendChild(svg);
  }

  async function load(section) {
    const metric = section.dataset.metric;
    const info = boot.metrics.find((m) => m.id === metric);
    const q = new URLSearchParams({ room: boot.room, metric, range: boot.range });
    try {
      const r = await fetch("/api/trends?" + q.toString(), { headers: { Accept: "application/json" } });
      const body = await r.json();
      if (!r.ok) throw new Error(body.message || "HTTP " + r.status);
      draw(section, body, info);
    } catch (err) {
      section.dataset.state = "error";
      const plot = section.querySelector(".plot");
      plot.textContent = "";
      const p = document.createElement("p");
      p.className = "empty error";
      p.textContent = fill(t["trends.error"], { reason: err.message });
      plot.appendChild(p);
    }
  }

  document.querySelectorAll(".chart[data-metric]").forEach(load);
})();
