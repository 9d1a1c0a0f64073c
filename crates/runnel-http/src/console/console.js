// The Runnel console: every view is rendered from the JSON API under /api/v1.
// Everything a client sent (names, keys, values, headers) is put on the page with
// textContent, never as HTML.
"use strict";

const REFRESH_MS = 2000;
const RATE_POINTS = 150; // five minutes at one sample per two seconds

// ---- small DOM helpers ------------------------------------------------------------

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function table(id, headings, rows) {
  // A heading takes its column's classes: numbers to the right, and the columns a
  // phone leaves out (see the style sheet) go with their heading.
  const first = rows[0] ? Array.from(rows[0].children) : [];
  const cls = (i) => (first[i] && first[i].className ? first[i].className : null);
  return el("table", { id },
    el("thead", {}, el("tr", {}, headings.map((h, i) => el("th", { class: cls(i) }, h)))),
    el("tbody", {}, rows));
}

function td(cls, ...children) {
  return el("td", { class: cls }, ...children);
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

function time(ms) {
  return ms >= 0 ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "";
}

const enc = encodeURIComponent;

// ---- the API ------------------------------------------------------------------------

async function api(path, options) {
  const res = await fetch("/api/v1" + path, {
    headers: { "Content-Type": "application/json" },
    ...options,
  });
  if (res.status === 204) return null;
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    throw new Error(body.error ? `${body.error} (${body.code})` : `HTTP ${res.status}`);
  }
  return body;
}

// ---- routing --------------------------------------------------------------------------

const main = () => document.querySelector("main");
const view = () => document.getElementById("view");
let refreshTimer = null;
let renderSerial = 0;

function setState(state, message) {
  main().dataset.state = state;
  const err = document.getElementById("error");
  err.hidden = state !== "error";
  err.textContent = message || "";
}

/** The route from the hash: [name, ...parts], and the query after `?`. */
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter((p) => p !== "").map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query || "") };
}

async function render() {
  clearTimeout(refreshTimer);
  stopTail();
  const serial = ++renderSerial;
  const { parts, query } = route();
  const [page, name, sub] = parts;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === (page || "overview"));
  }
  setState("loading");
  try {
    let node;
    let refresh = null;
    if (!page) {
      node = await overviewView();
      refresh = updateOverview;
    } else if (page === "topology") {
      node = await topologyView(query);
      refresh = updateTopology;
    } else if (page === "topics" && !name) {
      node = await topicsView();
      refresh = updateTopics;
    } else if (page === "topics" && sub === "messages") {
      node = await messagesView(name, query);
    } else if (page === "topics") {
      node = await topicView(name);
    } else if (page === "services") {
      node = await servicesView();
      refresh = updateServices;
    } else if (page === "groups" && !name) {
      node = await groupsView();
    } else if (page === "groups") {
      node = await groupView(name);
      refresh = updateGroup;
    } else {
      throw new Error("no such page");
    }
    if (serial !== renderSerial) return;
    view().replaceChildren(node);
    setState("ready");
    if (refresh) schedule(serial, refresh);
  } catch (e) {
    if (serial !== renderSerial) return;
    view().replaceChildren();
    setState("error", e.message);
  }
}

function schedule(serial, refresh) {
  refreshTimer = setTimeout(async () => {
    if (serial !== renderSerial) return;
    try {
      await refresh();
    } catch (e) {
      // A failed refresh keeps what is shown; the next one tries again.
    }
    schedule(serial, refresh);
  }, REFRESH_MS);
}

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

// ---- overview -------------------------------------------------------------------------

// Rates are differences of the broker's totals between polls, kept while the page is
// open: the last five minutes.
const rates = { last: null, points: [] };

function sample(o) {
  const now = Date.now();
  if (rates.last) {
    const dt = (now - rates.last.at) / 1000;
    if (dt > 0) {
      rates.points.push({
        at: now,
        bytesIn: Math.max(0, (o.bytes_in - rates.last.o.bytes_in) / dt),
        bytesOut: Math.max(0, (o.bytes_out - rates.last.o.bytes_out) / dt),
        recordsIn: Math.max(0, (o.records_in - rates.last.o.records_in) / dt),
        recordsOut: Math.max(0, (o.records_out - rates.last.o.records_out) / dt),
      });
      if (rates.points.length > RATE_POINTS) rates.points.shift();
    }
  }
  rates.last = { at: now, o };
}

function stat(id, label, value) {
  return el("div", { class: "stat" }, el("span", { class: "label" }, label),
    el("span", { id, class: "value" }, value));
}

