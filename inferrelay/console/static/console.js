// The inferrelay console: one page per hash (#overview, #engines, #models, #requests, #batch), each polling the
// server's JSON every 2 s. With keys, the admin key lives in sessionStorage only, sent as Authorization: Bearer.
"use strict";
const POLL_MS = 2000;
const KEY = "inferrelay.adminKey";
const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const bytes = (n) => n == null ? "–" : n >= 1e9 ? (n / 1e9).toFixed(2) + " GB" : (n / 1e6).toFixed(1) + " MB";
const ms = (v) => v == null ? "–" : Number(v).toFixed(1) + " ms";
const pill = (text, tone) => `<span class="pill ${tone}">${esc(text)}</span>`;

class NeedsKey extends Error {}

async function api(path, options = {}) {
  const headers = {"content-type": "application/json"};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.authorization = "Bearer " + key;
  const response = await fetch(path, {...options, headers});
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    throw new NeedsKey(body.error?.message || response.statusText);
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error?.message || response.statusText);
  return body;
}

function chart(title, points, series) {
  // series: [[field, colour, label]]; a polyline per field over the points, scaled to the largest value
  const w = 300, h = 100;
  const top = Math.max(1e-9, ...points.flatMap((p) => series.map(([f]) => p[f] || 0)));
  const lines = series.map(([field, colour]) => {
    const xy = points.map((p, i) => `${(i / Math.max(1, points.length - 1)) * w},${h - ((p[field] || 0) / top) * (h - 4)}`);
    return `<polyline stroke="${colour}" points="${xy.join(" ")}"/>`;
  });
  const last = points.length ? points[points.length - 1] : {};
  const legend = series.map(([f, colour, label]) => `<span style="color:${colour}">■</span> ${esc(label)} ${esc(last[f] ?? "–")}`);
  return `<div class="card"><h3>${esc(title)}</h3><svg class="chart" viewBox="0 0 ${w} ${h}" preserveAspectRatio="none">
    <line x1="0" y1="${h}" x2="${w}" y2="${h}" stroke="#d9dce1"/>${lines.join("")}</svg>
    <div class="muted">${legend.join(" &nbsp; ")} <span style="float:right">max ${esc(+top.toFixed(3))}</span></div></div>`;
}

function table(head, rows) {
  return `<table><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr>${rows.join("") ||
    `<tr><td colspan="${head.length}" class="muted">none</td></tr>`}</table>`;
}

