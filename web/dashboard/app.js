// The engine's dashboard: a client of the public API (/api/... and /ws), like any other.
// No framework and no build step; every text from the server goes in through textContent.

const TERMINAL = new Set(["confirmed", "failed", "cancelled", "expired", "completed"]);
const CANCELLABLE = new Set(["pending", "waiting", "routing", "scheduled"]);
const SCHEDULE_FIELDS = {twap: ["durationSeconds", "slices"], dca: ["intervalSeconds", "count"]};  // orders over time
const DEXES = ["raydium", "meteora"];
const KEY_STORE = "engineApiKey";
const MAX_ROWS = 100;
const MAX_KEPT = 500;
const CHART_POINTS = 90;

const state = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  tokens: [],
  orders: new Map(),      // orderId -> order (as the API shows it, kept up to date by events)
  events: new Map(),      // orderId -> Map(seq -> event)
  loading: new Set(),     // orders being fetched
  reload: new Set(),      // orders to fetch again once their fetch in flight is done
  selected: null,
  socket: null,
  retryMs: 1000,
  series: {pair: "", points: []},
  quote: null,
  quoteStream: {wanted: 0, pending: [], id: null},  // the form's quote subscription on the socket

  deliveries: new Map(),  // orderId -> its webhook deliveries (read with the order, when it has a callbackUrl)
};

const $ = (id) => document.getElementById(id);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const svg = (tag, attrs = {}) => {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  return el;
};

// ---- the API ---------------------------------------------------------------------------

class ApiProblem extends Error {
  constructor(status, error, retryAfter) {
    super(error.message || "request failed");
    this.status = status;
    this.code = error.code || "error";
    this.field = error.field || null;
    this.retryAfter = retryAfter;
    this.error = error;  // the whole error object: a halt's reason, a risk limit's figures
  }
}

async function api(method, path, body) {
  const headers = {};
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (err) {
    throw new ApiProblem(0, {code: "network", message: "cannot reach the engine"});
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) {
    const error = (data && data.error) || {code: "http_" + response.status, message: response.statusText};
    throw new ApiProblem(response.status, error, response.headers.get("Retry-After"));
  }
  return data;
}

const sentence = (text) => text ? text.charAt(0).toUpperCase() + text.slice(1).replace(/([^.])$/, "$1.") : "";

const RISK_LIMITS = {maxOrderUsd: "largest order", maxOpenOrders: "orders open at once",
                     maxNotional24hUsd: "value traded in 24 hours"};

// An API error as a person wants to read it: what happened and what to do, never raw JSON.
function describe(problem) {
  if (!(problem instanceof ApiProblem)) return "Something went wrong in the page: " + problem;
  switch (problem.status === 0 ? "network" : problem.code) {
    case "network": return "Cannot reach the engine. Is it running? (engine run)";
    case "unauthorized": return "This engine needs an API key: enter yours at the top right.";
    case "rate_limited":
      return `Too many orders for this key. Try again in ${problem.retryAfter || "a few"} seconds.`;
    case "queue_full": return "The engine is busy (too many orders waiting). Try again in a moment.";
    case "overloaded":
      return `The engine is overloaded: orders wait too long to start. Try again in ${problem.retryAfter || "a few"} seconds.`;
    case "trading_halted":
      return "Trading is halted by an operator" + (problem.error.reason ? `: ${problem.error.reason.replace(/\.$/, "")}.` : ".")
        + " New orders are refused until it resumes; orders already placed wait and go on then.";
    case "risk_limit":
      return `Over this key's risk limit (${RISK_LIMITS[problem.error.limit] || problem.error.limit}): ${sentence(problem.message)}`;
    case "forbidden": return "This key may not do that: " + sentence(problem.message);
    case "not_ready": return "The engine cannot reach its database or bus right now. Try again in a moment.";
    case "internal_error": return "The engine hit an unexpected error. Its log has the details.";
    case "unsupported_order_type": return sentence(problem.message) + " Only the types this engine runs can be submitted.";
    default: return sentence(problem.message);
  }
}

function showNotice(text, kind = "error") {
  const notice = $("notice");
  notice.textContent = text;
  notice.dataset.kind = kind;
  notice.hidden = false;
  clearTimeout(showNotice.timer);
  showNotice.timer = setTimeout(() => { notice.hidden = true; }, 8000);
}

// ---- formatting -------------------------------------------------------------------------

const short = (id) => id ? id.slice(0, 8) : "";

function number(text, digits = 6) {
  const value = Number(text);
  if (!Number.isFinite(value)) return text ?? "";
  return value.toLocaleString("en-US", {maximumSignificantDigits: digits});
}