async function overviewView() {
  const o = await api("/overview");
  sample(o);
  const svg = svgEl("svg", { id: "rates", viewBox: "0 0 600 160", preserveAspectRatio: "none", role: "img" });
  const node = el("section", { id: "overview" },
    el("h1", {}, "Overview"),
    el("div", { class: "stats" },
      stat("version", "Version", o.version),
      stat("uptime", "Uptime", duration(o.uptime_ms)),
      stat("connections", "Connections", o.connections),
      stat("topic-count", "Topics", o.topics),
      stat("partition-count", "Partitions", o.partitions),
      stat("group-count", "Groups", o.groups),
      stat("disk", "On disk", bytes(o.disk_bytes))),
    el("p", { class: "muted" }, "Data directory: ", el("code", { id: "data-dir" }, o.data_dir)),
    el("h2", {}, "Throughput"),
    el("div", { class: "legend" },
      el("span", { class: "in" }, "records in/s ", el("b", { id: "records-in-rate" }, "…")),
      el("span", { class: "out" }, "records out/s ", el("b", { id: "records-out-rate" }, "…")),
      el("span", {}, "bytes in/s ", el("b", { id: "bytes-in-rate" }, "…")),
      el("span", {}, "bytes out/s ", el("b", { id: "bytes-out-rate" }, "…"))),
    svg);
  drawRates(svg, node);
  return node;
}

async function updateOverview() {
  const o = await api("/overview");
  sample(o);
  const set = (id, v) => {
    const e = document.getElementById(id);
    if (e) e.textContent = v;
  };
  set("uptime", duration(o.uptime_ms));
  set("connections", o.connections);
  set("topic-count", o.topics);
  set("partition-count", o.partitions);
  set("group-count", o.groups);
  set("disk", bytes(o.disk_bytes));
  const svg = document.getElementById("rates");
  if (svg) drawRates(svg, document);
}

function drawRates(svg, root) {
  const pts = rates.points;
  const last = pts[pts.length - 1];
  const set = (id, v) => {
    const e = root.querySelector("#" + id);
    if (e) e.textContent = v;
  };
  if (last) {
    set("records-in-rate", Math.round(last.recordsIn));
    set("records-out-rate", Math.round(last.recordsOut));
    set("bytes-in-rate", bytes(Math.round(last.bytesIn)));
    set("bytes-out-rate", bytes(Math.round(last.bytesOut)));
  }
  const max = Math.max(1, ...pts.map((p) => Math.max(p.recordsIn, p.recordsOut)));
  const line = (key) => pts.map((p, i) =>
    `${(i / (RATE_POINTS - 1)) * 600},${150 - (p[key] / max) * 140}`).join(" ");
  svg.replaceChildren(
    svgEl("line", { x1: 0, y1: 150, x2: 600, y2: 150, class: "axis" }),
    svgEl("polyline", { points: line("recordsIn"), class: "in" }),
    svgEl("polyline", { points: line("recordsOut"), class: "out" }));
}

// ---- topology ---------------------------------------------------------------------------

// The essays' figures from live data: producers (by client id) -> topics -> consumer
// groups (and readers outside any group). Edge rates are differences of the broker's
// running totals between polls; an edge quiet for IDLE_MS fades.
const IDLE_MS = 30000;
const ROW = 44;
// `clientGroup` remembers which group a client id was last seen in, so a member's reads
// stay drawn to its group after it left.
const topo = { last: null, rates: new Map(), clientGroup: new Map(), idleMs: IDLE_MS };

function groupsOfClients(t) {
  for (const g of t.groups) for (const c of g.clients) topo.clientGroup.set(c, g.group);
  const groups = new Set(t.groups.map((g) => g.group));
  const map = new Map();
  for (const [c, g] of topo.clientGroup) if (groups.has(g)) map.set(c, g);
  return map;
}

function topoRates(t) {
  const now = Date.now();
  const totals = new Map();
  const add = (key, bytes, records) => {
    const v = totals.get(key) || { bytes: 0, records: 0 };
    totals.set(key, { bytes: v.bytes + bytes, records: v.records + records });
  };
  for (const p of t.producers) add(`p|${p.client_id}|${p.topic}`, p.bytes, p.records);
  const groupOf = groupsOfClients(t);
  for (const f of t.fetchers) {
    const g = groupOf.get(f.client_id);
    add(g !== undefined ? `g|${g}|${f.topic}` : `c|${f.client_id}|${f.topic}`, f.bytes, f.records);
  }
  if (topo.last) {
    const dt = (now - topo.last.at) / 1000;
    for (const [key, v] of totals) {
      const before = topo.last.totals.get(key);
      if (before && dt > 0) topo.rates.set(key, Math.max(0, (v.records - before.records) / dt));
    }
  }
  topo.last = { at: now, totals };
}

