// Fleet board (templates/fleet.html): the rows of GET /api/fleet/sites, worst first, re-read every
// boot.refresh_s seconds (the server keeps the fleet state live from a NATS watch; this page polls it).
// Strings come from the page's catalogue (boot.t); times in the browser's time zone.
"use strict";
(function () {
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const t = boot.t;
  const table = document.getElementById("fleet-board");
  const body = table.querySelector("tbody");

  function fill(text, values) {
    return text.replace(/\{(\w+)\}/g, (_, k) => (k in values ? String(values[k]) : "{" + k + "}"));
  }

  function duration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return fill(t["fleet.unit.s"], { n: s });
    const m = Math.floor(s / 60);
    if (m < 60) return fill(t["fleet.unit.min"], { n: m });
    const h = Math.floor(m / 60);
    if (h < 24) return fill(t["fleet.unit.h"], { h: h, m: m % 60 });
    return fill(t["fleet.unit.d"], { d: Math.floor(h / 24), h: h % 24 });
  }

  function lag(ms) {  // seconds with a decimal below 10 s: a healthy lag is a fraction of one
    return ms < 10000 ? fill(t["fleet.unit.s"], { n: (Math.max(0, ms) / 1000).toFixed(1) }) : duration(ms);
  }

  function time(ms) {
    return new Date(ms).toLocaleString(boot.lang === "ja" ? "ja-JP" : "en-GB", {
      month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  }

  function cell(row, content, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    row.appendChild(td);
    return td;
  }

  function span(text, cls) {
    const s = document.createElement("span");
    s.textContent = text;
    if (cls) s.className = cls;
    return s;
  }

  function row(s) {
    const tr = document.createElement("tr");
    tr.className = "lvl-" + s.level;
    tr.dataset.site = s.site;
    tr.dataset.level = s.level;
    tr.dataset.linkUp = String(s.link_up);
    tr.dataset.critical = String(s.alerts.critical);
    const a = document.createElement("a");
    a.href = "/fleet/sites/" + encodeURIComponent(s.site) + "?lang=" + boot.lang;
    a.textContent = s.site;
    cell(tr, a, "site");
    const status = document.createElement("span");
    status.appendChild(span(t["fleet.level." + s.level], "badge"));
    for (const p of s.problems) status.appendChild(span(t["fleet.problem." + p] || p, "problem"));
    cell(tr, status, "status");
    const counts = document.createElement("span");
    const c = s.alerts;
    counts.appendChild(span(String(c.critical), c.critical ? "n crit" : "n"));
    counts.appendChild(document.createTextNode(" / "));
    counts.appendChild(span(String(c.warning), c.warning ? "n warn" : "n"));
    counts.appendChild(document.createTextNode(" / "));
    counts.appendChild(span(String(c.info), "n"));
    cell(tr, counts, "num counts");
    cell(tr, s.oldest_active_ts == null ? t["fleet.never"] : fill(t["fleet.ago"], { duration: duration(boot.now - s.oldest_active_ts) }), "oldest");
    cell(tr, s.devices_offline + " / " + s.battery_low + " (" + s.devices + ")", "num devices");
    let link;
    if (s.link_up) {
      link = span(t["fleet.link_up"]);
    } else {
      link = document.createElement("span");
      link.appendChild(span(t["fleet.link_down"], "down"));
      if (s.link_down_since_ms != null) {
        link.appendChild(document.createTextNode(" " + fill(t["fleet.link_down_since"], {
          time: time(s.link_down_since_ms), duration: duration(s.link_down_for_ms) })));
      }
    }
    if (s.link_pending) link.appendChild(document.createTextNode(" · " + fill(t["fleet.pending"], { n: s.link_pending })));
    cell(tr, link, "link");
    cell(tr, s.lag_ms == null ? t["fleet.never"] : lag(s.lag_ms), "num lag");
    const gw = s.gateway_online === false ? t["fleet.gateway_offline"] + " · " : "";
    cell(tr, s.gateway_age_ms == null ? t["fleet.never"] : gw + fill(t["fleet.ago"], { duration: duration(s.gateway_age_ms) }), "gateway");
    const r = s.records;
    const rec = r.status === "verified" ? fill(t["fleet.records_verified"], { day: r.day, seq: r.seq })
      : r.status === "problem" ? fill(t["fleet.records_problem"], { problem: r.problem }) : t["fleet.records_none"];
    const recCell = cell(tr, rec, "records");
    recCell.dataset.status = r.status;
    if (r.status === "problem") recCell.classList.add("down");
    return tr;
  }

  async function refresh() {
    try {
      const res = await fetch("/api/fleet/sites", { headers: { accept: "application/json" } });
      if (res.status === 401) { window.location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); return; }
      if (!res.ok) throw new Error("HTTP " + res.status);
      const data = await res.json();
      boot.now = data.now_ms;
      body.replaceChildren(...data.sites.map(row));
      document.getElementById("fleet-empty").hidden = data.sites.length > 0;
      document.getElementById("fleet-stale").hidden = data.connected && data.synced;
      document.getElementById("fleet-updated").textContent = fill(t["fleet.updated"], { time: time(data.now_ms), n: boot.refresh_s });
      table.dataset.state = "ready";
      table.dataset.updated = String(data.now_ms);
    } catch (e) {
      document.getElementById("fleet-stale").hidden = false;
      table.dataset.state = "error";
    }
  }

  refresh();
  setInterval(refresh, Math.max(1, boot.refresh_s) * 1000);
})();