function clock(ts) {
  const d = new Date(ts);
  return d.toLocaleTimeString("en-GB", {hour12: false}) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function age(ts) {
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

function executedPrice(order) {
  if (order.executedPrice) return order.executedPrice;
  const fills = order.fills || [];
  const amountIn = fills.reduce((sum, f) => sum + Number(f.amountIn), 0);
  const amountOut = fills.reduce((sum, f) => sum + Number(f.amountOut), 0);
  return amountIn > 0 ? String(amountOut / amountIn) : null;
}

function venue(order) {
  if (order.venue) return order.venue;
  if (order.fills && order.fills.length) return order.fills[0].dex;
  return order.route ? routeLegs(order.route)[0].dex : "";
}

// A route is direct (legs) or through an intermediate token (hops, each with its legs).
function routeLegs(route) {
  return route.hops ? route.hops[0].legs : route.legs;
}

// "BONK → raydium → SOL → meteora + raydium → JUP": each hop, its venue(s).
function hopsText(hops) {
  return hops.reduce((text, hop) => `${text} → ${hop.legs.map((l) => l.dex).join(" + ")} → ${hop.tokenOut}`,
                     hops[0].tokenIn);
}

function routeText(route) {
  return route.hops ? hopsText(route.hops) : route.legs.map((l) => l.dex).join(" + ");
}

// ---- orders and their events -------------------------------------------------------------

function eventsOf(orderId) {
  if (!state.events.has(orderId)) state.events.set(orderId, new Map());
  return state.events.get(orderId);
}

function applyEvent(order, event) {
  const meta = event.meta || {};
  if (event.seq >= (order.lastSeq || 0)) {
    order.lastSeq = event.seq;
    order.status = event.status;
    order.updatedAt = event.timestamp;
  }
  if (event.status === "routing" && meta.bestDex) order.venue = meta.bestDex;
  if (meta.dex) order.venue = meta.dex;
  if (event.status === "confirmed") {
    order.executedPrice = meta.executedPrice;
    order.amountOut = meta.amountOut;
  }
  if (event.status === "failed" && meta.error) order.error = meta.error;
}

function storeOrder(order) {
  const known = state.orders.get(order.orderId) || {};
  const merged = {...known, ...order};
  for (const event of eventsOf(order.orderId).values()) applyEvent(merged, event);
  if (order.events) {
    for (const event of order.events) eventsOf(order.orderId).set(event.seq, event);
    for (const event of order.events) applyEvent(merged, event);
  }
  state.orders.set(order.orderId, merged);
  return merged;
}

async function loadOrder(orderId) {
  // A read already in flight may have been answered before the event that asks for this one
  // (a terminal event arriving while the first read of a new order is on its way): read again
  // when it is done, or the order would keep that older state (its fills missing).
  if (state.loading.has(orderId)) { state.reload.add(orderId); return; }
  state.loading.add(orderId);
  try {
    const order = storeOrder(await api("GET", `/api/orders/${orderId}`));
    if (order.callbackUrl) state.deliveries.set(orderId, (await api("GET", `/api/orders/${orderId}/deliveries`)).deliveries);
  } catch (problem) {
    if (problem.status !== 404) showNotice(describe(problem));
  } finally {
    state.loading.delete(orderId);
    if (state.reload.delete(orderId)) loadOrder(orderId); else render();
  }
}

function onEvent(event) {
  eventsOf(event.orderId).set(event.seq, event);
  const order = state.orders.get(event.orderId);
  if (order && order.tokenIn) {
    applyEvent(order, event);
    // The terminal event closes the story: read the order once more for its fills.
    if (TERMINAL.has(event.status) && event.orderId === state.selected) loadOrder(event.orderId);
    // A parent's progress event: read it again for its children and figures.
    else if (event.status === "scheduled" && event.orderId === state.selected) loadOrder(event.orderId);
  } else {
    // A new order: show it now, and read its pair and amount with the next page of the
    // list (one request for many new orders, however busy the engine is).
    const placeholder = order || {orderId: event.orderId, createdAt: event.timestamp};
    applyEvent(placeholder, event);
    state.orders.set(event.orderId, placeholder);
    if (event.orderId === state.selected) loadOrder(event.orderId); else refreshListSoon();
  }
  render();
}

let listTimer = null;
function refreshListSoon() {
  if (listTimer === null) listTimer = setTimeout(() => { listTimer = null; loadOrders(); }, 500);
}

// Keep the newest orders only (the page may stay open for days on a busy engine).
function prune() {
  if (state.orders.size <= MAX_KEPT) return;
  const oldest = [...state.orders.values()].sort((a, b) => (a.createdAt || "").localeCompare(b.createdAt || ""));
  for (const order of oldest.slice(0, state.orders.size - MAX_KEPT)) {
    if (order.orderId === state.selected) continue;
    state.orders.delete(order.orderId);
    state.events.delete(order.orderId);
    state.deliveries.delete(order.orderId);
  }
}

async function loadOrders() {
  try {
    const page = await api("GET", "/api/orders?limit=50");
    for (const order of page.orders.reverse()) storeOrder(order);
  } catch (problem) {
    showNotice(describe(problem));
  }
  render();
}

async function cancelOrder(orderId) {
  try {
    storeOrder(await api("POST", `/api/orders/${orderId}/cancel`));
    showNotice(`Order ${short(orderId)} cancelled.`, "info");
  } catch (problem) {
    showNotice(`Could not cancel order ${short(orderId)}: ${describe(problem)}`);
  }
  render();
}

function select(orderId) {
  state.selected = orderId;
  loadOrder(orderId);
  render();
}

// ---- the live stream: every order of the caller -------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = state.key ? `?token=${encodeURIComponent(state.key)}` : "";
  const socket = new WebSocket(`${scheme}//${location.host}/ws${query}`);
  state.socket = socket;
  setConnection("connecting", "connecting…");
  socket.onopen = () => {
    state.retryMs = 1000;
    setConnection("live", "live");
    loadOrders();  // what happened while we were away
    state.quoteStream = {wanted: state.quoteStream.wanted, pending: [], id: null};
    streamQuote();  // the form's quote, streamed on this connection
  };
  socket.onmessage = (message) => {
    let frame;
    try { frame = JSON.parse(message.data); } catch (err) { return; }
    if (onQuoteFrame(frame)) return;
    if (frame.type === "error") showNotice(describe(new ApiProblem(400, frame.error)));
    else if (frame.seq !== undefined) onEvent(frame);
  };
  socket.onclose = (close) => {
    if (state.socket !== socket) return;  // replaced on purpose (a new key)
    const delay = state.retryMs;
    state.retryMs = Math.min(state.retryMs * 2, 15000);
    const why = close.code === 1001 ? "engine restarting" : "disconnected";
    setConnection("down", `${why}: retrying in ${Math.round(delay / 1000)} s`);
    setTimeout(connect, delay);
  };
}

function setConnection(kind, text) {
  const badge = $("conn");
  badge.dataset.state = kind;
  badge.textContent = text;
}

// ---- rendering ---------------------------------------------------------------------------

let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderOrders();
    renderTimeline();
  });
}