function drawTopology(data) {
  let t = data;
  topoRates(t);
  const groupOf = groupsOfClients(t);
  const producers = [...new Set(t.producers.map((p) => p.client_id))].sort();
  const loose = [...new Set(t.fetchers.filter((f) => !groupOf.has(f.client_id)).map((f) => f.client_id))].sort();
  const consumers = [...t.groups.map((g) => ({ id: `g|${g.group}`, label: g.group, sub: `${g.members} member${g.members === 1 ? "" : "s"}, ${g.state}` })),
    ...loose.map((c) => ({ id: `c|${c}`, label: c, sub: "reader, no group" }))];
  // Topics nobody wrote to or read recently (dead-letter topics, mostly) stay off the
  // picture; the topics page lists them all.
  const linked = new Set([...t.producers.map((p) => p.topic), ...t.fetchers.map((f) => f.topic),
    ...t.groups.flatMap((g) => g.topics.map((x) => x.topic))]);
  const quiet = t.topics.filter((name) => !linked.has(name)).length;
  t = { ...t, topics: t.topics.filter((name) => linked.has(name)), quiet };
  const rows = Math.max(producers.length, t.topics.length, consumers.length, 1);
  const height = rows * ROW + 40;
  const x = [150, 450, 750];
  const y = (i, n) => 30 + (i + 0.5) * ((rows * ROW) / n);
  const pos = new Map();
  producers.forEach((p, i) => pos.set(`p|${p}`, { x: x[0], y: y(i, producers.length) }));
  t.topics.forEach((name, i) => pos.set(`t|${name}`, { x: x[1], y: y(i, t.topics.length) }));
  consumers.forEach((c, i) => pos.set(c.id, { x: x[2], y: y(i, consumers.length) }));

  const svg = svgEl("svg", { id: "topology", viewBox: `0 0 900 ${height}`, role: "img" });
  const edges = svgEl("g", { class: "edges" });
  const nodes = svgEl("g", { class: "nodes" });
  svg.append(edges, nodes);
  const edge = (from, to, key, last) => {
    const a = pos.get(from);
    const b = pos.get(to);
    if (!a || !b) return;
    const idle = t.now_ms - last > topo.idleMs;
    const rate = topo.rates.get(key);
    const x1 = a.x + 90;
    const x2 = b.x - 90;
    const mid = (x1 + x2) / 2;
    const width = 1.5 + Math.min(6, Math.log10(1 + (rate || 0)) * 1.5);
    const g = svgEl("g", { class: idle ? "edge idle" : "edge", "data-edge": `${from}->${to}` });
    g.append(svgEl("path", { d: `M${x1},${a.y} C${mid},${a.y} ${mid},${b.y} ${x2},${b.y}`, "stroke-width": width }));
    const label = svgEl("text", { x: mid, y: (a.y + b.y) / 2 - 4, class: "rate" });
    // A rate needs two polls; until then the edge shows only that it is there.
    label.textContent = idle ? "idle" : rate === undefined ? "" : `${Math.round(rate)}/s`;
    g.append(label);
    edges.append(g);
  };
  for (const p of t.producers) edge(`p|${p.client_id}`, `t|${p.topic}`, `p|${p.client_id}|${p.topic}`, p.last_ms);
  const lastRead = new Map();
  for (const f of t.fetchers) {
    const g = groupOf.get(f.client_id);
    const id = g !== undefined ? `g|${g}` : `c|${f.client_id}`;
    const key = `${id}|${f.topic}`;
    lastRead.set(key, Math.max(lastRead.get(key) || 0, f.last_ms));
  }
  for (const g of t.groups) {
    for (const gt of g.topics) {
      const key = `g|${g.group}|${gt.topic}`;
      edge(`t|${gt.topic}`, `g|${g.group}`, key, lastRead.get(key) || 0);
    }
  }
  for (const f of t.fetchers) {
    if (!groupOf.has(f.client_id)) edge(`t|${f.topic}`, `c|${f.client_id}`, `c|${f.client_id}|${f.topic}`, f.last_ms);
  }
  const node = (id, label, sub, kind, href) => {
    const p = pos.get(id);
    const g = svgEl("g", { class: `node ${kind}`, "data-node": id });
    g.append(svgEl("rect", { x: p.x - 90, y: p.y - 16, width: 180, height: 32, rx: 6 }));
    const text = svgEl("text", { x: p.x, y: sub ? p.y - 2 : p.y + 5, class: "label" });
    // Client ids often share a long prefix: the end tells them apart.
    text.textContent = label.length > 20 ? "…" + label.slice(-19) : label;
    g.append(text);
    if (sub) {
      const s2 = svgEl("text", { x: p.x, y: p.y + 11, class: "sub" });
      s2.textContent = sub;
      g.append(s2);
    }
    const title = svgEl("title", {});
    title.textContent = label;
    g.append(title);
    if (href) {
      const a = svgEl("a", { href });
      a.append(g);
      nodes.append(a);
    } else {
      nodes.append(g);
    }
  };
  producers.forEach((p) => node(`p|${p}`, p, "producer", "producer"));
  t.topics.forEach((name) => node(`t|${name}`, name, null, "topic", `#/topics/${enc(name)}`));
  for (const g of t.groups) {
    const lag = g.topics.reduce((s, x) => s + (x.lag || 0), 0);
    node(`g|${g.group}`, g.group, `${g.members} member${g.members === 1 ? "" : "s"}, lag ${lag}`, lag > 0 ? "group lagging" : "group", `#/groups/${enc(g.group)}`);
  }
  loose.forEach((c) => node(`c|${c}`, c, "reader, no group", "reader"));
  return svg;
}

