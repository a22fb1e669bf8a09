// Quantum Trader dashboard: renders the view the server streams (Server-Sent Events, /api/stream) and
// sends the kill switch and flatten-all, with the token the operator entered, after a confirmation.
// No library and no other origin: the charts are SVG drawn here. Every value from the server goes into
// the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "qt-dashboard-token";
const STALE_MS = 6000;
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  view: null,
  controlsConfigured: false,
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  tokenOk: false,
  lastEventAt: 0,
  pending: null, // the action awaiting confirmation
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function num(value, places = 2) {
  if (value === null || value === undefined || value === "") return "–";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return n.toLocaleString("en-US", { minimumFractionDigits: places, maximumFractionDigits: places });
}

function qty(value) {
  if (value === null || value === undefined || value === "") return "–";
  const n = Number(value);
  return Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: 8 }) : String(value);
}

function signClass(value) {
  const n = Number(value);
  if (value === null || value === undefined || value === "" || !Number.isFinite(n) || n === 0) return null;
  return n > 0 ? "pos" : "neg";
}

function utc(ms, withDate = true) {
  const n = Number(ms);
  if (!ms || !Number.isFinite(n)) return "–";
  const iso = new Date(n).toISOString();
  return withDate ? iso.slice(0, 16).replace("T", " ") : iso.slice(11, 19);
}

function link(href, text) {
  return href ? el("a", { href, target: "_blank", rel: "noopener noreferrer" }, text) : text;
}

function fillTable(id, rows, columns, emptyText) {
  const body = $(id).tBodies[0];
  const trs = rows.slice();
  if (trs.length === 0) {
    trs.push(el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText)));
  }
  body.replaceChildren(...trs);
}

function td(content, cls) {
  return el("td", cls ? { class: cls } : null, content);
}

// ------------------------------------------------------------------------------------------ rendering
function renderErrors(v) {
  const problems = [];
  if (v.error) problems.push(`The view could not be built: ${v.error}`);
  if (v.portfolio_error) problems.push(`Portfolio: ${v.portfolio_error}`);
  if (v.redis_error) problems.push(`Redis: ${v.redis_error}`);
  if (v.journal && v.journal.error) problems.push(`Journal: ${v.journal.error}`);
  const box = $("errors");
  box.replaceChildren(...problems.map((p) => el("div", null, p)));
  box.hidden = problems.length === 0;
}

function renderSummary(v) {
  const p = v.portfolio;
  $("slots").textContent = p ? `${p.slots_used} / ${p.max_open_positions}` : "–";
  $("notional").textContent = p ? `${num(p.notional_used)} / ${num(p.max_total_notional)}` : "–";
  const emergency = $("emergency");
  emergency.textContent = p ? p.emergency : "–";
  emergency.className = `value ${p ? "state-" + p.emergency : ""}`;
  const kill = $("kill-state");
  kill.textContent = p ? (p.kill_switch ? "ON" : "off") : "–";
  kill.className = `value ${p && p.kill_switch ? "kill-on" : ""}`;
  $("decided").textContent = p ? `${p.granted_total} / ${p.denied_total}` : "–";

  const positions = (v.positions || []).filter((x) => !x.error);
  const unreal = positions.reduce((sum, x) => sum + (Number(x.unrealized_pnl) || 0), 0);
  setSigned($("unrealized"), positions.length ? unreal : 0);

  const j = v.journal || {};
  const f = j.figures;
  if (f) {
    setSigned($("realized"), f.realized_pnl);
    $("equity").textContent = num(f.equity);
    $("drawdown").textContent = `${num(f.drawdown_pct)} % / ${num(f.max_drawdown_pct)} %`;
  } else {
    setSigned($("realized"), v.realized_pnl);
    $("equity").textContent = "–";
    $("drawdown").textContent = "–";
  }
}

function setSigned(node, value) {
  node.textContent = num(value);
  node.className = `value ${signClass(value) || ""}`;
}