function renderOrders() {
  prune();
  const orders = [...state.orders.values()]
    .sort((a, b) => (b.createdAt || "").localeCompare(a.createdAt || "")).slice(0, MAX_ROWS);
  const rows = orders.map((o) => h("tr", {
    "data-order-id": o.orderId, class: o.orderId === state.selected ? "selected" : null,
    onclick: () => select(o.orderId),
  },
  h("td", {class: "status"}, h("span", {class: `badge st-${o.status}`}, o.status)),
  h("td", {}, o.tokenIn ? `${o.tokenIn} → ${o.tokenOut}` : "…"),
  h("td", {class: "num"}, o.amount ? number(o.amount) : ""),
  h("td", {}, venue(o)),
  h("td", {class: "num"}, executedPrice(o) ? number(executedPrice(o)) : ""),
  h("td", {class: "age", "data-created": o.createdAt || ""}, o.createdAt ? age(o.createdAt) : ""),
  h("td", {}, CANCELLABLE.has(o.status) ? h("button", {
    class: "small", title: "cancel this order (before it is built)",
    onclick: (e) => { e.stopPropagation(); cancelOrder(o.orderId); },
  }, "Cancel") : "")));
  $("orders").tBodies[0].replaceChildren(...rows);
  $("orders-empty").hidden = orders.length > 0;
  $("orders-count").textContent = orders.length ? `(${orders.length})` : "";
}

function quotesTable(quotes, best) {
  return h("table", {class: "mini"},
    h("tr", {}, h("th", {}, "venue"), h("th", {}, "out"), h("th", {}, "fee"), h("th", {}, "impact")),
    DEXES.filter((d) => quotes && quotes[d]).map((d) => {
      const q = quotes[d];
      if (q.error) return h("tr", {}, h("td", {}, d), h("td", {colspan: 3}, sentence(q.error.message)));
      return h("tr", {class: d === best ? "best" : null},
        h("td", {}, d === best ? `${d} ✓` : d), h("td", {class: "num"}, number(q.amountOut, 9)),
        h("td", {class: "num"}, `${number(Number(q.feeRate) * 100, 3)}%`),
        h("td", {class: "num"}, `${q.priceImpactBps} bps`));
    }));
}

// Each hop of a route through an intermediate token: its pair, and each leg's venue and amounts.
function hopsList(hops) {
  return h("ol", {class: "hops"}, hops.map((hop) => h("li", {},
    `${hop.tokenIn} → ${hop.tokenOut}: `,
    hop.legs.map((l) => `${l.dex} ${number(l.amountIn, 9)} → ${number(l.amountOut, 9)}`).join(", "))));
}

