// Staff room view: applies the server's snapshot and change events (SSE, /api/events) to the page
// and sends acknowledgements. Vanilla JS, no build step, no CDN. All text comes from the
// catalogue embedded by the server (dashboard/i18n.py); data is inserted with textContent only.
"use strict";
(() => {
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const T = boot.t;
  // Every POST carries the session's CSRF token (rendered by base.html); the server refuses writes without it.
  const CSRF_HEADERS = { "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]')?.content ?? "" };
  const locale = boot.lang === "ja" ? "ja-JP" : "en-GB";
  // A posture older than this is shown in red: the sensor-lost rule fires at 10 s (DESIGN.md §6).
  const STALE_S = 10;
  // If no acknowledged alert comes back from the gateway in this time, let staff try again.
  const ACK_RETRY_MS = 10000;
  const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };

  const alerts = new Map(); // id -> alert object (contract Alert)
  const postureTs = new Map(); // child id -> ts of the posture shown
  const pendingAck = new Map(); // alert id -> timer
  let clockOffsetMs = 0; // server clock minus browser clock, from the snapshot

  const fmt = (key, vars = {}) => T[key].replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
  const timeOf = (ms) => new Date(ms).toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const byData = (attr, value) => document.querySelector(`[${attr}="${CSS.escape(value)}"]`);

  // ---------------------------------------------------------------- alerts

  function alertRow(a) {
    const li = el("li", `alert-row sev-${a.severity}`);
    li.dataset.alertId = a.id;
    li.dataset.testid = "alert-row";
    li.dataset.state = a.state;
    li.dataset.acknowledged = String(a.acknowledged);
    li.dataset.severity = a.severity;
    li.append(el("span", "sev", T[`severity.${a.severity}`] ?? a.severity));
    li.append(el("span", "msg", boot.lang === "ja" ? a.message : a.message_en));
    const where = [];
    if (a.room) where.push(boot.rooms[a.room] ?? a.room);
    if (a.child) where.push(`${boot.children[a.child] ?? ""} (${a.child})`.trim());
    if (a.device) where.push(a.device);
    where.push(fmt("since", { time: timeOf(a.started_ts) }));
    li.append(el("span", "meta", where.join(" · ")));
    let status;
    if (a.acknowledged) {
      status = fmt("acknowledged_by", { by: a.acknowledged_by ?? "?", time: a.acknowledged_ts ? timeOf(a.acknowledged_ts) : "?" });
    } else {
      status = a.state === "resolved" ? T.state_resolved_unacked : T.state_active;
    }
    li.append(el("span", "status", status));
    if (!a.acknowledged) {
      const button = el("button", "ack", pendingAck.has(a.id) ? T.ack_sending : T.ack);
      button.type = "button";
      button.dataset.testid = "ack-button";
      button.disabled = pendingAck.has(a.id);
      li.append(button);
    }
    return li;
  }

  function renderAlerts() {
    const list = document.getElementById("alerts");
    const sorted = [...alerts.values()].sort(
      (x, y) => (x.state === "active" ? 0 : 1) - (y.state === "active" ? 0 : 1)
        || SEVERITY_RANK[x.severity] - SEVERITY_RANK[y.severity]
        || x.started_ts - y.started_ts);
    // Rows are rebuilt from data; keep an error message the staff have not seen replaced yet.
    const errors = new Map([...list.querySelectorAll(".alert-row")].map(
      (r) => [r.dataset.alertId, r.querySelector(".ack-error")]).filter(([, e]) => e));
    list.replaceChildren(...sorted.map((a) => {
      const row = alertRow(a);
      if (errors.has(a.id) && !a.acknowledged) row.append(errors.get(a.id));
      return row;
    }));
    const active = sorted.filter((a) => a.state === "active");
    const section = document.getElementById("alerts-section");
    section.classList.toggle("has-active", active.length > 0);
    section.classList.toggle("has-unacked", sorted.some((a) => !a.acknowledged));
    document.getElementById("no-alerts").hidden = sorted.length > 0;
    const alertingChildren = new Set(active.map((a) => a.child).filter(Boolean));
    for (const card of document.querySelectorAll(".child")) {
      card.classList.toggle("alerting", alertingChildren.has(card.dataset.childId));
    }
  }

  function setAlert(a) {
    if (a.acknowledged && pendingAck.has(a.id)) {
      clearTimeout(pendingAck.get(a.id));
      pendingAck.delete(a.id);
    }
    alerts.set(a.id, a);
  }

  async function acknowledge(id, button) {
    const by = document.getElementById("staff-name").value.trim();
    button.disabled = true;
    button.textContent = T.ack_sending;
    pendingAck.set(id, setTimeout(() => { pendingAck.delete(id); renderAlerts(); }, ACK_RETRY_MS));
    let reason = null;
    try {
      const response = await fetch(`api/alerts/${encodeURIComponent(id)}/ack`, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...CSRF_HEADERS },
        body: JSON.stringify(by ? { by } : {}),
      });
      if (response.status !== 202) {
        const body = await response.json().catch(() => ({}));
        reason = body.message ?? `HTTP ${response.status}`;
      }
    } catch (err) {
      reason = String(err);
    }
    if (reason !== null) {
      clearTimeout(pendingAck.get(id));
      pendingAck.delete(id);
      renderAlerts();
      const row = byData("data-alert-id", id);
      if (row) row.append(el("span", "ack-error", fmt("ack_failed", { reason })));
    }
  }

  document.getElementById("alerts").addEventListener("click", (ev) => {
    const button = ev.target.closest("button.ack");
    if (button) acknowledge(button.closest(".alert-row").dataset.alertId, button);
  });

  // ---------------------------------------------------------------- children, sensors, agents

  function setPosture(p) {
    if (!p.child) return;
    const card = byData("data-child-id", p.child);
    if (!card || (postureTs.get(p.child) ?? -1) > p.ts) return;
    postureTs.set(p.child, p.ts);
    card.dataset.posture = p.position;
    card.querySelector(".posture-label").textContent = T[`posture.${p.position}`] ?? p.position;
    card.querySelector(".posture-icon use").setAttribute("href", `/static/icons.svg#pos-${p.position}`);
    card.querySelector(".age").dataset.ts = String(p.ts);
  }

  function tickAges() {
    const now = Date.now() + clockOffsetMs;
    for (const age of document.querySelectorAll(".child .age")) {
      if (!age.dataset.ts) continue;
      const ts = Number(age.dataset.ts);
      const s = Math.max(0, Math.round((now - ts) / 1000));
      age.textContent = s < 120 ? fmt("seconds_ago", { n: s })
        : s < 3600 ? fmt("minutes_ago", { n: Math.floor(s / 60) })
          : fmt("at_time", { time: new Date(ts).toLocaleString(locale) });
      age.classList.toggle("stale", s >= STALE_S);
    }
  }

  function setOnline(item, online) {
    item.dataset.online = String(online);
    item.querySelector(".dev-state").textContent = online ? T.sensor_online : T.sensor_offline;
  }

  function setDevice(d) {
    const item = byData("data-device-id", d.device);
    if (!item) return;
    setOnline(item, d.online);
    item.querySelector(".battery").textContent = d.battery_pct == null ? "" : fmt("battery", { n: Math.round(d.battery_pct) });
  }

  function setAgent(a) {
    const item = byData("data-agent-id", a.agent);
    if (item) setOnline(item, a.online);
  }

  // ---------------------------------------------------------------- connection state

  let streamOpen = false;
  let mqttConnected = true;
  function renderConnection() {
    const live = document.getElementById("live-status");
    live.dataset.live = streamOpen ? "ok" : "lost";
    live.textContent = streamOpen ? T.live_ok : T.live_lost;
    const banner = document.getElementById("conn-banner");
    banner.hidden = streamOpen && mqttConnected;
    banner.textContent = !streamOpen ? T.live_lost : T.mqtt_down;
  }

  // ---------------------------------------------------------------- event stream

  const handlers = {
    snapshot(s) {
      clockOffsetMs = s.server_ms - Date.now();
      alerts.clear();
      s.alerts.forEach(setAlert);
      s.postures.forEach(setPosture);
      s.devices.forEach(setDevice);
      s.agents.forEach(setAgent);
      mqttConnected = s.mqtt_connected;
      streamOpen = true;
      renderConnection();
      renderAlerts();
      tickAges();
    },
    alert(a) { setAlert(a); renderAlerts(); },
    alert_removed(r) { alerts.delete(r.id); renderAlerts(); },
    posture(p) { setPosture(p); tickAges(); },
    device_status: setDevice,
    edge_status: setAgent,
    connection(c) { mqttConnected = c.mqtt_connected; renderConnection(); },
  };

  function connect() {
    const source = new EventSource("api/events");
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (ev) => handle(JSON.parse(ev.data)));
    }
    // EventSource reconnects by itself (retry: 1 s); every reconnect starts with a fresh snapshot.
    source.addEventListener("error", () => { streamOpen = false; renderConnection(); });
  }

  const nameInput = document.getElementById("staff-name");
  nameInput.value = localStorage.getItem("nurserywatch.staff") ?? "";
  nameInput.addEventListener("change", () => localStorage.setItem("nurserywatch.staff", nameInput.value.trim()));

  setInterval(tickAges, 1000);
  renderAlerts();
  connect();
})();
