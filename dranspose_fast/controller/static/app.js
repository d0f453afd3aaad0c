// Live status page of the dranspose-fast controller: polls the REST API, draws small plots.
// Plain browser JavaScript, no libraries, no build step. docs/status-page.md says where each
// number comes from. Text from the network goes through textContent only, never innerHTML.
"use strict";

const FAST_MS = 1000;        // progress, status, load
const SLOW_MS = 4000;        // config, parameter descriptions, error logs
const HISTORY = 120;         // samples per plot: two minutes at FAST_MS
const TOKEN_KEY = "dfast-token";
const REDUCER_KEY = "dfast-reducer-url";
const REDUCER_GUESS_PORT = 5001;  // `dranspose-fast local`'s default --reducer-port

const page = {
  scan: null,                // mapping uuid the plots belong to
  series: new Map(),         // plot key -> {last: [t, total], rates: [...]}
  completed: [],             // [t, completed_events] of the last seconds, for the ETA
  config: null,
  paramsHash: null,          // controller's parameters_hash when the values were read
  paramRows: new Map(),      // name -> {row, dtype, ...}
  tokenWait: null,           // the pending token question, shared by every request
  tokenDeclined: false,      // the user cancelled it: polls stop asking
  slowBusy: false,           // a slow poll is running (they must not overlap)
  slowAgain: false,          // and another was asked for meanwhile
};

const $ = (id) => document.getElementById(id);

// === REST ===

class RestError extends Error {
  constructor(status, detail) {
    super(status ? `${status}: ${detail}` : detail);
    this.status = status;
    this.detail = detail;
  }
}

// The text a FastAPI error carries: {"detail": "..."} or a list of validation errors.
async function errorText(resp) {
  const body = await resp.text();
  try {
    const detail = JSON.parse(body).detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    if (detail !== undefined) return JSON.stringify(detail);
  } catch (e) { /* not JSON: the text itself */ }
  return body || resp.statusText;
}

// fetch with the session's bearer token; a 401 or 403 asks for a token and tries again.
// Once the user declined, only what the user does (options.interactive) asks again.
async function api(path, options = {}) {
  const interactive = Boolean(options.interactive);
  options = Object.assign({}, options);
  delete options.interactive;
  for (;;) {
    const headers = Object.assign({}, options.headers || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    let resp;
    try {
      resp = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
    } catch (e) {
      throw new RestError(0, "controller unreachable (" + e.message + ")");
    }
    if (resp.ok) return resp;
    const detail = await errorText(resp);
    if (resp.status !== 401 && resp.status !== 403) throw new RestError(resp.status, detail);
    if (page.tokenDeclined && !interactive) throw new RestError(resp.status, detail);
    await askToken(`${resp.status}: ${detail}`).catch(() => {
      throw new RestError(resp.status, detail);
    });
  }
}

const getJSON = async (path) => (await api(path)).json();

function askToken(reason) {
  if (page.tokenWait) return page.tokenWait;
  const dialog = $("token-dialog"), input = $("token-input");
  const form = $("token-form"), cancel = $("token-cancel");
  $("token-reason").textContent = reason;
  input.value = "";
  page.tokenWait = new Promise((resolve, reject) => {
    const done = (ok) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      page.tokenWait = null;
      page.tokenDeclined = !ok;
      if (ok) resolve(); else reject(new Error("no token"));
    };
    const onSubmit = (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      done(true);
    };
    const onCancel = () => done(false);
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);  // the Escape key
  });
  dialog.showModal();
  input.focus();
  return page.tokenWait;
}

// === small helpers ===

function fmt(n) {
  if (n === null || n === undefined) return "–";
  return Math.round(n).toLocaleString("en-US");
}

function fmtRate(r) {
  if (r === null || r === undefined || !isFinite(r)) return "–";
  if (r >= 100) return Math.round(r).toLocaleString("en-US");
  return r.toFixed(r >= 10 ? 1 : 2);
}