async function topologyView(query) {
  // `#/topology?idle=<seconds>`: how soon a quiet edge fades.
  const idle = Number(query.get("idle"));
  topo.idleMs = idle > 0 ? idle * 1000 : IDLE_MS;
  const t = await api("/topology");
  return el("section", {},
    el("h1", {}, "Topology"),
    el("p", { class: "muted" }, `Producers (by client id) write to topics; consumer groups read them. Edges show records per second and fade after ${topo.idleMs / 1000} s without traffic. Topics without recent traffic are left out.`),
    el("div", { id: "topology-box" }, drawTopology(t)));
}

async function updateTopology() {
  const t = await api("/topology");
  const box = document.getElementById("topology-box");
  if (box) box.replaceChildren(drawTopology(t));
}

// ---- topics ---------------------------------------------------------------------------

// Records in and out per second per topic: differences of the running totals between
// polls of the topics page.
const topicTotals = new Map();

function topicRates(t) {
  const now = Date.now();
  const before = topicTotals.get(t.name);
  topicTotals.set(t.name, { at: now, in: t.records_in, out: t.records_out });
  if (!before || now <= before.at) return { in: "", out: "" };
  const dt = (now - before.at) / 1000;
  return {
    in: Math.round(Math.max(0, t.records_in - before.in) / dt),
    out: Math.round(Math.max(0, t.records_out - before.out) / dt),
  };
}

function topicRows(topics) {
  return topics.map((t) => {
    const rate = topicRates(t);
    return el("tr", { dataset: { topic: t.name } },
      td("name", el("a", { href: `#/topics/${enc(t.name)}` }, t.name),
        t.internal ? el("span", { class: "tag" }, "internal") : null),
      td("partitions num", t.partitions),
      td("end num", t.end_offsets),
      td("size num", bytes(t.size_bytes)),
      td("rate-in num", rate.in),
      td("rate-out num", rate.out));
  });
}

async function updateTopics() {
  const body = document.querySelector("#topics tbody");
  if (!body) return;
  const { topics } = await api("/topics");
  body.replaceChildren(...topicRows(topics));
}

async function topicsView() {
  const { topics } = await api("/topics");
  const rows = topicRows(topics);
  const form = el("form", { id: "create-topic", class: "inline", onsubmit: createTopic },
    el("label", {}, "Name ", el("input", { name: "name", required: true, maxlength: 249, pattern: "[a-zA-Z0-9._\\-]+", autocomplete: "off" })),
    el("label", {}, "Partitions ", el("input", { name: "partitions", type: "number", min: 1, max: 10000, value: 1 })),
    el("button", { type: "submit" }, "Create topic"));
  return el("section", {},
    el("h1", {}, "Topics"),
    form,
    rows.length ? table("topics", ["Topic", "Partitions", "Records", "Size", "In/s", "Out/s"], rows)
      : el("p", { class: "muted", id: "topics" }, "No topics yet."));
}

async function createTopic(event) {
  event.preventDefault();
  const f = event.target;
  const name = f.elements.name.value.trim();
  const partitions = Number(f.elements.partitions.value) || 1;
  try {
    await api("/topics", { method: "POST", body: JSON.stringify({ name, partitions }) });
    go("#/topics");
  } catch (e) {
    setState("error", e.message);
  }
}