function eventDetails(order, event) {
  const m = event.meta || {};
  const out = order.tokenOut || "";
  switch (event.status) {
    case "pending": return "accepted and queued";
    case "waiting":
      if (m.trigger === "halt") return `held: trading is halted${m.reason ? ` (${m.reason})` : ""}; it goes on when trading resumes`;
      if (m.fired) return protectiveFired(m);
      if (m.trigger === "oco") return `armed: sells once the price rises to ${number(m.targetPrice, 9)} or falls to ${number(m.stopPrice, 9)}, whichever comes first`;
      if (m.trigger === "stop") return `armed: sells once the price falls to ${number(m.stopPrice, 9)}${m.limitPrice ? `, then never below ${number(m.limitPrice, 9)}` : ""}`;
      if (m.trigger === "trail") return `trailing ${number(m.highWater, 9)}: sells at ${number(m.stopPrice, 9)} (${m.trailAmount ? `${number(m.trailAmount, 9)}` : `${m.trailPercent}%`} below)`;
      return "armed, waiting for its trigger";
    case "routing": return [
      m.retryReason ? h("div", {class: "retry"}, `retry (attempt ${event.attempt}): ${m.retryReason}`) : null,
      m.bestDex ? h("div", {}, m.hops ? `through ${m.hops[0].tokenOut}: ` : "", `chose ${m.route ? routeText(m.route) : m.bestDex}`,
        m.route ? ` for ${number(m.route.amountOut, 9)} ${out} (min ${number(m.route.minAmountOut, 9)})` : "") : null,
      m.hops ? hopsList(m.hops) : null,
      quotesTable(m.quotes, m.hops ? null : m.bestDex)];
    case "building": return [
      h("div", {}, `minAmountOut ${number(m.minAmountOut, 9)} ${out}`, m.dex ? ` on ${m.dex}` : ""),
      m.wrapSol ? h("div", {class: "muted"}, "wraps SOL") : null,
      m.unwrapSol ? h("div", {class: "muted"}, "unwraps SOL") : null];
    case "submitted": return h("div", {}, "signature ", h("code", {title: m.txHash}, m.txHash || ""));
    case "confirmed": return [
      h("div", {}, `${number(m.amountIn, 9)} ${order.tokenIn || ""} → ${number(m.amountOut, 9)} ${out}`,
        ` on ${m.hops ? hopsText(m.hops) : m.dex} at ${number(m.executedPrice, 9)}`),
      m.hops ? hopsList(m.hops) : null,
      h("div", {}, "tx ", h("code", {title: m.txHash}, m.txHash || ""))];
    case "failed": return h("div", {class: "error-text"},
      m.error ? `${m.error.code}: ${sentence(m.error.message)}` : "failed",
      m.attempts !== undefined ? ` (after ${m.attempts} attempt${m.attempts === 1 ? "" : "s"})` : "");
    case "cancelled": return "cancelled by its owner";
    case "expired": return "not triggered before its expiry";
    case "scheduled": return scheduleDetails(m);
    case "completed": return scheduleDetails(m);
    default: return Object.entries(m).map(([k, v]) => h("div", {}, `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`));
  }
}