function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(2, "0"), ss = String(sec).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${m}:${ss}`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function setText(id, text) {
  const node = $(id);
  if (node.textContent !== text) node.textContent = text;
}

// The row of `tbody` whose data-key is `key`, created by `make` when missing.
function rowFor(tbody, key, make) {
  for (const row of tbody.rows) if (row.dataset.key === key) return row;
  const row = make();
  row.dataset.key = key;
  tbody.append(row);
  return row;
}

function dropRows(tbody, keep) {
  for (const row of [...tbody.rows]) if (!keep.has(row.dataset.key)) row.remove();
}

// === rates and plots ===

// Rate of a running total, sampled once per poll; a total that fell (a restarted component)
// starts the series again.
function sample(key, total, t) {
  let s = page.series.get(key);
  if (!s) { s = { last: null, rates: [] }; page.series.set(key, s); }
  if (s.last && total >= s.last[1] && t > s.last[0]) {
    s.rates.push((total - s.last[1]) / ((t - s.last[0]) / 1000));
    if (s.rates.length > HISTORY) s.rates.shift();
  }
  s.last = [t, total];
  return s;
}

function currentRate(s) {
  // mean of the last 3 samples: steadier than one poll, still live
  const tail = s.rates.slice(-3);
  return tail.length ? tail.reduce((a, b) => a + b, 0) / tail.length : null;
}

function drawPlot(canvas, values) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
  if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1e-9, ...values);
  // the plot fills its width from 20 samples on; before that it grows from the right
  const span = Math.min(HISTORY, Math.max(20, values.length)) - 1;
  const x = (i) => w - (values.length - 1 - i) * (w / span);
  const y = (v) => h - 3 - (v / max) * (h - 14);
  ctx.fillStyle = "#e8eef7";
  ctx.fillRect(0, 0, w, h);
  if (values.length > 1) {
    ctx.beginPath();
    ctx.moveTo(x(0), h);
    values.forEach((v, i) => ctx.lineTo(x(i), y(v)));
    ctx.lineTo(x(values.length - 1), h);
    ctx.closePath();
    ctx.fillStyle = "rgba(37, 99, 235, 0.18)";
    ctx.fill();
    ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    ctx.strokeStyle = "#1d4ed8";
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }
  ctx.fillStyle = "#475569";
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillText("max " + fmtRate(values.length ? max : null), 3, 10);
}

function plotCell() {
  return el("td", { class: "plotcol" }, el("canvas", { class: "plot" }));
}

// === scan progress (GET api/v1/progress, api/v1/status, api/v1/load) ===

function renderProgress(progress, status, load, t) {
  if (status.mapping_uuid !== page.scan) {
    page.scan = status.mapping_uuid;
    page.completed = [];
    for (const key of [...page.series.keys()]) if (key.startsWith("worker:")) page.series.delete(key);
  }
  const total = progress.total_events;
  const done = progress.completed_events;
  setText("progress-completed", fmt(done));
  setText("progress-total", total === null ? "open" : fmt(total));
  setText("progress-assigned", fmt(progress.last_assigned));
  setText("progress-known", fmt(status.known_events));
  setText("progress-reduced", fmt(status.reducer ? status.reducer.reduced : null));
  const pct = total ? (100 * done) / total : null;
  setText("progress-percent", pct === null ? "" : pct.toFixed(1) + " %");
  const denominator = total || Math.max(status.known_events, progress.last_assigned, 1);
  $("progress-bar").style.width = (100 * done) / denominator + "%";
  $("progress-assigned-bar").style.width = (100 * progress.last_assigned) / denominator + "%";

  page.completed.push([t, done]);
  while (page.completed.length > 6) page.completed.shift();
  const [t0, d0] = page.completed[0];
  const rate = t > t0 ? (done - d0) / ((t - t0) / 1000) : null;
  const elapsed = Math.max(0, ...Object.values(load).map((w) => (w.intervals.scan || {}).seconds || 0));
  setText("progress-elapsed", status.mapping_uuid ? fmtDuration(elapsed) : "–");
  if (progress.finished) {
    setText("progress-rate", fmtRate(elapsed ? done / elapsed : null) + " (mean)");
    setText("progress-eta", "–");
  } else {
    setText("progress-rate", fmtRate(rate));
    setText("progress-eta", total && rate > 0 ? fmtDuration((total - done) / rate) : "–");
  }

  const pill = $("scan-state");
  let label = "no scan", cls = "idle";
  if (status.mapping_uuid) {
    if (!status.finished) { label = status.open ? "running (open sequence)" : "running"; cls = "run"; }
    else if (status.reason === "completed") { label = "completed"; cls = "ok"; }
    else { label = "ended: " + status.reason; cls = "bad"; }
  }
  setText("scan-state", label);
  pill.className = "pill " + cls;
  setText("scan-uuid", status.mapping_uuid ? "scan " + status.mapping_uuid : "");
}

// === streams (ingester counters in api/v1/status, their streams in api/v1/config) ===

function renderStreams(status, t) {
  const tbody = $("streams").tBodies[0];
  const seen = new Set();
  const ingesters = (page.config && page.config.ingesters) || [];
  for (const ing of ingesters) {
    const counters = status.components["ingester:" + ing.name];
    if (!counters) continue;
    const key = ing.name;
    seen.add(key);
    const s = sample("ingester:" + key, counters["counters.forwarded"] || 0, t);
    const row = rowFor(tbody, key, () => el("tr", {}, el("td", { class: "name" }), el("td"),
      plotCell(), el("td", { class: "rate" }), el("td", { class: "forwarded" }),
      el("td", { class: "queued" })));
    row.id = "stream-" + key;
    row.cells[0].textContent = ing.streams.join(", ");
    row.cells[1].textContent = ing.name;
    row.cells[3].textContent = fmtRate(currentRate(s));
    row.cells[4].textContent = fmt(counters["counters.forwarded"]);
    row.cells[5].textContent = fmt(counters["counters.queued_for_absent_workers"]);
    drawPlot(row.cells[2].firstChild, s.rates);
  }
  dropRows(tbody, seen);
  $("streams-empty").hidden = seen.size > 0;
  $("streams").hidden = seen.size === 0;
}

// === losses (api/v1/status: dropped, lost_workers) ===

function renderLosses(status) {
  const tbody = $("losses").tBodies[0];
  const rows = Object.entries(status.dropped).filter(([, count]) => count).map(([name, count]) => {
    const [role, reason] = name.split(".", 2);
    return [name, role, reason.replaceAll("_", " "), count];
  });
  for (const [worker, lost] of Object.entries(status.lost_workers)) {
    rows.push(["lost:" + worker, "worker " + worker,
      `vanished mid-scan (${fmt(lost.constraints_rebound)} constraints rebound)`, lost.events_lost]);
  }
  for (const [key, where, reason, count] of rows) {
    const row = rowFor(tbody, key, () => el("tr", { class: "bad-row" }, el("td"), el("td"), el("td", { class: "count" })));
    row.cells[0].textContent = where;
    row.cells[1].textContent = reason;
    row.cells[2].textContent = fmt(count);
  }
  dropRows(tbody, new Set(rows.map((r) => r[0])));
  const total = status.dropped_total;
  setText("losses-total", fmt(total));
  $("losses-total").className = "pill " + (total ? "bad" : "ok");
  $("losses-none").hidden = rows.length > 0;
  $("losses").hidden = rows.length === 0;
}

// === workers (api/v1/status: workers, components; api/v1/load) ===

function renderWorkers(status, t) {
  const tbody = $("workers").tBodies[0];
  const seen = new Set();
  for (const [name, w] of Object.entries(status.workers)) {
    seen.add(name);
    const s = sample("worker:" + name, w.processed, t);
    const c = status.components["worker:" + name] || {};
    const row = rowFor(tbody, name, () => el("tr", {}, el("td", { class: "name" }), plotCell(),
      el("td", { class: "rate" }), el("td", { class: "processed" }), el("td", { class: "queue" }),
      el("td", { class: "credit" }), el("td", { class: "results" }), el("td", { class: "reduced" }),
      el("td", { class: "errors" }), el("td", { class: "waiting" }), el("td", { class: "rqueued" })));
    row.id = "worker-" + name;
    row.cells[0].textContent = name;
    row.cells[0].title = "tags: " + w.tags.join(", ");
    row.cells[2].textContent = fmtRate(currentRate(s));
    row.cells[3].textContent = fmt(w.processed);
    const window = w.outstanding + w.credit;
    row.cells[4].replaceChildren(queueBar(w.outstanding, window));
    row.cells[5].textContent = fmt(w.credit);
    row.cells[6].textContent = fmt(w.results);
    row.cells[7].textContent = fmt(w.reduced);
    row.cells[8].textContent = fmt(w.errors);
    row.cells[8].classList.toggle("bad-text", w.errors > 0);
    row.cells[9].textContent = fmt(c.waiting_events);
    row.cells[10].textContent = fmt(c.results_queued);
    drawPlot(row.cells[1].firstChild, s.rates);
  }
  dropRows(tbody, seen);
  // live workers without credits in this scan (a worker whose class failed takes no events)
  const idle = ((page.config && page.config.workers) || []).filter((w) => !seen.has(w.name))
    .map((w) => w.name + (w.class_error ? " (its class failed: see Class errors)" : ""));
  $("workers-idle").hidden = idle.length === 0;
  setText("workers-idle", "running but taking no events in this scan: " + idle.join(", "));
  $("workers-empty").hidden = seen.size > 0;
  $("workers").hidden = seen.size === 0;
  const red = Object.entries(status.components).find(([k]) => k.startsWith("reducer:"));
  if (red) {
    const r = red[1];
    setText("reducer-line", `reducer: ${fmt(r.results)} results, ${fmt(r.held_results)} held ` +
      `for a scan it has not seen yet, ${fmt(r.user_errors)} user errors, ${fmt(r.timer_errors)} timer errors`);
  } else {
    setText("reducer-line", "no reducer is running");
  }
}

function queueBar(depth, window) {
  const frac = window > 0 ? Math.min(1, depth / window) : 0;
  const bar = el("span", { class: "qbar" }, el("span", { class: "qfill" }));
  bar.firstChild.style.width = (100 * frac).toFixed(1) + "%";
  bar.firstChild.classList.toggle("full", frac > 0.9);
  return el("span", { class: "qwrap" }, bar, el("span", { class: "qnum" }, fmt(depth)));
}

// === class errors (api/v1/config: class_error, class_errors, user_errors; api/v1/logs) ===

function renderErrors(config) {
  const tbody = $("errors").tBodies[0];
  const seen = new Set();
  const parts = config.workers.map((w) => ["worker " + w.name, w]);
  if (config.reducer) parts.push(["reducer", config.reducer]);
  let total = 0;
  for (const [label, c] of parts) {
    const classErrors = c.class_errors || 0, userErrors = c.user_errors || 0;
    const message = c.class_error || c.last_error || "";
    if (!classErrors && !userErrors && !message) continue;
    total += classErrors + userErrors;
    seen.add(label);
    const row = rowFor(tbody, label, () => el("tr", {}, el("td", { class: "name" }),
      el("td", { class: "count" }), el("td", { class: "count" }), el("td", { class: "message" })));
    row.cells[0].textContent = label;
    row.cells[1].textContent = fmt(classErrors);
    row.cells[2].textContent = fmt(userErrors);
    row.cells[3].textContent = message;
  }
  dropRows(tbody, seen);
  setText("errors-total", fmt(total));
  $("errors-total").className = "pill " + (total ? "bad" : "ok");
  $("errors-none").hidden = seen.size > 0;
  $("errors").hidden = seen.size === 0;
}

function renderLogs(entries) {
  const last = entries.slice(-20).reverse();
  setText("logs-count", String(entries.length));
  $("logs").replaceChildren(...last.map((e) => {
    const when = new Date(1000 * Number(e.created || 0)).toLocaleTimeString("en-GB");
    return el("li", {}, el("span", { class: "muted" }, `${when} ${e.component || e.name} `), e.msg || "");
  }));
}

// === parameters (api/v1/parameters, api/v1/parameter/{name}) ===

function showValue(dtype, bytes) {
  if (bytes === null) return "(not set)";
  if (dtype === "binary") return `${bytes.length.toLocaleString("en-US")} bytes`;
  return new TextDecoder().decode(bytes);
}

function inputFor(p) {
  if (p.dtype === "bool") {
    return el("select", { class: "new-value" }, el("option", {}, "True"), el("option", {}, "False"));
  }
  if (p.dtype === "binary") return el("input", { class: "new-value", type: "file" });
  return el("input", { class: "new-value", type: "text", spellcheck: "false",
                       placeholder: p.dtype === "str" ? "text" : p.dtype });
}

async function readValue(name) {
  try {
    const resp = await api("api/v1/parameter/" + encodeURIComponent(name));
    return new Uint8Array(await resp.arrayBuffer());
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

async function renderParameters(descriptions, config) {
  const tbody = $("parameters").tBodies[0];
  const seen = new Set();
  const refresh = config.parameters_hash !== page.paramsHash;
  for (const p of descriptions) {
    seen.add(p.name);
    let entry = page.paramRows.get(p.name);
    if (!entry || entry.dtype !== p.dtype) {
      if (entry) entry.row.remove();
      const input = inputFor(p);
      const button = el("button", { type: "button", class: "set" }, "set");
      const row = el("tr", { id: "param-" + p.name }, el("td", { class: "name" }, p.name),
        el("td", { class: "dtype" }, p.dtype), el("td", { class: "desc" }),
        el("td", { class: "value" }), el("td", {}, input), el("td", {}, button),
        el("td", { class: "message msgcol" }));
      row.dataset.key = p.name;
      tbody.append(row);
      entry = { row, dtype: p.dtype, input };
      page.paramRows.set(p.name, entry);
      button.addEventListener("click", () => setParameter(p.name));
      input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") setParameter(p.name); });
      entry.fresh = true;
    }
    const desc = p.description || "";
    const def = p.dtype === "binary" ? "" : ` (default ${JSON.stringify(p.default)})`;
    entry.row.cells[2].textContent = desc + def;
    if (refresh || entry.fresh) {
      entry.fresh = false;
      const bytes = await readValue(p.name);
      entry.row.cells[3].textContent = showValue(p.dtype, bytes);
      entry.row.cells[3].dataset.raw = bytes === null ? "" : showValue("str", bytes);
    }
  }
  for (const [name, entry] of page.paramRows) {
    if (!seen.has(name)) { entry.row.remove(); page.paramRows.delete(name); }
  }
  page.paramsHash = config.parameters_hash;
  $("parameters-empty").hidden = seen.size > 0;
  $("parameters").hidden = seen.size === 0;
  renderApplied(config);
}

// Which components already run with the controller's current parameters.
function renderApplied(config) {
  const want = config.parameters_hash;
  if (!want) { setText("params-applied", ""); return; }
  const workers = config.workers.filter((w) => w.parameters_hash === want).length;
  const reducer = config.reducer ? (config.reducer.parameters_hash === want ? "yes" : "not yet") : "none";
  setText("params-applied", `in use by ${workers} of ${config.workers.length} workers; ` +
    `reducer: ${reducer}; hash ${want.slice(0, 12)}`);
}

async function setParameter(name) {
  const entry = page.paramRows.get(name);
  const msg = entry.row.querySelector(".message");
  let body;
  if (entry.dtype === "binary") {
    const file = entry.input.files[0];
    if (!file) { msg.textContent = "choose a file first"; msg.className = "message msgcol bad-text"; return; }
    body = await file.arrayBuffer();
  } else {
    body = entry.input.value;
  }
  msg.textContent = "setting…";
  msg.className = "message msgcol muted";
  try {
    const resp = await api("api/v1/parameter/" + encodeURIComponent(name),
                           { method: "POST", body, interactive: true });
    const hash = await resp.json();
    msg.textContent = "set; hash " + String(hash).slice(0, 12);
    msg.className = "message msgcol ok-text";
    entry.fresh = true;
    page.paramsHash = null;  // read every value again
    slowPoll();
  } catch (e) {
    msg.textContent = "refused: " + e.message;
    msg.className = "message msgcol bad-text";
  }
}

// === the reducer's data ===

function reducerUrl(config) {
  const asked = new URLSearchParams(location.search).get("reducer");
  if (asked) localStorage.setItem(REDUCER_KEY, asked);
  const saved = localStorage.getItem(REDUCER_KEY);
  if (saved) return [saved, "set on this page"];
  const r = config && config.reducer;
  if (r && r.http_url) return [r.http_url, "published by the reducer"];
  // a guess: the reducer's host (from its result socket's URL) and `local`'s HTTP port
  let host = location.hostname;
  if (r && r.url) {
    const m = /^tcp:\/\/([^:/]+)/.exec(r.url);
    if (m && !["*", "0.0.0.0", "127.0.0.1", "localhost"].includes(m[1])) host = m[1];
  }
  return [`${location.protocol}//${host}:${REDUCER_GUESS_PORT}/`, "guessed: use edit to correct it"];
}

