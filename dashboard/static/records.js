// Nap-check records page: confirm a record with one tap. The dashboard publishes command/record; the
// gateway appends the confirmation; this script then polls the sheet until the cell shows who confirmed.
"use strict";
(() => {
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const T = boot.t;
  const fmt = (key, vars = {}) => (T[key] ?? key).replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));

  async function post(url, body) {
    const headers = { "Content-Type": "application/json" };
    const csrf = document.querySelector('meta[name="csrf-token"]');
    if (csrf) headers["X-CSRF-Token"] = csrf.content;
    try {
      const r = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
      if (r.status === 202) return null;
      const data = await r.json().catch(() => ({}));
      return data.message ?? `HTTP ${r.status}`;
    } catch (err) { return String(err); }
  }

  async function confirmedBy(seq) {
    const q = new URLSearchParams({ room: boot.room, date: boot.date, lang: boot.lang });
    const r = await fetch(`/api/records?${q}`);
    if (!r.ok) return null;
    const cell = (await r.json()).cells.find((c) => c.seq === seq);
    return cell && cell.confirmed_by.length ? cell.confirmed_by : null;
  }

  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button.confirm");
    if (!button) return;
    const td = button.closest("td");
    const seq = Number(td.dataset.seq);
    const error = td.querySelector(".confirm-error");
    button.disabled = true;
    error.hidden = true;
    const reason = await post(`/api/records/${seq}/confirm`, {}); // confirmed under the signed-in user
    if (reason !== null) {
      button.disabled = false;
      error.hidden = false;
      error.textContent = fmt("staff.send_failed", { reason });
      return;
    }
    for (let i = 0; i < 40; i++) { // up to 10 s for the gateway to append the confirmation
      const who = await confirmedBy(seq);
      if (who) {
        td.dataset.confirmed = "true";
        td.querySelector(".who").textContent = fmt("records.confirmed_by", { by: who.join("・") });
        button.remove();
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    button.disabled = false;
  });
})();
