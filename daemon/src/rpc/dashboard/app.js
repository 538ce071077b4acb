// p2pstored's dashboard: reads the node over its JSON-RPC API with the RPC
// token as the Bearer header, and follows `subscribe_events` over a
// WebSocket to stay current. No framework, nothing fetched from elsewhere.
"use strict";

const TOKEN_KEY = "p2pstore-token";
const EVENTS_SHOWN = 50;
const REFRESH_DEBOUNCE_MS = 300;

let token = null;
let rpcId = 0;

const $ = (id) => document.getElementById(id);

function show(id, on) {
  $(id).hidden = !on;
}

function fail(message) {
  $("error").textContent = message;
  show("error", true);
}

// `12,345 sat (0.00012345 BTC)`, as the CLI prints amounts.
function sats(n) {
  const btc = (BigInt(n) / 100000000n).toLocaleString("en-US") + "." +
    String(BigInt(n) % 100000000n).padStart(8, "0");
  return `${Number(n).toLocaleString("en-US")} sat (${btc} BTC)`;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(2)} ${units[i]}`;
}

const short = (id) => (id || "").slice(0, 16);

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// Replaces a table's body with one row per item; `row` gives the cells.
function fill(tableId, items, row, empty) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren();
  for (const item of items) {
    const tr = document.createElement("tr");
    for (const td of row(item)) tr.appendChild(td);
    body.appendChild(tr);
  }
  if (items.length === 0) {
    const tr = document.createElement("tr");
    const td = cell(empty, "muted");
    td.colSpan = $(tableId).querySelectorAll("th").length;
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

function pairs(dlId, entries) {
  const dl = $(dlId);
  dl.replaceChildren();
  for (const [k, v, cls] of entries) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    if (cls) dd.className = cls;
    dl.append(dt, dd);
  }
}

async function rpc(method, params = {}) {
  rpcId += 1;
  const resp = await fetch("/", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify({ jsonrpc: "2.0", id: rpcId, method, params }),
  });
  if (resp.status === 401) {
    // The daemon restarted (a new cookie): this session is over.
    sessionStorage.removeItem(TOKEN_KEY);
    throw new Error("the node no longer accepts this session: run `p2pstore-cli dashboard` again");
  }
  const reply = await resp.json();
  if (reply.error) throw new Error(`${method}: ${reply.error.message}`);
  return reply.result;
}

// Trades the one-time code in the link's fragment for the token; the code
// leaves the address bar at once.
async function login() {
  const code = new URLSearchParams(location.hash.slice(1)).get("login");
  if (code) {
    history.replaceState(null, "", location.pathname);
    const resp = await fetch("/dashboard/login", {
      method: "POST",
      headers: { "X-P2pstore-Login": code },
    });
    if (!resp.ok) throw new Error(await resp.text());
    sessionStorage.setItem(TOKEN_KEY, (await resp.json()).token);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function renderProvider(status, contracts) {
  pairs("space", [
    ["used", bytes(status.stored_bytes)],
    ["free", bytes(status.free_bytes)],
    ["capacity", bytes(status.capacity_bytes)],
  ]);
  pairs("answered", [
    ["challenges proved", String(status.audit_challenges_proved), "good"],
    ["challenges missing", String(status.audit_challenges_missing),
      status.audit_challenges_missing > 0 ? "bad" : ""],
    ["audits refused", String(status.audits_refused)],
  ]);
  const live = contracts.filter((c) => c.next_payment_sat != null);
  const perPeriod = live.reduce((s, c) => s + c.next_payment_sat, 0);
  pairs("earnings", [
    ["received so far", sats(contracts.reduce((s, c) => s + c.paid_sat, 0))],
    ["next period", sats(perPeriod)],
    ["contracts paying", String(live.length)],
  ]);
  fill("provider-contracts", contracts, (c) => [
    cell(short(c.contract_id), "id"),
    cell(short(c.peer_id), "id"),
    cell(c.state),
    cell(bytes(c.stored_bytes), "num"),
    cell(sats(c.paid_sat), "num"),
    cell(c.next_payment_sat != null ? `${sats(c.next_payment_sat)} at ${c.next_payment_height}` : "—"),
  ], "no contracts yet");
}

function renderClient(files, contracts, budget, audits) {
  fill("files", files, (f) => {
    const h = f.health;
    const state = h.good < h.needed ? "lost" : h.good < h.total ? "degraded" : "healthy";
    return [
      cell(f.name),
      cell(bytes(f.size), "num"),
      cell(f.redundancy),
      cell(`${h.good}/${h.total} ${state}`, state === "healthy" ? "good" : "bad"),
      cell(short(f.file_id), "id"),
    ];
  }, "no files yet");
  pairs("spending", [
    ["paid to providers", sats(contracts.reduce((s, c) => s + c.paid_sat, 0))],
    ["contracts", String(contracts.length)],
  ]);
  pairs("budget", [
    [`next ${budget.periods} periods`, sats(budget.total_sat)],
    ["of which fees (estimate)", sats(budget.fees_sat)],
    ["spendable", sats(budget.spendable_sat)],
    ...(budget.warning ? [["warning", budget.warning, "bad"]] : []),
  ]);
  fill("scores", audits, (a) => [
    cell(short(a.peer_id), "id"),
    cell(a.score.toFixed(3), a.eligible ? "num good" : "num bad"),
    cell(a.offline ? "offline" : a.eligible ? "eligible" : "below minimum"),
    cell(String(a.passed), "num"),
    cell(String(a.failed), "num"),
  ], "no providers audited yet");
}

async function refresh() {
  const status = await rpc("status");
  $("node").textContent = `${status.state} · ${status.roles.join(", ")} · ${short(status.peer_id)}` +
    (status.tip_height != null ? ` · ${status.network} height ${status.tip_height}` : "");
  const isClient = status.roles.includes("client");
  const isProvider = status.roles.includes("provider");
  show("client", isClient);
  show("provider", isProvider);
  if (status.state !== "running") return;
  const [balance, contracts] = await Promise.all([rpc("wallet_balance"), rpc("contracts")]);
  pairs("balance", [
    ["confirmed", sats(balance.confirmed_sat)],
    ["unconfirmed", sats(balance.unconfirmed_sat)],
  ]);
  if (isProvider) {
    renderProvider(status, contracts.filter((c) => c.role === "provider"));
  }
  if (isClient) {
    const [files, budget, audits] = await Promise.all([rpc("ls"), rpc("wallet_budget"), rpc("audits")]);
    renderClient(files, contracts.filter((c) => c.role === "client"), budget, audits);
  }
  show("main", true);
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => refresh().catch((e) => fail(e.message)), REFRESH_DEBOUNCE_MS);
}

const transfers = new Map();
function renderTransfers() {
  const ul = $("transfers");
  ul.replaceChildren();
  for (const [key, t] of transfers) {
    const li = document.createElement("li");
    const bar = document.createElement("progress");
    bar.max = t.total_bytes || 1;
    bar.value = t.done_bytes;
    li.append(`${t.transfer} ${short(t.file_id) || "(new file)"} ${t.phase} `, bar,
      ` ${bytes(t.done_bytes)} / ${bytes(t.total_bytes)}`);
    ul.appendChild(li);
  }
  if (transfers.size === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "none running";
    ul.appendChild(li);
  }
}

function describe(e) {
  const fields = Object.entries(e)
    .filter(([k, v]) => k !== "type" && k !== "time_ms" && v !== null)
    .map(([k, v]) => `${k}=${k.endsWith("_sat") ? sats(v) : k.endsWith("_id") || k === "txid" ? short(v) : v}`);
  return `${new Date(e.time_ms).toLocaleTimeString()} ${e.type} ${fields.join(" ")}`;
}

function onEvent(e) {
  if (e.type === "progress") {
    const key = e.transfer_id;
    if (e.finished) transfers.delete(key);
    else transfers.set(key, e);
    renderTransfers();
    if (!e.finished) return;
  }
  const li = document.createElement("li");
  li.textContent = describe(e);
  const list = $("events");
  list.prepend(li);
  while (list.children.length > EVENTS_SHOWN) list.lastChild.remove();
  refreshSoon();
}

// subscribe_events over this port's WebSocket; the token rides as a
// subprotocol (no headers on a browser WebSocket). Reconnects after a drop.
function follow() {
  const ws = new WebSocket(`ws://${location.host}/`, ["p2pstore", `bearer.${token}`]);
  ws.onopen = () => {
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "subscribe_events", params: [] }));
  };
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id === 1 && msg.result) {
      $("live").textContent = "live";
      $("live").className = "badge on";
      // Anything that happened while we were away.
      refreshSoon();
    } else if (msg.method === "event") {
      onEvent(msg.params.result);
    }
  };
  ws.onclose = () => {
    $("live").textContent = "offline";
    $("live").className = "badge off";
    setTimeout(follow, 3000);
  };
}

async function start() {
  try {
    token = await login();
  } catch (e) {
    fail(e.message);
  }
  if (!token) {
    show("login", true);
    return;
  }
  try {
    await refresh();
  } catch (e) {
    fail(e.message);
    return;
  }
  follow();
}

start();