const pages = {
  overview: {
    async render() {
      const [series, stats] = await Promise.all([api("/api/v1/requests/series?minutes=10&bucket_s=10"), api("/api/v1/runtime/stats")]);
      const p = series.points;
      const fallbacks = Object.entries(series.fallbacks).map(([k, n]) => `<tr><td>${esc(k)}</td><td>${n}</td></tr>`);
      const remedies = Object.entries(stats.remediation).flatMap(([model, steps]) =>
        Object.entries(steps).map(([step, n]) => `<tr><td>${esc(model)}</td><td>${esc(step)}</td><td>${n}</td></tr>`));
      return `<h2>Last 10 minutes <span class="muted">(10 s buckets)</span></h2><div class="grid">
        ${chart("Requests per second", p, [["rps", "#2563eb", "req/s"]])}
        ${chart("Error rate", p, [["error_rate", "#b91c1c", "errors"]])}
        ${chart("Latency", p, [["p50_ms", "#15803d", "p50 ms"], ["p95_ms", "#b45309", "p95 ms"]])}
        ${chart("Time to first token", p, [["ttft_p50_ms", "#7c3aed", "p50 ms"]])}
        <div class="card"><h3>Fallbacks by kind</h3>${table(["kind", "attempts"], fallbacks)}</div>
        <div class="card"><h3>Remediations</h3>${table(["model", "step", "times"], remedies)}</div></div>`;
    },
  },
  engines: {
    async render() {
      const [engines, providers] = await Promise.all([api("/api/v1/engines"), api("/api/v1/providers")]);
      const erows = engines.engines.map((e) => `<tr data-engine="${esc(e.name)}"><td>${esc(e.name)}</td>
        <td>${e.available ? pill("available", "ok") : pill("unavailable", "bad")}</td>
        <td>${esc(e.capabilities.join(", "))}</td><td>${esc(e.error || "")}</td>
        <td>${e.last_failure ? esc(`${e.last_failure.kind}: ${e.last_failure.reason}`) : ""}</td></tr>`);
      const prows = providers.providers.map((p) => {
        const cd = p.cooldown || {};
        const state = cd.state === "open" ? pill(`cooling down, ${Math.ceil(cd.cooldown_remaining_s)} s left`, "warn")
          : p.healthy === false ? pill("unhealthy", "bad") : p.healthy ? pill("healthy", "ok") : pill("not checked yet", "");
        return `<tr data-provider="${esc(p.name)}"><td>${esc(p.name)}</td><td>${esc(p.type)}</td><td>${esc(p.base_url)}</td>
          <td class="state">${state}</td><td>${p.in_flight}</td><td>${ms(p.latency_ms)}</td><td>${p.requests} / ${p.failures}</td>
          <td>${esc(p.last_error || "")}</td></tr>`;
      });
      return `<h2>Local engines</h2>${table(["engine", "state", "serves", "why not, and the fix", "last failure"], erows)}
        <h2>Remote providers <span class="muted">(state: ${esc(providers.state?.kind || providers.state?.backend || "")})</span></h2>
        ${table(["provider", "type", "base_url", "state", "in flight", "latency", "requests / failures", "last error"], prows)}`;
    },
  },
  models: {
    async render() {
      const stats = await api("/api/v1/runtime/stats");
      const now = Date.now();
      const devices = Object.entries(stats.devices).map(([name, d]) => {
        const cap = d.budget_bytes || (d.charged_bytes + (d.room_bytes || 0)) || 1;
        const share = Math.min(100, (100 * d.charged_bytes) / cap);
        return `<div class="card"><h3>${esc(name)}</h3><div class="bar"><div style="width:${share}%"></div></div>
          ${bytes(d.charged_bytes)} held of ${d.budget_bytes ? bytes(d.budget_bytes) + " budget" : bytes(cap) + " (held + room)"};
          ${d.models} model(s)</div>`;
      });
      const rows = Object.values(stats.models).map((m) => {
        const slots = m.loaded.map((s) => {
          const left = s.keep_alive_deadline ? Math.max(0, (Date.parse(s.keep_alive_deadline) - now) / 1000) : null;
          return `${esc(s.engine)} on ${esc(s.device)} (${esc(s.dtype)}), ${bytes(s.memory.charged_bytes)},
            keep_alive ${left == null ? "in use" : Math.round(left) + " s left"}${s.worker?.pid ? ", worker pid " + esc(s.worker.pid) : ""}`;
        });
        const tone = m.state === "loaded" ? "ok" : m.state === "failed" ? "bad" : "";
        const action = m.state === "loaded" ? `<button data-unload="${esc(m.name)}">Unload</button>`
          : `<button data-load="${esc(m.name)}">Load</button>`;
        return `<tr data-model="${esc(m.name)}"><td>${esc(m.name)}</td><td class="state">${pill(m.state, tone)}</td>
          <td>${esc((m.engines || []).join(" → "))}</td><td>${slots.join("<br>") || (m.last_failure ? esc(m.last_failure.message) : "")}</td>
          <td>${m.queue.running} / ${m.queue.waiting}</td><td>${action}</td></tr>`;
      });
      return `<h2>Memory by device</h2><div class="grid">${devices.join("") || '<p class="muted">nothing loaded</p>'}</div>
        <h2>Models</h2>${table(["model", "state", "engines", "loaded on", "running / waiting", ""], rows)}`;
    },
    async click(target) {
      const name = target.dataset.load || target.dataset.unload;
      if (!name) return;
      target.disabled = true;
      target.textContent = target.dataset.load ? "Loading…" : "Unloading…";
      const path = target.dataset.load ? "/api/v1/runtime/models/load" : "/api/v1/runtime/models/unload";
      try { await api(path, {method: "POST", body: JSON.stringify({name})}); } catch (e) { alert(e.message); }
      refresh();
    },
  },
  requests: {
    controls: `<div class="filters">Model <input id="f-model" size="22"> Outcome <select id="f-outcome">
      <option value="">any</option><option>success</option><option value="failed">failed</option></select>
      In the last <select id="f-since"><option value="">any time</option><option value="300">5 min</option>
      <option value="3600">hour</option><option value="86400">day</option></select></div><div id="detail"></div>`,
    async render() {
      const q = new URLSearchParams({limit: "100"});
      for (const [field, id] of [["model", "f-model"], ["outcome", "f-outcome"], ["since_s", "f-since"]]) {
        if ($("#" + id).value) q.set(field, $("#" + id).value);
      }
      const {requests} = await api("/api/v1/requests?" + q);
      const rows = requests.map((r) => `<tr class="clickable" data-request="${esc(r.request_id)}">
        <td>${new Date(r.at * 1000).toLocaleTimeString()}</td><td>${esc(r.model)}</td><td>${esc(r.kind)}${r.stream ? " (stream)" : ""}</td>
        <td>${r.outcome === "success" ? pill("success", "ok") : pill(r.outcome, "bad")}</td><td>${r.status}</td>
        <td>${esc(r.backend || "–")}</td><td>${r.attempts.length}</td><td>${ms(r.latency_ms)}</td><td>${ms(r.ttft_ms)}</td></tr>`);
      return table(["time", "model", "kind", "outcome", "status", "served by", "failed attempts", "latency", "first token"], rows);
    },
    async click(target) {
      const row = target.closest("tr[data-request]");
      if (!row) return;
      const r = await api("/api/v1/requests/" + encodeURIComponent(row.dataset.request));
      const steps = r.attempts.map((a, i) => `<tr><td>${i + 1}</td><td>${esc(a.backend)}</td><td>${pill(a.kind, "bad")}</td></tr>`);
      steps.push(`<tr><td>${r.attempts.length + 1}</td><td>${esc(r.backend || "nothing")}</td><td>${r.outcome === "success" ? pill("served", "ok") : pill(r.outcome, "bad")}</td></tr>`);
      $("#detail").innerHTML = `<div class="card" id="request-detail"><h3>Request ${esc(r.request_id)}</h3>
        <p>${esc(r.model)}, ${esc(r.kind)}; status ${r.status}; latency ${ms(r.latency_ms)}, first token ${ms(r.ttft_ms)};
        tokens ${r.prompt_tokens} in, ${r.completion_tokens} out${r.key_name ? "; key " + esc(r.key_name) : ""}</p>
        ${table(["step", "backend", "outcome"], steps)}
        ${(r.remedies || []).length ? "<h4>Remediation</h4>" + table(["backend", "step", "detail"],
          r.remedies.map((m) => `<tr><td>${esc(m.backend)}</td><td>${pill(m.step, "warn")}</td><td>${esc(m.detail)}</td></tr>`)) : ""}</div>`;
    },
  },
  batch: {
    controls: `<div class="filters">Output folder <input id="f-output" size="60" placeholder="/path/to/OUTDIR"></div>`,
    seen: null,
    async render() {
      const output = $("#f-output").value.trim();
      if (!output) return '<p class="muted">Give a batch job\'s output folder (the OUTDIR of inferrelay batch).</p>';
      const job = await api("/api/v1/batch/status?output=" + encodeURIComponent(output));
      const before = this.seen && this.seen.output === job.output ? this.seen : null;
      const rate = before ? (job.rows_done - before.rows_done) / Math.max(1e-3, job.at - before.at) : null;
      this.seen = job;
      const share = job.total_rows ? (100 * job.rows_done) / job.total_rows : 100;
      const shards = job.shards.map((s) => `<tr><td>${s.index}</td><td>${s.start}–${s.stop}</td>
        <td>${pill(s.state, s.state === "done" ? "ok" : s.state === "failed" ? "bad" : "warn")}</td><td>${s.rows_done}</td>
        <td>${s.attempts}</td><td>${esc(s.last_error || "")}</td></tr>`);
      return `<div class="card" id="batch-summary"><h3>${esc(job.input)}</h3><div class="bar"><div style="width:${share}%"></div></div>
        ${job.rows_done} of ${job.total_rows} rows (${share.toFixed(1)}%), ${rate == null ? "–" : rate.toFixed(0)} rows/s,
        ${job.failed} failed shard(s); <span class="muted">${esc(JSON.stringify(job.parameters))}</span></div>
        ${table(["shard", "rows", "state", "done", "attempts", "last error"], shards)}`;
    },
  },
};