async function topicView(name) {
  const t = await api("/topics/" + enc(name));
  const rows = t.partitions.map((p) => el("tr", { dataset: { partition: p.partition } },
    td("num", p.partition), td("start num", p.log_start_offset), td("end num", p.high_watermark),
    td("records num", p.high_watermark - p.log_start_offset), td("size num", bytes(p.size_bytes))));
  const change = async (body) => {
    try {
      await api(`/topics/${enc(name)}/config`, { method: "POST", body: JSON.stringify(body) });
      go(`#/topics/${enc(name)}`);
    } catch (e) {
      setState("error", e.message);
    }
  };
  const config = Object.entries(t.config).map(([k, v]) => el("tr", { class: v.overridden ? "overridden" : "", dataset: { setting: k } },
    td("key", k), td("value", v.value),
    td("origin", v.overridden ? "set on this topic" : "default",
      v.overridden && !t.internal ? el("button", { class: "reset-setting", onclick: () => change({ remove: [k] }) }, "Reset") : null)));
  const settingForm = t.internal ? null : el("form", { id: "config-form", class: "inline", onsubmit: (e) => {
    e.preventDefault();
    const f = e.target.elements;
    change({ set: { [f.key.value]: f.value.value } });
  } },
  el("label", {}, "Setting ", el("select", { name: "key" }, Object.keys(t.config).map((k) => el("option", { value: k }, k)))),
  el("label", {}, "Value ", el("input", { name: "value", required: true, autocomplete: "off" })),
  el("button", { type: "submit" }, "Set"));
  const confirm = el("button", { id: "confirm-delete", class: "danger", hidden: true, onclick: () => deleteTopic(name) },
    `Really delete ${name} and all its records`);
  return el("section", {},
    el("p", { class: "crumbs" }, el("a", { href: "#/topics" }, "Topics"), " / "),
    el("h1", {}, t.name),
    el("p", {}, el("a", { class: "button", href: `#/topics/${enc(name)}/messages` }, "Browse messages")),
    el("h2", {}, "Partitions"),
    table("partitions", ["Partition", "Start offset", "End offset", "Records", "Size"], rows),
    el("h2", {}, "Settings"),
    table("config", ["Setting", "Value", ""], config),
    settingForm,
    t.internal ? null : el("p", { class: "actions" },
      el("button", { id: "delete-topic", class: "danger", onclick: () => { confirm.hidden = false; } }, "Delete topic"),
      " ", confirm));
}

async function deleteTopic(name) {
  try {
    await api("/topics/" + enc(name), { method: "DELETE" });
    go("#/topics");
  } catch (e) {
    setState("error", e.message);
  }
}

// ---- messages -------------------------------------------------------------------------

const PAGE_RECORDS = 50;

/** A value shown as it is: JSON pretty-printed, text as text, binary as hex. */
function shown(text, hex) {
  if (text === null || text === undefined) return el("span", { class: "null" }, "null");
  if (hex) return el("code", { class: "hex", title: "not UTF-8: shown as hex" }, hex);
  const trimmed = text.trim();
  if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
    try {
      return el("pre", { class: "json" }, JSON.stringify(JSON.parse(trimmed), null, 2));
    } catch (e) {
      // not JSON after all: text
    }
  }
  return el("span", { class: "text" }, text);
}

async function messagesView(name, query) {
  const t = await api("/topics/" + enc(name));
  const partition = query.get("partition") || "all";
  const start = query.get("start") || "oldest";
  const offset = query.get("offset") || "";
  const partitions = partition === "all" ? t.partitions.map((p) => p.partition) : [Number(partition)];
  const params = (p) => {
    const q = new URLSearchParams({ limit: String(PAGE_RECORDS) });
    if (start === "offset" && offset !== "") q.set("offset", offset);
    else if (start === "timestamp" && offset !== "") q.set("timestamp", String(Date.parse(offset) || Number(offset) || 0));
    else if (start === "newest") q.set("from", "newest");
    return `/topics/${enc(name)}/partitions/${p}/records?${q}`;
  };
  const pages = await Promise.all(partitions.map((p) => api(params(p)).then((r) => ({ p, r }))));
  const records = pages.flatMap(({ p, r }) => r.records.map((rec) => ({ ...rec, partition: p })));
  records.sort((a, b) => a.timestamp - b.timestamp || a.partition - b.partition || a.offset - b.offset);
  const rows = records.map((r) => el("tr", { class: "record", dataset: { offset: r.offset, partition: r.partition } },
    td("partition num", r.partition), td("offset num", r.offset), td("timestamp", time(r.timestamp)),
    td("key", shown(r.key, r.key_hex)), td("value", shown(r.value, r.value_hex)),
    td("headers", r.headers.map((h) => el("div", { class: "header" },
      el("span", { class: "hkey" }, h.key), "=", shown(h.value, h.value_hex))))));

  const select = (id, options, current) => el("select", { id },
    options.map(([v, label]) => el("option", { value: v, selected: v === current }, label)));
  const partitionSelect = select("partition",
    [["all", "all partitions"], ...t.partitions.map((p) => [String(p.partition), `partition ${p.partition}`])], partition);
  const startSelect = select("start",
    [["oldest", "oldest"], ["newest", "newest"], ["offset", "at offset"], ["timestamp", "at time"]], start);
  const offsetInput = el("input", { id: "offset", value: offset, placeholder: "offset or time", size: 24 });
  const load = () => {
    const q = new URLSearchParams({ partition: partitionSelect.value, start: startSelect.value });
    if (offsetInput.value) q.set("offset", offsetInput.value);
    go(`#/topics/${enc(name)}/messages?${q}`);
  };
  const search = el("input", {
    id: "search", type: "search", placeholder: "filter this page", oninput: (e) => {
      const needle = e.target.value.toLowerCase();
      for (const row of document.querySelectorAll("#messages tr.record")) {
        row.hidden = needle !== "" && !row.textContent.toLowerCase().includes(needle);
      }
    },
  });
  const next = pages.length === 1 && pages[0].r.next_offset < pages[0].r.high_watermark
    ? el("a", { id: "next-page", class: "button", href: `#/topics/${enc(name)}/messages?partition=${pages[0].p}&start=offset&offset=${pages[0].r.next_offset}` }, "Next page")
    : null;
  return el("section", {},
    el("p", { class: "crumbs" }, el("a", { href: "#/topics" }, "Topics"), " / ",
      el("a", { href: `#/topics/${enc(name)}` }, name), " / "),
    el("h1", {}, "Messages"),
    el("div", { class: "controls" }, partitionSelect, startSelect, offsetInput,
      el("button", { id: "load", onclick: load }, "Load"), search,
      el("button", { id: "follow", onclick: (e) => follow(e.target, name, partition) }, "Follow live")),
    rows.length ? table("messages", ["Partition", "Offset", "Time", "Key", "Value", "Headers"], rows)
      : el("p", { id: "messages", class: "muted" }, "No records here."),
    next,
    el("h2", {}, "Produce a record"),
    el("form", { id: "produce", onsubmit: (e) => produce(e, name) },
      el("label", {}, "Key ", el("input", { name: "key", autocomplete: "off" })),
      el("label", {}, "Value ", el("textarea", { name: "value", rows: 3 })),
      el("label", {}, "Headers (one name=value per line) ", el("textarea", { name: "headers", rows: 2 })),
      el("button", { type: "submit" }, "Produce")));
}