function renderPositions(v) {
  const positions = v.positions || [];
  $("positions-count").textContent = `(${positions.length})`;
  const rows = positions.map((x) => {
    if (x.error) {
      return el(
        "tr",
        { "data-workflow-id": x.workflow_id },
        td(link(x.link, x.workflow_id)),
        el("td", { colspan: 11, class: "neg wrap" }, `state query failed: ${x.error}`),
      );
    }
    return el(
      "tr",
      { "data-workflow-id": x.workflow_id, "data-status": x.status },
      td(link(x.link, x.workflow_id)),
      td(x.symbol),
      td(x.side, x.side === "LONG" ? "pos" : "neg"),
      td(x.status),
      td(qty(x.open_qty), "num"),
      td(num(x.entry_price), "num"),
      td(num(x.mark_price), "num mark"),
      td(num(x.unrealized_pnl), `num upnl ${signClass(x.unrealized_pnl) || ""}`),
      td(num(x.stop_loss_price), "num"),
      td(num(x.take_profit_price), "num"),
      td(num(x.hard_stop_price), "num"),
      td(x.next_trigger || "–", "wrap"),
    );
  });
  fillTable("positions", rows, 12, "No open positions.");
}

function renderTrades(v) {
  const j = v.journal || {};
  const trades = j.trades || [];
  $("trades-count").textContent = j.count === undefined ? "" : `(${j.count} in the journal, run ${j.run_id})`;
  const rows = trades.map((t) =>
    el(
      "tr",
      { "data-trade-id": t.trade_id },
      td(utc(t.closed_at_ms)),
      td(link(t.link, t.trade_id)),
      td(t.symbol),
      td(t.side, t.side === "LONG" ? "pos" : "neg"),
      td(qty(t.quantity), "num"),
      td(num(t.entry_price), "num"),
      td(num(t.exit_price), "num"),
      td(num(t.realized_pnl), `num ${signClass(t.realized_pnl) || ""}`),
      td(num(t.fees), "num"),
      td(t.exit_reason),
    ),
  );
  fillTable("trades", rows, 10, "No closed trades in the journal yet.");
}

function renderDecisions(v) {
  const list = ((v.portfolio && v.portfolio.last_decisions) || []).slice().reverse();
  const rows = list.map((d) =>
    el(
      "tr",
      { "data-holder-id": d.holder_id },
      td(link(d.link, d.holder_id)),
      td(d.decision, d.decision === "denied" ? "neg" : "pos"),
      td(d.gate || "–"),
      el(
        "td",
        { class: "wrap" },
        d.decision === "denied"
          ? d.reason
          : `${num(d.notional_usdt)} USDT${d.reduced_from ? ` (asked ${num(d.reduced_from)})` : ""}`,
      ),
    ),
  );
  fillTable("decisions", rows, 4, "No decisions yet.");

  const models = v.decisions || [];
  const mrows = models.map((d) =>
    el(
      "tr",
      null,
      td(utc(d.bar_open_ms)),
      td(d.symbol || "?"),
      td(d.side || "?"),
      td(num(d.confidence, 3), "num"),
      td(d.action || "?"),
      el("td", { class: "wrap" }, d.reason || ""),
    ),
  );
  fillTable("model-decisions", mrows, 6, "No model decisions yet.");
}

function renderReconcile(v) {
  const rows = (v.reconcile || []).map((e) =>
    el(
      "tr",
      null,
      td(utc(e.timestamp)),
      td(e.kind),
      td(e.symbol),
      td(e.field),
      el("td", { class: "wrap" }, e.detail),
      td(e.workflow_id ? link(e.link, e.workflow_id) : "–"),
    ),
  );
  fillTable("reconcile", rows, 6, "No differences found by reconcile.");
}