let current = null;
let busy = false;

async function refresh() {
  if (busy || !current || document.hidden) return;  // a tab in the background costs the server nothing
  busy = true;
  const page = current;
  try {
    const html = await pages[page].render();
    if (page === current) $("#body").innerHTML = html;
    $("#status").textContent = "updated " + new Date().toLocaleTimeString();
    $("#status").className = "muted";
    $("#keyform").hidden = true;
  } catch (error) {
    if (error instanceof NeedsKey) {
      $("#keyform").hidden = false;
      $("#keyerror").textContent = sessionStorage.getItem(KEY) ? error.message : "";
    }
    $("#status").textContent = error.message;
    $("#status").className = "bad";
  } finally {
    busy = false;
    $("#forget").hidden = !sessionStorage.getItem(KEY);
  }
}

function show() {
  const name = location.hash.slice(1) in pages ? location.hash.slice(1) : "overview";
  current = name;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("on", a.dataset.page === name));
  $("#main").innerHTML = `${pages[name].controls || ""}<div id="body" data-page="${name}"></div>`;
  refresh();
}

$("#main").addEventListener("click", (event) => pages[current].click?.(event.target));
$("#main").addEventListener("change", () => refresh());
$("#keyform").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("#key").value.trim());
  $("#key").value = "";
  refresh();
});
$("#forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); refresh(); });
window.addEventListener("hashchange", show);
document.addEventListener("visibilitychange", () => refresh());
setInterval(refresh, POLL_MS);
show();