function renderTimeline() {
  const order = state.orders.get(state.selected);
  if (!order) {
    $("timeline").replaceChildren();
    $("timeline-summary").replaceChildren();
    return;
  }
  $("timeline-title").textContent = short(order.orderId);
  const facts = [
    ["order", order.orderId], ["status", order.status],
    ["pair", order.tokenIn ? `${order.tokenIn} → ${order.tokenOut}` : "…"],
    ["amount", order.amount], ["type", order.type], ["slippage", order.slippageBps && `${order.slippageBps} bps`],
    ["limit price", order.limitPrice], ...protectiveFacts(order), ["client id", order.clientOrderId],
    ["attempts", order.attempts],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
  const fills = (order.fills || []).map((f) => h("div", {class: "fill"},
    `fill on ${f.hops ? hopsText(f.hops) : f.dex}: ${number(f.amountIn, 9)} → ${number(f.amountOut, 9)} `,
    h("code", {title: f.txHash}, f.txHash), f.hops ? hopsList(f.hops) : null));
  $("timeline-summary").replaceChildren(
    h("dl", {}, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
    ...fills,
    order.error ? h("div", {class: "error-text"}, `${order.error.code}: ${sentence(order.error.message)}`) : "",
    order.callbackUrl ? deliveriesOf(order) : "",
    order.children ? scheduleOf(order) : "",
    order.parentId ? h("div", {class: "muted"}, `slice ${order.sliceIndex} of parent `,
      h("button", {class: "link", onclick: () => select(order.parentId)}, short(order.parentId))) : "",
    CANCELLABLE.has(order.status) ? h("button", {onclick: () => cancelOrder(order.orderId)}, "Cancel order") : "");
  const events = [...eventsOf(order.orderId).values()].sort((a, b) => a.seq - b.seq);
  $("timeline").replaceChildren(...events.map((e) => h("li", {"data-status": e.status, "data-seq": e.seq},
    h("span", {class: "time"}, clock(e.timestamp)),
    h("span", {class: `badge st-${e.status}`}, e.status),
    e.attempt > 1 ? h("span", {class: "muted"}, ` attempt ${e.attempt}`) : "",
    h("div", {class: "details"}, eventDetails(order, e)))));
}

// Orders over time: a parent's schedule, progress and children (each a full order: click to read it).
function scheduleOf(order) {
  const p = order.progress || {};
  const plan = order.type === "twap" ? `${order.slices} slices over ${order.durationSeconds} s`
    : `${order.count} times every ${order.intervalSeconds} s${order.paused ? " (paused)" : ""}`;
  const running = order.type === "dca" && !TERMINAL.has(order.status);
  return h("div", {class: "schedule", id: "schedule"},
    h("div", {}, `${plan}: ${p.settled ?? 0}/${p.slices ?? "?"} settled, filled ${number(p.filled || "0", 9)}, `,
      `remaining ${number(p.remaining || "0", 9)}`, p.averagePrice ? `, average price ${number(p.averagePrice, 9)}` : ""),
    running ? h("button", {class: "small", onclick: () => pauseOrder(order.orderId, !order.paused)},
      order.paused ? "Resume" : "Pause") : "",
    h("ol", {class: "children", start: 0}, order.children.map((c) => h("li", {"data-order-id": c.orderId},
      h("span", {class: `badge st-${c.status}`}, c.status), ` ${number(c.amount, 9)} `,
      h("button", {class: "link", onclick: () => select(c.orderId)}, short(c.orderId))))));
}

function scheduleDetails(m) {
  if (m.phase === "paused" || m.phase === "resumed") return `schedule ${m.phase} by its owner`;
  const p = m.progress;
  if (!p) return m.phase || "";
  return `${m.phase === "scheduled" ? "scheduled: " : ""}${p.settled}/${p.slices} children settled, filled ${number(p.filled, 9)}`
    + (p.averagePrice ? ` at ${number(p.averagePrice, 9)} on average` : "");
}

async function pauseOrder(orderId, pause) {
  try {
    storeOrder(await api("POST", `/api/orders/${orderId}/${pause ? "pause" : "resume"}`));
  } catch (problem) {
    showNotice(`Could not ${pause ? "pause" : "resume"} order ${short(orderId)}: ${describe(problem)}`);
  }
  render();
}

// The webhook deliveries of an order with a callbackUrl: one line each, as last read.
function deliveriesOf(order) {
  const deliveries = state.deliveries.get(order.orderId) || [];
  return h("div", {class: "deliveries", id: "deliveries"},
    h("div", {class: "muted"}, `webhook ${order.callbackUrl} `,
      h("button", {class: "link", onclick: () => loadOrder(order.orderId)}, "refresh")),
    h("ul", {}, deliveries.map((d) => h("li", {"data-status": d.status},
      `#${d.seq} ${d.status}`, d.attempts > 1 ? ` after ${d.attempts} tries` : "",
      d.responseStatus ? ` (${d.responseStatus})` : "",
      d.status !== "delivered" && d.error ? h("span", {class: "muted"}, ` ${d.error}`) : ""))));
}

function tickAges() {
  for (const cell of document.querySelectorAll("#orders td.age")) {
    if (cell.dataset.created) cell.textContent = age(cell.dataset.created);
  }
}

// ---- the order form and its live quote ------------------------------------------------------

function formValues() {
  const value = (name) => $(`f-${name}`).value.trim();
  const body = {tokenIn: value("tokenIn"), tokenOut: value("tokenOut"), amount: value("amount")};
  const type = value("type");
  if (value("slippageBps")) body.slippageBps = Number(value("slippageBps"));
  if (type !== "market") body.type = type;
  if ((type === "limit" || type === "stop_loss") && value("limitPrice")) body.limitPrice = value("limitPrice");
  protectiveValues(type, value, body);
  if (type !== "market" && value("expiresInSeconds")) body.expiresInSeconds = Number(value("expiresInSeconds"));
  if (value("clientOrderId")) body.clientOrderId = value("clientOrderId");
  if (value("callbackUrl")) body.callbackUrl = value("callbackUrl");
  for (const name of SCHEDULE_FIELDS[type] || []) if (value(name)) body[name] = Number(value(name));
  if (type === "twap" && value("jitterSeconds")) body.jitterSeconds = Number(value("jitterSeconds"));
  if (type === "dca" && value("totalAmount")) { body.totalAmount = value("totalAmount"); delete body.count; }
  if (SCHEDULE_FIELDS[type] && value("childLimitPrice")) body.limitPrice = value("childLimitPrice");  // each child's floor
  return body;
}

function showFormError(problem) {
  for (const el of document.querySelectorAll("#order-form .invalid")) el.classList.remove("invalid");
  const box = $("form-error");
  if (!problem) { box.hidden = true; return; }
  box.textContent = describe(problem);
  box.hidden = false;
  const input = problem.field && $(`f-${problem.field.split(".").pop()}`);  // oco: stopLoss.stopPrice
  if (input) input.classList.add("invalid");
}

function quoteRequest() {
  const body = formValues();
  if (!body.amount) return null;
  return {tokenIn: body.tokenIn, tokenOut: body.tokenOut, amount: body.amount, slippageBps: body.slippageBps || 50};
}

// The live quote comes from the socket (`subscribeQuote`: the engine pushes it when it changes);
// while the socket is down, from GET /api/quote.
function streamQuote() {
  const stream = state.quoteStream;
  const socket = state.socket;
  const request = quoteRequest();
  stream.wanted += 1;
  if (!socket || socket.readyState !== WebSocket.OPEN) { refreshQuote(); return; }
  if (stream.id) socket.send(JSON.stringify({action: "unsubscribeQuote", subscriptionId: stream.id}));
  stream.id = null;
  if (!request) { showQuote(null, null); return; }
  stream.pending.push(stream.wanted);  // answered in the order sent
  socket.send(JSON.stringify({action: "subscribeQuote", ...request}));
}

// True when the frame belongs to the quote stream (handled here).
function onQuoteFrame(frame) {
  const stream = state.quoteStream;
  if (frame.type === "quoteSubscribed" || (frame.type === "error" && !frame.subscriptionId && stream.pending.length)) {
    const asked = stream.pending.shift();
    if (asked !== stream.wanted) {  // the form changed since: not wanted any more
      if (frame.subscriptionId) state.socket.send(JSON.stringify({action: "unsubscribeQuote", subscriptionId: frame.subscriptionId}));
    } else if (frame.type === "error") {
      showQuote(null, new ApiProblem(400, frame.error));
    } else {
      stream.id = frame.subscriptionId;
    }
    return true;
  }
  if (frame.type === "quoteUnsubscribed") return true;
  if (frame.subscriptionId === undefined) return false;
  if (frame.subscriptionId !== stream.id) return true;  // an earlier subscription's last frame
  if (frame.type === "quote") showQuote(frame, null);
  else if (frame.type === "error") showQuote(null, new ApiProblem(400, frame.error));
  return true;
}

async function refreshQuote() {
  const request = quoteRequest();
  if (!request) { showQuote(null, null); return; }
  const query = new URLSearchParams({...request, slippageBps: String(request.slippageBps)});
  try {
    showQuote(await api("GET", `/api/quote?${query}`), null);
  } catch (problem) {
    showQuote(null, problem);
  }
}

function showQuote(quote, problem) {
  const panel = $("quote");
  state.quote = quote;
  if (problem) {
    panel.replaceChildren(h("span", {class: "error-text"}, describe(problem)));
    panel.dataset.state = "error";
    return;
  }
  if (!quote) { panel.textContent = "Enter an amount to see a quote."; return; }
  const route = quote.route;
  panel.replaceChildren(
    quotesTable(quote.quotes, route.hops ? null : route.legs[0].dex),
    h("div", {class: "route", id: "quote-route"},
      `Route: ${routeText(route)} → ${number(route.amountOut, 9)} ${quote.tokenOut}`,
      h("span", {class: "muted"}, ` (at least ${number(route.minAmountOut, 9)} after slippage)`)),
    route.hops ? hopsList(route.hops) : null);
  panel.dataset.state = "ok";
  addQuotePoint(quote);
}

let quoteTimer = null;
function quoteSoon() {
  clearTimeout(quoteTimer);
  quoteTimer = setTimeout(streamQuote, 250);
  resetChartIfPairChanged();
}

async function submitOrder(event) {
  event.preventDefault();
  const button = $("submit");
  button.disabled = true;
  showFormError(null);
  try {
    const accepted = await api("POST", "/api/orders/execute", formValues());
    const body = formValues();
    storeOrder({orderId: accepted.orderId, status: accepted.status, tokenIn: body.tokenIn.toUpperCase(),
                tokenOut: body.tokenOut.toUpperCase(), amount: body.amount, createdAt: new Date().toISOString()});
    select(accepted.orderId);
    showNotice(`Order ${short(accepted.orderId)} accepted (${accepted.status}).`, "info");
  } catch (problem) {
    showFormError(problem);
  } finally {
    button.disabled = false;
  }
}

function showTypeFields() {
  const type = $("f-type").value;
  for (const el of document.querySelectorAll("#order-form .for-limit, #order-form .for-sniper, #order-form .for-twap, "
                                            + "#order-form .for-dca, " + PROTECTIVE_FIELDS)) {
    el.hidden = !el.classList.contains(`for-${type}`);
  }
  $("order-form").querySelector(".for-schedule").hidden = !SCHEDULE_FIELDS[type];
}

// ---- tokens and the simulator -----------------------------------------------------------------

async function loadTokens() {
  try {
    state.tokens = (await api("GET", "/api/tokens")).tokens;
  } catch (problem) {
    showNotice(describe(problem));
    return;
  }
  for (const [id, fallback] of [["f-tokenIn", "SOL"], ["f-tokenOut", "USDC"]]) {
    const select = $(id);
    const current = select.value || fallback;
    select.replaceChildren(...state.tokens.map((t) => h("option", {
      value: t.symbol, disabled: !t.tradable, selected: t.symbol === current,
    }, t.tradable ? t.symbol : `${t.symbol} (not launched)`)));
  }
  const launchable = state.tokens.filter((t) => !t.tradable);
  $("l-token").replaceChildren(...launchable.map((t) => h("option", {value: t.symbol}, t.symbol)));
  $("launch").disabled = launchable.length === 0;
  if (!launchable.length) $("launch-result").textContent ||= "Every token is tradable.";
  quoteSoon();
}

async function launchToken(event) {
  event.preventDefault();
  const token = $("l-token").value;
  const inSeconds = Number($("l-inSeconds").value);
  try {
    const launch = await api("POST", "/api/sim/launch", {token, inSeconds});
    $("launch-result").textContent = `${launch.token} launches at ${clock(launch.launchAt)}.`;
    setTimeout(loadTokens, Math.max(0, Date.parse(launch.launchAt) - Date.now()) + 500);
  } catch (problem) {
    $("launch-result").textContent = describe(problem);
  }
}

// ---- the price chart: both venues' pool prices for the form's pair, and the quotes -----------

function chartPair() {
  return [$("f-tokenIn").value || "SOL", $("f-tokenOut").value || "USDC"];
}

function resetChartIfPairChanged() {
  const pair = chartPair().join("/");
  if (state.series.pair !== pair) {
    state.series = {pair, points: []};
    $("chart-pair").textContent = `${chartPair()[1]} per ${chartPair()[0]}`;
    renderChart();
  }
}

async function samplePools() {
  resetChartIfPairChanged();
  const [a, b] = chartPair();
  let pools;
  try { pools = (await api("GET", "/api/sim/pools")).pools; } catch (problem) { return; }
  const point = {t: Date.now()};
  for (const pool of pools) {
    if (pool.tokenA === a && pool.tokenB === b) point[pool.dex] = Number(pool.price);
    else if (pool.tokenA === b && pool.tokenB === a) point[pool.dex] = 1 / Number(pool.price);
  }
  if (DEXES.some((d) => point[d])) pushPoint(point);
}

function addQuotePoint(quote) {
  if (`${quote.tokenIn}/${quote.tokenOut}` !== state.series.pair) return;
  const point = {t: Date.now()};
  for (const d of DEXES) {
    const q = quote.quotes[d];
    if (q && !q.error) point[`${d}Quote`] = Number(q.amountOut) / Number(quote.amountIn);
  }
  pushPoint(point);
}

function pushPoint(point) {
  const points = state.series.points;
  points.push(point);
  while (points.length > CHART_POINTS) points.shift();
  renderChart();
}

function renderChart() {
  const chart = $("chart");
  const W = 360, H = 160, PAD = 8, LEFT = 64;
  const keys = ["raydium", "meteora", "raydiumQuote", "meteoraQuote"];
  const values = state.series.points.flatMap((p) => keys.map((k) => p[k]).filter((v) => v));
  if (values.length < 2) {
    chart.replaceChildren(svg("text", {x: 12, y: 80, class: "muted"}));
    chart.firstChild.textContent = "collecting prices…";
    $("chart-legend").replaceChildren();
    return;
  }
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < hi * 1e-6) { hi *= 1.0005; lo *= 0.9995; }
  const t0 = state.series.points[0].t, t1 = Math.max(state.series.points.at(-1).t, t0 + 1);
  const x = (t) => LEFT + (W - LEFT - PAD) * (t - t0) / (t1 - t0);
  const y = (v) => PAD + (H - 2 * PAD) * (hi - v) / (hi - lo);
  const parts = [
    svg("line", {x1: LEFT, y1: PAD, x2: LEFT, y2: H - PAD, class: "axis"}),
    Object.assign(svg("text", {x: 4, y: PAD + 8, class: "tick"}), {textContent: number(hi, 6)}),
    Object.assign(svg("text", {x: 4, y: H - PAD, class: "tick"}), {textContent: number(lo, 6)}),
  ];
  for (const key of keys) {
    const pts = state.series.points.filter((p) => p[key]).map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`);
    if (pts.length) parts.push(svg("polyline", {points: pts.join(" "), class: `line ${key}`}));
  }
  chart.replaceChildren(...parts);
  const last = (key) => [...state.series.points].reverse().find((p) => p[key])?.[key];
  const [r, m] = [last("raydium"), last("meteora")];
  $("chart-legend").replaceChildren(
    ...DEXES.map((d) => h("span", {class: `key ${d}`}, `${d} ${last(d) ? number(last(d), 7) : "—"}`)),
    r && m ? h("span", {class: "muted"}, `spread ${number(Math.abs(r - m) / Math.min(r, m) * 100, 3)}%`) : "",
    h("span", {class: "muted"}, "dashed: quoted"));
}

// ---- the API key --------------------------------------------------------------------------------

function useKey(key) {
  state.key = key;
  if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
  $("api-key").value = key;
  const old = state.socket;
  state.socket = null;
  if (old) old.close();
  connect();
  loadTokens();
}

// ---- start ------------------------------------------------------------------------------------

function start() {
  $("api-key").value = state.key;
  $("key-form").addEventListener("submit", (e) => { e.preventDefault(); useKey($("api-key").value.trim()); });
  $("key-clear").addEventListener("click", () => useKey(""));
  $("order-form").addEventListener("submit", submitOrder);
  $("order-form").addEventListener("input", quoteSoon);
  $("f-type").addEventListener("change", showTypeFields);
  $("f-flip").addEventListener("click", () => {
    const [a, b] = [$("f-tokenIn").value, $("f-tokenOut").value];
    $("f-tokenIn").value = b;
    $("f-tokenOut").value = a;
    quoteSoon();
  });
  $("launch-form").addEventListener("submit", launchToken);
  showTypeFields();
  renderChart();
  connect();
  loadTokens();
  samplePools();
  setInterval(samplePools, 2000);
  setInterval(() => {  // the socket streams the quote; while it is down, poll
    if (!document.hidden && (!state.socket || state.socket.readyState !== WebSocket.OPEN)) refreshQuote();
  }, 3000);
  setInterval(tickAges, 1000);
}

// ---- protective orders: stop-loss (a stop-limit with a limit price), take-profit, trailing stop, OCO ----

const PROTECTIVE_FIELDS = "#order-form .for-stop_loss, #order-form .for-take_profit, #order-form .for-trailing_stop, #order-form .for-oco";

function protectiveValues(type, value, body) {
  if (type === "stop_loss" && value("stopPrice")) body.stopPrice = value("stopPrice");
  if (type === "take_profit" && value("targetPrice")) body.targetPrice = value("targetPrice");
  if (type === "trailing_stop" && value("trailPercent")) body.trailPercent = value("trailPercent");
  if (type === "trailing_stop" && value("trailAmount")) body.trailAmount = value("trailAmount");  // one of the two: both is a 400
  if (type === "oco") {  // one order, two sides: the first to fire executes, the other is cancelled
    body.takeProfit = {targetPrice: value("targetPrice")};
    body.stopLoss = {stopPrice: value("stopPrice")};
    if (value("limitPrice")) body.stopLoss.limitPrice = value("limitPrice");
  }
}

// The order's protective prices, and the price a trailing stop trails now (its latest event's).
function protectiveFacts(order) {
  const events = [...eventsOf(order.orderId).values()].sort((a, b) => a.seq - b.seq);
  const trail = events.filter((e) => e.meta && e.meta.highWater).pop();
  const fired = events.find((e) => e.status === "waiting" && e.meta && e.meta.fired);
  return [
    ["stop price", order.stopPrice], ["target price", order.targetPrice],
    ["trail", order.trailPercent && `${order.trailPercent}% below the best price`],
    ["trail", order.trailAmount && `${order.trailAmount} below the best price`],
    ["trailing price", trail && `${trail.meta.highWater} (stop ${trail.meta.stopPrice})`],
    ["take profit", order.takeProfit && order.takeProfit.targetPrice],
    ["stop loss", order.stopLoss && (order.stopLoss.stopPrice
      + (order.stopLoss.limitPrice ? `, floor ${order.stopLoss.limitPrice}` : ""))],
    ["fired", fired && protectiveFired(fired.meta)],
  ];
}

function protectiveFired(m) {
  const side = {stopLoss: "stop-loss", takeProfit: "take-profit", trailingStop: "trailing stop"}[m.fired] || m.fired;
  const other = m.cancelled ? `; its ${m.cancelled === "stopLoss" ? "stop-loss" : "take-profit"} is cancelled` : "";
  return `its ${side} fired${m.price ? ` at ${number(m.price, 9)}` : ""}${other}`;
}

start();