function renderReducerLink(config) {
  const [url, how] = reducerUrl(config);
  const link = $("reducer-link");
  if (link.getAttribute("href") !== url) link.setAttribute("href", url);
  link.title = `the reducer's publish over HDF5-REST (h5pyd, silx): ${url} (${how})`;
}

$("reducer-edit").addEventListener("click", () => {
  const current = $("reducer-link").getAttribute("href");
  const url = window.prompt("HTTP address of the reducer (empty: guess it)", current);
  if (url === null) return;
  if (url.trim()) localStorage.setItem(REDUCER_KEY, url.trim());
  else localStorage.removeItem(REDUCER_KEY);
  renderReducerLink(page.config);
});

// === polling ===

function connection(error) {
  const node = $("connection");
  if (!error) {
    node.className = "muted";
    node.textContent = "updated " + new Date().toLocaleTimeString("en-GB");
    return;
  }
  node.className = "bad-text";
  node.textContent = error.message + " ";
  if (error.status === 401 || error.status === 403) {
    const again = el("button", { type: "button", class: "link", id: "token-again" }, "enter a token");
    again.addEventListener("click", () => { page.tokenDeclined = false; askToken(error.message).catch(() => {}); });
    node.append(again);
  }
}

async function fastPoll() {
  try {
    const [progress, status, load] = await Promise.all([
      getJSON("api/v1/progress"), getJSON("api/v1/status"), getJSON("api/v1/load?intervals=10")]);
    const t = performance.now();
    renderProgress(progress, status, load, t);
    renderStreams(status, t);
    renderLosses(status);
    renderWorkers(status, t);
    connection(null);
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    connection(e);
  }
  setTimeout(fastPoll, FAST_MS);
}

async function slowPoll() {
  if (page.slowBusy) { page.slowAgain = true; return; }
  page.slowBusy = true;
  try {
    const config = await getJSON("api/v1/config");
    page.config = config;
    renderReducerLink(config);
    renderErrors(config);
    await renderParameters(await getJSON("api/v1/parameters"), config);
    renderLogs(await getJSON("api/v1/logs?level=ERROR"));
  } catch (e) {
    connection(e);
  } finally {
    page.slowBusy = false;
  }
  if (page.slowAgain) {
    page.slowAgain = false;
    await slowPoll();
  }
}

function slowLoop() {
  slowPoll().finally(() => setTimeout(slowLoop, SLOW_MS));
}

renderReducerLink(null);
slowLoop();
fastPoll();