// The live tail: new records over server-sent events, newest first, at most TAIL_ROWS.
const TAIL_ROWS = 500;
let tail = null;

function stopTail() {
  if (tail) tail.close();
  tail = null;
}

function follow(button, name, partition) {
  if (tail) {
    stopTail();
    button.textContent = "Follow live";
    return;
  }
  const q = new URLSearchParams({ from: "latest" });
  if (partition !== "all") q.set("partition", partition);
  tail = new EventSource(`/api/v1/topics/${enc(name)}/tail?${q}`);
  button.textContent = "Stop following";
  tail.addEventListener("record", (e) => {
    const r = JSON.parse(e.data);
    let body = document.querySelector("#messages tbody");
    if (!body) {
      const t = table("messages", ["Partition", "Offset", "Time", "Key", "Value", "Headers"], []);
      document.getElementById("messages").replaceWith(t);
      body = t.querySelector("tbody");
    }
    body.prepend(el("tr", { class: "record live", dataset: { offset: r.offset, partition: r.partition } },
      td("partition num", r.partition), td("offset num", r.offset), td("timestamp", time(r.timestamp)),
      td("key", shown(r.key, null)), td("value", shown(r.value, null)), td("headers")));
    while (body.children.length > TAIL_ROWS) body.lastChild.remove();
  });
}

