// Staff room view: applies the server's snapshot and change events (SSE, /api/events) to the page,
// sounds the alarm (Web Audio, no file), runs the watchdog, and sends acknowledgements, nap session
// commands and today's assignments. Vanilla JS, no build step, no CDN. All text comes from the
// catalogue embedded by the server (dashboard/i18n.py); data is inserted with textContent only.
"use strict";
(() => {
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const T = boot.t;
  const locale = boot.lang === "ja" ? "ja-JP" : "en-GB";
  const STALE_S = boot.stale_s; // a reading older than this is "no data" (the sensor-lost rule: 10 s)
  const WATCHDOG_MS = boot.watchdog_s * 1000; // feed or gateway heartbeat missing this long: monitoring lost
  const BATTERY_LOW = boot.battery_low_pct;
  // If no acknowledged alert comes back from the gateway in this time, let staff try again.
  const ACK_RETRY_MS = 10000;
  const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };

  const alerts = new Map(); // id -> alert object (contract Alert)
  const postures = new Map(); // device -> {position, ts}
  const breathing = new Map(); // device -> {rate_bpm, present, ts}
  const devStatus = new Map(); // device -> {online, battery_pct}
  const assignments = new Map(); // device -> contract DeviceAssignment
  const sessions = new Map(); // room -> contract SessionState
  const pendingAck = new Map(); // alert id -> timer
  let clockOffsetMs = 0; // server clock minus browser clock
  const pageStart = Date.now();
  let lastFeedAt = pageStart; // browser time of the last SSE event (a tick comes every second)
  let streamOpen = false;
  let mqttConnected = true;
  let gateway = { online: null, ageMs: null, at: pageStart }; // heartbeat age as of browser time `at`
  let monitoring = "connecting"; // ok | connecting | lost
  // The server refused us (401: logged out here or elsewhere, session ended, user disabled). Nothing comes
  // back by itself: EventSource gives up on a 401, so the page says why and links to the login page.
  let signedOut = false;

  const fmt = (key, vars = {}) => (T[key] ?? key).replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
  const timeOf = (ms) => new Date(ms).toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const hhmm = (ms) => new Date(ms).toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit" });
  const serverNow = () => Date.now() + clockOffsetMs;
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const byData = (attr, value) => document.querySelector(`[${attr}="${CSS.escape(value)}"]`);

  async function postJSON(url, body) {
    // Returns null on success, else a one-line reason. The CSRF token comes from the page once signed in.
    // The server records every action under the signed-in user; the page sends no name.
    const headers = { "Content-Type": "application/json" };
    const csrf = document.querySelector('meta[name="csrf-token"]');
    if (csrf) headers["X-CSRF-Token"] = csrf.content;
    try {
      const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
      if (response.status === 202) return null;
      if (response.status === 401) setSignedOut();
      const data = await response.json().catch(() => ({}));
      return data.message ?? `HTTP ${response.status}`;
    } catch (err) {
      return String(err);
    }
  }

  // ---------------------------------------------------------------- alerts

  function where(a) {
    const parts = [];
    if (a.room) parts.push(boot.rooms[a.room] ?? a.room);
    if (a.child) parts.push(`${boot.children[a.child] ?? ""} (${a.child})`.trim());
    if (a.device) parts.push(a.device);
    return parts;
  }

  function alertRow(a) {
    const li = el("li", `alert-row sev-${a.severity}`);
    li.dataset.alertId = a.id;
    li.dataset.testid = "alert-row";
    li.dataset.state = a.state;
    li.dataset.acknowledged = String(a.acknowledged);
    li.dataset.severity = a.severity;
    li.append(el("span", "sev", T[`severity.${a.severity}`] ?? a.severity));
    li.append(el("span", "msg", boot.lang === "ja" ? a.message : a.message_en));
    li.append(el("span", "meta", [...where(a), fmt("since", { time: timeOf(a.started_ts) })].join(" · ")));
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

  const urgency = (x, y) => (x.state === "active" ? 0 : 1) - (y.state === "active" ? 0 : 1)
    || SEVERITY_RANK[x.severity] - SEVERITY_RANK[y.severity]
    || x.started_ts - y.started_ts;

  function renderAlerts() {
    const list = document.getElementById("alerts");
    const sorted = [...alerts.values()].sort(urgency);
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
    renderBanner(sorted.filter((a) => !a.acknowledged));
    renderChildren();
    updateAlarm();
  }

  function renderBanner(unacked) {
    const banner = document.getElementById("alarm-banner");
    const top = unacked.find((a) => a.severity !== "info") ?? null;
    banner.hidden = top === null;
    if (top === null) { delete banner.dataset.bannerAlert; return; }
    banner.dataset.bannerAlert = top.id;
    banner.dataset.severity = top.severity;
    banner.dataset.state = top.state;
    banner.querySelector(".banner-sev").textContent = T[`severity.${top.severity}`] ?? top.severity;
    banner.querySelector(".banner-msg").textContent = boot.lang === "ja" ? top.message : top.message_en;
    banner.querySelector(".banner-where").textContent = where(top).join(" · ");
    const more = unacked.length - 1;
    banner.querySelector(".banner-more").textContent = more > 0 ? fmt("staff.banner_more", { n: more }) : "";
    const button = banner.querySelector(".banner-ack");
    button.disabled = pendingAck.has(top.id);
    button.textContent = pendingAck.has(top.id) ? T.ack_sending : T.ack;
  }

  function setAlert(a) {
    if (a.acknowledged && pendingAck.has(a.id)) {
      clearTimeout(pendingAck.get(a.id));
      pendingAck.delete(a.id);
    }
    alerts.set(a.id, a);
  }

  async function acknowledge(id) {
    pendingAck.set(id, setTimeout(() => { pendingAck.delete(id); renderAlerts(); }, ACK_RETRY_MS));
    renderAlerts();
    const reason = await postJSON(`api/alerts/${encodeURIComponent(id)}/ack`, {});
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
    if (button) acknowledge(button.closest(".alert-row").dataset.alertId);
  });
  document.querySelector("#alarm-banner .banner-ack").addEventListener("click", () => {
    const id = document.getElementById("alarm-banner").dataset.bannerAlert;
    if (id) acknowledge(id);
  });

  // ---------------------------------------------------------------- children

  const childOf = (device) => (assignments.has(device) ? assignments.get(device).child : boot.devices[device]?.child ?? null);
  const devicesOf = (child) => Object.keys(boot.devices).filter((d) => childOf(d) === child);
  const newest = (map, devices) => devices.map((d) => map.get(d)).filter(Boolean).sort((x, y) => y.ts - x.ts)[0] ?? null;

  function childStatus(child, devices, ageS) {
    const active = [...alerts.values()].filter((a) => a.state === "active" && a.child === child);
    if (active.some((a) => a.severity === "critical")) return "critical";
    if (devices.length === 0 || ageS === null || ageS >= STALE_S) return "nodata";
    const deviceTrouble = devices.some((d) => {
      const s = devStatus.get(d);
      return s && (s.online === false || (s.battery_pct != null && s.battery_pct < BATTERY_LOW));
    });
    if (active.some((a) => a.severity === "warning") || deviceTrouble) return "warning";
    return "ok";
  }

  function renderChild(card) {
    const child = card.dataset.childId;
    const devices = devicesOf(child);
    const posture = newest(postures, devices);
    const breath = newest(breathing, devices);
    const position = posture ? posture.position : "none";
    card.dataset.posture = position;
    card.querySelector(".posture-label").textContent = posture ? (T[`posture.${position}`] ?? position) : T.no_reading;
    card.querySelector(".posture-icon use").setAttribute("href", `/static/icons.svg#pos-${position}`);
    const rate = card.querySelector(".breath-rate");
    if (!breath) rate.textContent = T["staff.no_rate"];
    else if (breath.present === false) rate.textContent = T["staff.off_mat"];
    else rate.textContent = breath.rate_bpm == null ? T["staff.no_rate"] : fmt("staff.bpm", { n: Math.round(breath.rate_bpm) });
    card.dataset.breathing = breath && breath.rate_bpm != null ? String(Math.round(breath.rate_bpm)) : "";
    const lastTs = Math.max(posture ? posture.ts : -1, breath ? breath.ts : -1);
    const age = card.querySelector(".age");
    age.dataset.ts = lastTs >= 0 ? String(lastTs) : "";
    const ageS = lastTs >= 0 ? Math.max(0, (serverNow() - lastTs) / 1000) : null;
    age.textContent = ageS === null ? T.no_reading
      : ageS < 120 ? fmt("seconds_ago", { n: Math.round(ageS) })
        : ageS < 3600 ? fmt("minutes_ago", { n: Math.floor(ageS / 60) })
          : fmt("at_time", { time: new Date(lastTs).toLocaleString(locale) });
    age.classList.toggle("stale", ageS === null || ageS >= STALE_S);
    card.querySelector(".where").textContent = devices.length
      ? devices.map((d) => `${T[`staff.kind.${boot.devices[d].kind}`] ?? ""} ${d}`.trim()).join(" · ")
      : T["staff.no_device"];
    const sensors = card.querySelector(".sensors");
    sensors.replaceChildren(...devices.map((d) => {
      const s = devStatus.get(d);
      const li = el("li");
      li.dataset.deviceId = d;
      li.dataset.online = s ? String(s.online) : "unknown";
      li.append(el("span", "dev", d), " ",
        el("span", "dev-state", s ? (s.online ? T.sensor_online : T.sensor_offline) : T.sensor_unknown),
        el("span", "battery", s && s.battery_pct != null ? fmt("battery", { n: Math.round(s.battery_pct) }) : ""));
      if (s && s.battery_pct != null && s.battery_pct < BATTERY_LOW) li.dataset.batteryLow = "true";
      return li;
    }));
    const status = monitoring === "ok" ? childStatus(child, devices, ageS) : monitoring === "lost" ? "lost" : "nodata";
    card.dataset.status = status;
    card.querySelector(".status-label").textContent = T[`staff.status.${status}`];
  }

  function renderChildren() {
    for (const card of document.querySelectorAll(".child")) renderChild(card);
  }

  function setAgent(a) {
    const item = byData("data-agent-id", a.agent);
    if (!item) return;
    item.dataset.online = String(a.online);
    item.querySelector(".dev-state").textContent = a.online ? T.sensor_online : T.sensor_offline;
  }

  // ---------------------------------------------------------------- sessions and assignments

  const stopArmed = new Map(); // room -> timer: "tap again to end"

  function renderSession(room) {
    const box = byData("data-session-room", room);
    if (!box) return;
    const st = sessions.get(room);
    const button = box.querySelector(".session-toggle");
    box.dataset.active = st ? String(st.active) : "unknown";
    box.querySelector(".session-state").textContent = !st ? T["staff.session_unknown"]
      : st.active ? fmt("staff.session_active", { time: hhmm(st.started_ts), by: st.started_by ?? "" })
        : T["staff.session_idle"];
    button.disabled = !st || box.dataset.sending === "true";
    button.textContent = box.dataset.sending === "true" ? T["staff.sending"]
      : st && st.active ? (stopArmed.has(room) ? T["staff.session_stop_confirm"] : T["staff.session_stop"])
        : T["staff.session_start"];
    button.dataset.action = st && st.active ? "stop" : "start";
  }

  async function toggleSession(room, button) {
    const box = byData("data-session-room", room);
    const action = button.dataset.action;
    if (action === "stop" && !stopArmed.has(room)) {
      // Ending a nap by a stray tap would stop the records: the second tap within 4 s ends it.
      stopArmed.set(room, setTimeout(() => { stopArmed.delete(room); renderSession(room); }, 4000));
      renderSession(room);
      return;
    }
    clearTimeout(stopArmed.get(room));
    stopArmed.delete(room);
    box.dataset.sending = "true";
    renderSession(room);
    const reason = await postJSON(`api/rooms/${encodeURIComponent(room)}/session`, { action });
    delete box.dataset.sending;
    const error = box.querySelector(".session-error");
    error.hidden = reason === null;
    error.textContent = reason === null ? "" : fmt("staff.send_failed", { reason });
    renderSession(room);
  }

  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("button.session-toggle");
    if (button) toggleSession(button.closest(".session").dataset.sessionRoom, button);
  });

  function renderAssignment(device) {
    const row = byData("data-assign-device", device);
    if (!row) return;
    const a = assignments.get(device);
    const select = row.querySelector("select");
    if (row.dataset.sending !== "true") select.value = childOf(device) ?? "";
    const source = row.querySelector(".assign-source");
    source.dataset.source = a ? a.source : "";
    if (row.dataset.error) source.textContent = row.dataset.error;
    else if (row.dataset.sending === "true") source.textContent = T["staff.assign_pending"];
    else source.textContent = !a ? "" : a.source === "staff" ? fmt("staff.assign_staff", { by: a.by ?? "" }) : T["staff.assign_kit"];
  }

  document.addEventListener("change", async (ev) => {
    const select = ev.target.closest("select.assign-child");
    if (!select) return;
    const row = select.closest("[data-assign-device]");
    const device = row.dataset.assignDevice;
    row.dataset.sending = "true";
    delete row.dataset.error;
    renderAssignment(device);
    const reason = await postJSON("api/assignments", { device, child: select.value || null });
    if (reason !== null) {
      delete row.dataset.sending;
      row.dataset.error = fmt("staff.send_failed", { reason });
    }
    renderAssignment(device);
  });

  function setAssignment(a) {
    assignments.set(a.device, a);
    const row = byData("data-assign-device", a.device);
    if (row) delete row.dataset.sending;
    for (const d of Object.keys(boot.devices)) renderAssignment(d);
  }

  // ---------------------------------------------------------------- sound (Web Audio; no file)

  let audio = null;
  let alarmKind = "off";
  let alarmTimer = null;
  let beeps = 0;
  const soundOn = () => audio !== null && audio.state === "running";

  function renderSoundBar() {
    document.getElementById("sound-bar").hidden = soundOn();
    document.body.dataset.sound = soundOn() ? "on" : "off";
  }

  document.getElementById("sound-enable").addEventListener("click", async () => {
    // Browsers start audio only from a user's tap: this is that tap.
    audio = audio ?? new AudioContext();
    try { await audio.resume(); } catch (err) { /* stays off; the button stays */ }
    renderSoundBar();
    if (alarmKind !== "off") playPattern(alarmKind);
  });

  function tone(freq, start, length, type = "square") {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = type;
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, start);
    gain.gain.exponentialRampToValueAtTime(0.4, start + 0.02);
    gain.gain.setValueAtTime(0.4, start + length - 0.03);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + length);
    osc.connect(gain).connect(audio.destination);
    osc.start(start);
    osc.stop(start + length + 0.01);
  }

  // Distinct patterns: critical = fast high-low pairs; warning = one soft tone; lost = a falling siren.
  const PATTERNS = {
    critical: { every: 2000, notes: [[988, 0, 0.18], [740, 0.22, 0.18], [988, 0.44, 0.18], [740, 0.66, 0.18]] },
    warning: { every: 6000, notes: [[660, 0, 0.3, "sine"], [660, 0.45, 0.3, "sine"]] },
    lost: { every: 2500, notes: [[880, 0, 0.35, "sawtooth"], [587, 0.4, 0.35, "sawtooth"], [440, 0.8, 0.5, "sawtooth"]] },
  };

  function playPattern(kind) {
    beeps += 1;
    document.body.dataset.beeps = String(beeps);
    if (!soundOn()) return;
    const t0 = audio.currentTime + 0.02;
    for (const [freq, at, len, type] of PATTERNS[kind].notes) tone(freq, t0 + at, len, type);
  }

  function wantedAlarm() {
    if (monitoring === "lost") return "lost";
    const unacked = [...alerts.values()].filter((a) => a.state === "active" && !a.acknowledged);
    if (unacked.some((a) => a.severity === "critical")) return "critical";
    if (unacked.some((a) => a.severity === "warning")) return "warning";
    return "off";
  }

  function updateAlarm() {
    const kind = wantedAlarm();
    document.body.dataset.alarm = kind;
    if (kind === alarmKind) return;
    alarmKind = kind;
    clearInterval(alarmTimer);
    alarmTimer = null;
    if (kind === "off") return;
    // Repeats until acknowledged (or the feed is back): the interval is cleared only by the state.
    playPattern(kind);
    alarmTimer = setInterval(() => playPattern(kind), PATTERNS[kind].every);
  }

  // ---------------------------------------------------------------- watchdog

  function watchdog() {
    const now = Date.now();
    const reasons = [];
    const feedAge = now - lastFeedAt;
    if (signedOut) {
      reasons.push(T["staff.signed_out"]);
    } else if (feedAge > WATCHDOG_MS) {
      reasons.push(fmt("staff.lost_feed", { n: Math.floor(feedAge / 1000) }));
    } else {
      if (!mqttConnected) reasons.push(T["staff.lost_mqtt"]);
      if (gateway.online === false) reasons.push(T["staff.lost_gateway_offline"]);
      else if (gateway.ageMs === null) {
        if (now - pageStart > WATCHDOG_MS) reasons.push(T["staff.lost_gateway_never"]);
      } else {
        const age = gateway.ageMs + (now - gateway.at);
        if (age > WATCHDOG_MS) reasons.push(fmt("staff.lost_gateway", { n: Math.floor(age / 1000) }));
      }
    }
    const heard = streamOpen && gateway.ageMs !== null && gateway.online !== false && mqttConnected;
    const state = reasons.length ? "lost" : heard ? "ok" : "connecting";
    const box = document.getElementById("watchdog");
    box.dataset.state = state;
    box.dataset.reason = signedOut ? "signed_out" : "";
    box.querySelector(".watchdog-title").textContent = signedOut ? `${T["staff.monitoring_lost"]}: ${T["staff.signed_out"]}`
      : state === "lost" ? T["staff.monitoring_lost"] : state === "connecting" ? T["staff.connecting"] : "";
    box.querySelector(".watchdog-detail").textContent = signedOut ? T["staff.signed_out_detail"]
      : state === "lost" ? fmt("staff.monitoring_lost_detail", { reason: reasons.join(" / ") }) : "";
    box.querySelector(".watchdog-login").hidden = !signedOut;
    document.body.dataset.monitoring = state;
    if (state !== monitoring) {
      monitoring = state;
      renderChildren();
      updateAlarm();
    }
  }

  // ---------------------------------------------------------------- connection state

  function renderConnection() {
    const live = document.getElementById("live-status");
    live.dataset.live = signedOut ? "signed_out" : streamOpen ? "ok" : "lost";
    live.textContent = signedOut ? T["staff.signed_out"] : streamOpen ? T.live_ok : T.live_lost;
    const banner = document.getElementById("conn-banner");
    banner.hidden = streamOpen && mqttConnected;
    banner.textContent = !streamOpen ? T.live_lost : T.mqtt_down;
  }

  function setTick(t) {
    clockOffsetMs = t.server_ms - Date.now();
    mqttConnected = t.mqtt_connected;
    gateway = { online: t.gateway_online, ageMs: t.gateway_age_ms, at: Date.now() };
  }

  // ---------------------------------------------------------------- event stream

  const keep = (map, key, rec) => { if ((map.get(key)?.ts ?? -1) <= rec.ts) map.set(key, rec); };
  const handlers = {
    snapshot(s) {
      setTick(s);
      alerts.clear();
      s.alerts.forEach(setAlert);
      s.postures.forEach((p) => keep(postures, p.device, p));
      s.breathing.forEach((b) => keep(breathing, b.device, b));
      s.devices.forEach((d) => devStatus.set(d.device, d));
      s.agents.forEach(setAgent);
      s.sessions.forEach((st) => sessions.set(st.room, st));
      s.assignments.forEach((a) => assignments.set(a.device, a));
      streamOpen = true;
      renderConnection();
      for (const room of Object.keys(boot.rooms)) renderSession(room);
      for (const d of Object.keys(boot.devices)) renderAssignment(d);
      renderAlerts();
    },
    tick(t) { setTick(t); renderConnection(); },
    alert(a) { setAlert(a); renderAlerts(); },
    alert_removed(r) { alerts.delete(r.id); renderAlerts(); },
    posture(p) { keep(postures, p.device, p); renderChildren(); },
    breathing(b) { keep(breathing, b.device, b); renderChildren(); },
    device_status(d) { devStatus.set(d.device, d); renderChildren(); },
    edge_status: setAgent,
    session(st) { sessions.set(st.room, st); renderSession(st.room); },
    assignment(a) { setAssignment(a); renderChildren(); },
    gateway(g) { gateway = { ...gateway, online: g.online }; watchdog(); },
    connection(c) { mqttConnected = c.mqtt_connected; renderConnection(); },
  };

  function setSignedOut() {
    if (signedOut) return;
    signedOut = true;
    if (source) source.close();
    const login = document.querySelector("#watchdog .watchdog-login");
    login.href = `/login?${new URLSearchParams({ next: location.pathname + location.search, lang: boot.lang })}`;
    renderConnection();
    watchdog();
  }

  let source = null;
  let probing = false;

  async function whyDropped() {
    // EventSource does not tell the status of a refused reconnection: ask a cheap endpoint whether we are
    // still signed in. Any other trouble is left to the watchdog (no update for 5 s: monitoring lost).
    if (probing || signedOut) return;
    probing = true;
    try {
      const response = await fetch("api/me", { cache: "no-store" });
      if (response.status === 401) { setSignedOut(); return; }
    } catch (err) { /* the server is away: the watchdog says so */ }
    finally { probing = false; }
    // Refused for another reason (e.g. 503 while starting): EventSource stopped trying, so try again.
    if (source && source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  }

  function connect() {
    if (signedOut) return;
    source = new EventSource("api/events");
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (ev) => {
        lastFeedAt = Date.now();
        handle(JSON.parse(ev.data));
      });
    }
    // EventSource reconnects by itself (retry: 1 s); every reconnect starts with a fresh snapshot.
    source.addEventListener("error", () => { streamOpen = false; renderConnection(); whyDropped(); });
  }

  setInterval(renderChildren, 1000); // ages and "no data" move on without events
  setInterval(watchdog, 250);
  renderSoundBar();
  renderAlerts();
  watchdog();
  connect();
})();