// ------------------------------------------------------------------------------------------ charts
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// points: [{t, y}] in time order; draws a line with its area down to `base` (the lowest value, or 0).
function drawChart(target, points, opts) {
  const W = 600, H = 220, L = 64, R = 10, T = 12, B = 24;
  const nodes = [];
  if (points.length === 0) {
    nodes.push(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, opts.empty));
    target.replaceChildren(...nodes);
    return;
  }
  let ymin = Math.min(...points.map((p) => p.y));
  let ymax = Math.max(...points.map((p) => p.y));
  if (opts.zero) {
    ymin = Math.min(ymin, 0);
    ymax = Math.max(ymax, 0);
  }
  if (ymax === ymin) {
    const pad = Math.abs(ymax) * 0.01 || 1;
    ymin -= pad;
    ymax += pad;
  }
  const t0 = points[0].t, t1 = points[points.length - 1].t;
  const x = (t) => L + (t1 === t0 ? (W - L - R) / 2 : ((t - t0) / (t1 - t0)) * (W - L - R));
  const y = (v) => T + (1 - (v - ymin) / (ymax - ymin)) * (H - T - B);
  for (const v of [ymin, (ymin + ymax) / 2, ymax]) {
    nodes.push(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e7ec" }));
    nodes.push(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, num(v, opts.places)));
  }
  nodes.push(svg("text", { x: L, y: H - 6 }, utc(t0)));
  if (t1 !== t0) nodes.push(svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, utc(t1)));
  const line = points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.y).toFixed(1)}`).join(" ");
  const base = y(opts.zero ? 0 : ymin);
  const area = `${line} L${x(t1).toFixed(1)},${base.toFixed(1)} L${x(t0).toFixed(1)},${base.toFixed(1)} Z`;
  nodes.push(svg("path", { d: area, fill: opts.fill, stroke: "none" }));
  nodes.push(svg("path", { d: line, fill: "none", stroke: opts.color, "stroke-width": 2, class: "series" }));
  for (const p of points.length <= 60 ? points : []) {
    nodes.push(svg("circle", { cx: x(p.t), cy: y(p.y), r: 2.5, fill: opts.color }));
  }
  target.replaceChildren(...nodes);
}

function renderCharts(v) {
  const curve = (v.journal && v.journal.curve) || [];
  drawChart(
    $("equity-chart"),
    curve.map((p) => ({ t: p.time_ms, y: Number(p.equity) })),
    { color: "#0b5cad", fill: "rgba(11,92,173,.10)", places: 2, empty: "No closed trades yet: no equity curve." },
  );
  drawChart(
    $("drawdown-chart"),
    curve.map((p) => ({ t: p.time_ms, y: -Number(p.drawdown_pct) })),
    { color: "#c62828", fill: "rgba(198,40,40,.12)", places: 2, zero: true, empty: "No closed trades yet: no drawdown." },
  );
}

function render(v) {
  state.view = v;
  state.controlsConfigured = Boolean(v.controls);
  $("mode").textContent = v.mode ? `${v.mode} mode` : "?";
  $("updated").textContent = utc(v.time_ms, false);
  if (v.ui) $("ui-link").href = v.ui;
  renderErrors(v);
  renderSummary(v);
  renderPositions(v);
  renderCharts(v);
  renderTrades(v);
  renderDecisions(v);
  renderReconcile(v);
  renderControls();
}

// ------------------------------------------------------------------------------------------ controls
function renderControls() {
  const note = $("controls-note");
  const enabled = state.controlsConfigured && state.tokenOk;
  $("token-row").hidden = !state.controlsConfigured;
  $("token-forget").hidden = !state.tokenOk;
  $("token-submit").hidden = state.tokenOk;
  $("token").disabled = state.tokenOk;
  if (!state.controlsConfigured) {
    note.textContent =
      "Read-only: the dashboard's server has no DASHBOARD_TOKEN, so the kill switch and flatten-all are disabled here " +
      "(use `qtrader portfolio kill-switch` / `flatten`).";
  } else if (!state.tokenOk) {
    note.textContent = "Enter the dashboard token to enable the kill switch and flatten-all.";
  } else {
    note.textContent = "Controls enabled for this tab. Each action asks for confirmation.";
  }
  const p = state.view && state.view.portfolio;
  const toggle = $("kill-switch-toggle");
  const on = Boolean(p && p.kill_switch);
  toggle.textContent = on ? "Turn kill switch off" : "Turn kill switch ON";
  toggle.dataset.target = on ? "off" : "on";
  toggle.disabled = !enabled;
  $("flatten-all").disabled = !enabled;
}

function showResult(text, ok) {
  const node = $("control-result");
  node.textContent = text;
  node.className = ok ? "ok" : "fail";
}

async function checkToken(token) {
  const res = await fetch("/api/auth", { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  return res.status === 204;
}

async function unlock() {
  const token = $("token").value.trim();
  if (!token) {
    showResult("Enter the token first.", false);
    return;
  }
  try {
    state.tokenOk = await checkToken(token);
  } catch (err) {
    showResult(`Could not check the token: ${err}`, false);
    return;
  }
  if (state.tokenOk) {
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    showResult("Token accepted: controls enabled.", true);
  } else {
    forget();
    showResult("Token refused by the server: controls stay disabled.", false);
  }
  renderControls();
}

function forget() {
  state.token = "";
  state.tokenOk = false;
  sessionStorage.removeItem(TOKEN_KEY);
  renderControls();
}

const ACTIONS = {
  "kill-on": {
    title: "Turn the kill switch ON?",
    text: "New entries are denied at once by the portfolio; open positions keep their exits.",
    path: "/api/kill-switch",
    body: (reason) => ({ on: true, reason }),
    done: () => "Kill switch is ON: new entries are denied.",
  },
  "kill-off": {
    title: "Turn the kill switch off?",
    text: "New entries are allowed again (within the portfolio's other limits).",
    path: "/api/kill-switch",
    body: (reason) => ({ on: false, reason }),
    done: () => "Kill switch is off: entries allowed.",
  },
  flatten: {
    title: "Flatten ALL positions?",
    text:
      "Every open position is closed at market and the portfolio is HALTED: no new entry until it is set " +
      "back to NORMAL (`qtrader portfolio emergency NORMAL`).",
    path: "/api/flatten",
    body: (reason) => ({ reason }),
    done: (r) => `Portfolio HALTED; told ${r.holders.length} position(s) to close.`,
  },
};

function ask(actionKey) {
  const action = ACTIONS[actionKey];
  state.pending = actionKey;
  $("confirm-title").textContent = action.title;
  $("confirm-text").textContent = action.text;
  $("confirm-ok").textContent = actionKey === "flatten" ? "Flatten all" : "Confirm";
  $("confirm").showModal();
  $("confirm-reason").focus();
}

async function confirmed() {
  const key = state.pending;
  state.pending = null;
  $("confirm").close();
  if (!key) return;
  const action = ACTIONS[key];
  const reason = $("confirm-reason").value.trim() || "dashboard";
  showResult("Sending…", true);
  let res, body;
  try {
    res = await fetch(action.path, {
      method: "POST",
      headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
      body: JSON.stringify(action.body(reason)),
      cache: "no-store",
    });
    body = await res.json().catch(() => ({}));
  } catch (err) {
    showResult(`Not sent: ${err}`, false);
    return;
  }
  if (res.ok) {
    showResult(action.done(body), true);
  } else if (res.status === 401) {
    forget();
    showResult(`Refused (401): ${body.error || "token not accepted"}. Enter the token again.`, false);
  } else {
    showResult(`Refused (${res.status}): ${body.error || res.statusText}`, false);
  }
}

// ------------------------------------------------------------------------------------------ live stream
function setConnection(text, cls) {
  const node = $("connection");
  node.textContent = text;
  node.className = `badge ${cls}`;
}

function connect() {
  const source = new EventSource("/api/stream");
  source.addEventListener("open", () => setConnection("live", "conn-live"));
  source.addEventListener("error", () => setConnection("reconnecting…", "conn-down"));
  source.addEventListener("snapshot", (event) => {
    state.lastEventAt = Date.now();
    setConnection("live", "conn-live");
    render(JSON.parse(event.data));
  });
  setInterval(() => {
    if (state.lastEventAt && Date.now() - state.lastEventAt > STALE_MS) setConnection("stale", "conn-wait");
  }, 1000);
}

async function start() {
  $("token-row").addEventListener("submit", (e) => {
    e.preventDefault(); // checked by script; the form is never sent anywhere
    unlock();
  });
  $("token-forget").addEventListener("click", () => {
    forget();
    showResult("Controls locked.", true);
  });
  $("kill-switch-toggle").addEventListener("click", (e) => ask(`kill-${e.currentTarget.dataset.target}`));
  $("flatten-all").addEventListener("click", () => ask("flatten"));
  $("confirm-ok").addEventListener("click", confirmed);
  $("confirm-cancel").addEventListener("click", () => {
    state.pending = null;
    $("confirm").close();
    showResult("Cancelled: nothing was sent.", true);
  });
  renderControls();
  if (state.token) {
    try {
      state.tokenOk = await checkToken(state.token);
    } catch (err) {
      state.tokenOk = false;
    }
    if (!state.tokenOk) forget();
    renderControls();
  }
  connect();
}

start();