async function produce(event, name) {
  event.preventDefault();
  const f = event.target.elements;
  const headers = {};
  for (const line of f.headers.value.split("\n")) {
    const at = line.indexOf("=");
    if (at > 0) headers[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  const record = { value: f.value.value, headers };
  if (f.key.value !== "") record.key = f.key.value;
  try {
    await api(`/topics/${enc(name)}/records`, { method: "POST", body: JSON.stringify({ records: [record] }) });
    go(`#/topics/${enc(name)}/messages?start=newest`);
  } catch (e) {
    setState("error", e.message);
  }
}

// ---- services ---------------------------------------------------------------------------

// Services built with the toolkit state their status on runnel.services; their dead
// letters wait in <service>.dlq, each replayable to the topic it came from.
const DEAD_LETTERS_SHOWN = 20;

function serviceTables(services) {
  if (!services.length) {
    return el("p", { id: "services", class: "muted" },
      "No services have stated their status yet (services built with runnel-services do, on runnel.services).");
  }
  return el("div", { id: "services" }, services.map((sv) => el("section", { class: "service", dataset: { service: sv.service } },
    el("h2", {}, sv.service, " ", el("span", { class: "tag" }, `${sv.up} of ${sv.instances.length} up`)),
    table(null, ["Instance", "State", "Handled", "Failed", "Retried", "Parked", "Dead-lettered", "Last seen"],
      sv.instances.map((i) => el("tr", { class: "instance", dataset: { instance: i.instance } },
        td("instance", i.instance),
        td("state", i.up ? (i.ready ? "ready" : "starting") : (i.stopped ? "stopped" : "silent")),
        td("handled num", i.handled), td("failed num", i.failed), td("retried num", i.retried),
        td("parked num", i.parked), td("dead-lettered num", i.dead_lettered),
        td("seen", time(i.at_ms))))),
    el("p", {}, "Dead letters: ", el("b", { class: "dead-letters" }, sv.dead_letters), " in ",
      el("a", { href: `#/topics/${enc(sv.dead_letter_topic)}/messages` }, sv.dead_letter_topic),
      sv.dead_letters > 0 ? el("button", { class: "show-dead", onclick: (e) => showDeadLetters(e.target, sv) }, "Show and replay") : null),
    el("div", { class: "dead-list" }))));
}

async function showDeadLetters(button, sv) {
  const box = button.closest(".service").querySelector(".dead-list");
  const t = await api("/topics/" + enc(sv.dead_letter_topic));
  const pages = await Promise.all(t.partitions.map((p) =>
    api(`/topics/${enc(sv.dead_letter_topic)}/partitions/${p.partition}/records?from=newest&limit=${DEAD_LETTERS_SHOWN}`)
      .then((r) => r.records.map((rec) => ({ ...rec, partition: p.partition })))));
  const header = (r, k) => (r.headers.find((h) => h.key === k) || {}).value || "";
  const rows = pages.flat().sort((a, b) => b.timestamp - a.timestamp).map((r) => {
    const cell = td("replay");
    const replay = el("button", { class: "replay", onclick: async () => {
      try {
        const done = await api(`/services/${enc(sv.service)}/dead-letters/replay`, {
          method: "POST", body: JSON.stringify({ partition: r.partition, offset: r.offset }),
        });
        cell.replaceChildren(el("span", { class: "replayed" }, `replayed to ${done.topic} @ ${done.offset}`));
      } catch (e) {
        setState("error", e.message);
      }
    } }, "Replay");
    cell.append(replay);
    return el("tr", { class: "dead-letter", dataset: { partition: r.partition, offset: r.offset } },
      td("num", r.offset), td("timestamp", time(r.timestamp)), td("source", header(r, "runnel_dlq_topic")),
      td("error", header(r, "runnel_dlq_error")), td("value", shown(r.value, r.value_hex)), cell);
  });
  box.replaceChildren(table(null, ["Offset", "Time", "From", "Error", "Value", ""], rows));
}

async function servicesView() {
  const { services } = await api("/services");
  return el("section", {},
    el("h1", {}, "Services"),
    el("div", { id: "services-live" }, serviceTables(services)));
}

async function updateServices() {
  const live = document.getElementById("services-live");
  // Keep an open dead-letter list: refresh only while none is shown.
  if (!live || live.querySelector(".dead-list table")) return;
  const { services } = await api("/services");
  live.replaceChildren(serviceTables(services));
}

// ---- groups ---------------------------------------------------------------------------

async function groupsView() {
  const { groups } = await api("/groups");
  const rows = groups.map((g) => el("tr", { dataset: { group: g.group } },
    td("name", el("a", { href: `#/groups/${enc(g.group)}` }, g.group)),
    td("state", g.state), td("members num", g.members), td("", g.protocol_type)));
  return el("section", {},
    el("h1", {}, "Consumer groups"),
    rows.length ? table("groups", ["Group", "State", "Members", "Protocol type"], rows)
      : el("p", { id: "groups", class: "muted" }, "No groups yet."));
}

// Total lag per group over the polls of this page: the lag chart.
const lagHistory = new Map();

function recordLag(id, total) {
  const h = lagHistory.get(id) || [];
  h.push({ at: Date.now(), lag: total });
  if (h.length > RATE_POINTS) h.shift();
  lagHistory.set(id, h);
  return h;
}

function drawLag(svg, h) {
  const max = Math.max(1, ...h.map((p) => p.lag));
  const pts = h.map((p, i) => `${(i / (RATE_POINTS - 1)) * 600},${110 - (p.lag / max) * 100}`).join(" ");
  const top = svgEl("text", { x: 4, y: 12, class: "axis-label" });
  top.textContent = String(max);
  svg.replaceChildren(svgEl("line", { x1: 0, y1: 110, x2: 600, y2: 110, class: "axis" }),
    svgEl("polyline", { points: pts, class: "out" }), top);
}

function groupTables(g) {
  const members = g.members.map((m) => el("tr", { class: "member" },
    td("client-id", m.client_id), td("host", m.client_host),
    td("assignment", m.assignment.map((a) => `${a.topic}-${a.partition}`).join(", ")),
    td("member-id muted", m.member_id)));
  const lag = g.offsets.map((o) => el("tr", { dataset: { partition: `${o.topic}-${o.partition}` }, class: o.lag > 0 ? "lagging" : "" },
    td("topic", el("a", { href: `#/topics/${enc(o.topic)}` }, o.topic)), td("num", o.partition),
    td("committed num", o.committed), td("end num", o.end === null ? "" : o.end),
    td("lag num", o.lag === null ? "" : o.lag)));
  return el("div", { id: "group-tables" },
    el("p", {}, "State ", el("b", { id: "group-state" }, g.state), ", generation ", g.generation,
      g.protocol ? `, assignor ${g.protocol}` : "", ", total lag ",
      el("b", { id: "total-lag" }, g.offsets.reduce((s2, o) => s2 + (o.lag || 0), 0))),
    el("h2", {}, "Members"),
    members.length ? table("members", ["Client id", "Host", "Partitions", "Member id"], members)
      : el("p", { id: "members", class: "muted" }, "No members: the group is empty."),
    el("h2", {}, "Committed offsets and lag"),
    lag.length ? table("lag", ["Topic", "Partition", "Committed", "End", "Lag"], lag)
      : el("p", { id: "lag", class: "muted" }, "Nothing committed yet."));
}

async function groupView(id) {
  const g = await api("/groups/" + enc(id));
  const chart = svgEl("svg", { id: "lag-chart", viewBox: "0 0 600 120", preserveAspectRatio: "none", role: "img" });
  drawLag(chart, recordLag(id, g.offsets.reduce((s2, o) => s2 + (o.lag || 0), 0)));
  const { topics } = await api("/topics");
  const committedTopics = [...new Set(g.offsets.map((o) => o.topic))];
  const choices = [...committedTopics, ...topics.map((t) => t.name).filter((n) => !committedTopics.includes(n))];
  const plan = el("div", { id: "reset-plan" });
  const topicSel = el("select", { id: "reset-topic" }, choices.map((n) => el("option", { value: n }, n)));
  const toSel = el("select", { id: "reset-to" },
    [["earliest", "earliest"], ["latest", "latest"], ["offset", "offset"], ["timestamp", "time (ms or ISO)"]].map(([v, l]) => el("option", { value: v }, l)));
  const valueIn = el("input", { id: "reset-value", placeholder: "offset or time", size: 22 });
  const execute = el("button", { id: "reset-execute", class: "danger", disabled: true }, "Reset offsets");
  const body = (dryRun) => {
    const b = { topic: topicSel.value, to: toSel.value, dry_run: dryRun };
    if (toSel.value === "offset") b.value = Number(valueIn.value);
    if (toSel.value === "timestamp") b.value = Number(valueIn.value) || Date.parse(valueIn.value);
    return JSON.stringify(b);
  };
  const preview = async () => {
    try {
      const r = await api(`/groups/${enc(id)}/offsets`, { method: "POST", body: body(true) });
      plan.replaceChildren(table("reset-rows", ["Topic", "Partition", "Committed now", "Would be"],
        r.offsets.map((o) => el("tr", { dataset: { partition: `${o.topic}-${o.partition}` } },
          td("", o.topic), td("num", o.partition), td("from num", o.from === null ? "" : o.from), td("to num", o.to)))));
      execute.disabled = false;
    } catch (e) {
      setState("error", e.message);
    }
  };
  for (const c of [topicSel, toSel, valueIn]) c.addEventListener("change", () => { execute.disabled = true; });
  execute.addEventListener("click", async () => {
    try {
      await api(`/groups/${enc(id)}/offsets`, { method: "POST", body: body(false) });
      go(`#/groups/${enc(id)}`);
    } catch (e) {
      setState("error", e.message);
    }
  });
  const confirm = el("button", { id: "confirm-delete-group", class: "danger", hidden: true, onclick: async () => {
    try {
      await api("/groups/" + enc(id), { method: "DELETE" });
      go("#/groups");
    } catch (e) {
      setState("error", e.message);
    }
  } }, `Really delete group ${id} and its committed offsets`);
  return el("section", {},
    el("p", { class: "crumbs" }, el("a", { href: "#/groups" }, "Groups"), " / "),
    el("h1", {}, g.group),
    el("div", { id: "group-live" }, groupTables(g)),
    el("h2", {}, "Total lag over time"), chart,
    el("h2", {}, "Reset offsets"),
    el("p", { class: "muted" }, "Preview first; the reset needs the group to have no members."),
    el("div", { class: "controls" }, topicSel, toSel, valueIn,
      el("button", { id: "reset-preview", onclick: preview }, "Preview"), execute),
    plan,
    g.members.length === 0 ? el("p", { class: "actions" },
      el("button", { id: "delete-group", class: "danger", onclick: () => { confirm.hidden = false; } }, "Delete group"),
      " ", confirm) : null);
}

async function updateGroup() {
  const { parts } = route();
  const id = parts[1];
  const g = await api("/groups/" + enc(id));
  const live = document.getElementById("group-live");
  if (live) live.replaceChildren(groupTables(g));
  const chart = document.getElementById("lag-chart");
  if (chart) drawLag(chart, recordLag(id, g.offsets.reduce((s2, o) => s2 + (o.lag || 0), 0)));
}

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", render);
