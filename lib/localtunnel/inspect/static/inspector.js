// The inspector page: the list from /api/requests, kept live by /api/events (server-sent
// events), one request's detail from /api/requests/<id>, and replay. Plain JS, no build step.
"use strict";

const rows = new Map();          // id -> {summary, tr}
let selected = null;             // id shown in the detail pane
let shown = null;                // its detail, as the API gave it

const $ = (id) => document.getElementById(id);
const tbody = document.querySelector("#list tbody");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function size(bytes) {
  if (bytes < 1024) return bytes + " B";
  if (bytes < 1048576) return (bytes / 1024).toFixed(1) + " KiB";
  return (bytes / 1048576).toFixed(1) + " MiB";
}

function ms(value) {
  return value == null ? "–" : value < 10 ? value.toFixed(1) + " ms" : Math.round(value) + " ms";
}

function statusCell(summary) {
  if (summary.pending) return el("td", {class: "status muted"}, "…");
  const status = summary.status ?? "–";
  return el("td", {class: "status s" + String(status)[0]}, status);
}

function row(summary) {
  const path = el("td", {class: "path", title: summary.path}, summary.path);
  if (summary.replay_of) path.append(el("span", {class: "tag"}, "replay of #" + summary.replay_of));
  if (summary.websocket) path.append(el("span", {class: "tag"}, "WebSocket"));
  const tr = el("tr", {tabindex: "-1", "data-id": summary.id},
    el("td", {class: "muted"}, new Date(summary.time * 1000).toLocaleTimeString()),
    el("td", {class: "method"}, summary.method), path, statusCell(summary),
    el("td", {class: "num"}, summary.pending ? "…" : ms(summary.duration_ms)),
    el("td", {class: "num"}, summary.pending ? "" : size(summary.size)));
  tr.addEventListener("click", () => select(summary.id));
  return tr;
}

function matches(summary) {
  const method = $("f-method").value, status = $("f-status").value, path = $("f-path").value.trim();
  return (!method || summary.method === method)
    && (!status || String(summary.status ?? "").startsWith(status))
    && (!path || summary.path.includes(path));
}

function upsert(summary, fresh) {
  const old = rows.get(summary.id);
  const tr = row(summary);
  if (summary.id === selected) tr.classList.add("selected");
  if (fresh && !old) tr.classList.add("fresh");
  tr.hidden = !matches(summary);
  if (old) old.tr.replaceWith(tr); else tbody.prepend(tr);    // newest first
  rows.set(summary.id, {summary, tr});
  $("empty").hidden = rows.size > 0;
  if (summary.id === selected && !summary.pending && shown && shown.pending) load(summary.id);
}

function refilter() {
  for (const {summary, tr} of rows.values()) tr.hidden = !matches(summary);
}

async function api(path, options) {
  const answer = await fetch(path, options);
  const body = answer.status === 204 ? null : await answer.json();
  if (!answer.ok) throw new Error(body && body.message || answer.statusText);
  return body;
}

let reloading = false;            // a list fetch in flight: events wait, or it would wipe them
let held = [];

async function reloadList() {
  reloading = true;
  try {
    const list = await api("/api/requests");
    tbody.replaceChildren();
    rows.clear();
    for (const summary of list.reverse()) upsert(summary, false);
  } finally {
    reloading = false;
    for (const summary of held) upsert(summary, true);    // what happened while it loaded
    held = [];
    $("empty").hidden = rows.size > 0;
  }
}

function select(id) {
  selected = id;
  for (const {summary, tr} of rows.values()) tr.classList.toggle("selected", summary.id === id);
  const current = rows.get(id);
  if (current) current.tr.scrollIntoView({block: "nearest"});
  $("editor").hidden = true;
  load(id);
}

async function load(id) {
  try {
    shown = await api("/api/requests/" + id);
  } catch (error) {
    $("detail").hidden = true;
    return;
  }
  if (id !== selected) return;
  render(shown);
}

function render(detail) {
  $("detail").hidden = false;
  $("d-title").textContent = detail.method + " " + detail.path;
  const parts = ["#" + detail.id, new Date(detail.time * 1000).toLocaleString()];
  if (detail.pending) parts.push("waiting for the answer…");
  else parts.push("status " + (detail.status ?? "none"), "waited " + ms(detail.waited_ms) + " for the local service",
                  ms(detail.duration_ms) + " in total");
  if (detail.replay_of) parts.push("replay of #" + detail.replay_of);
  $("d-meta").textContent = parts.join(" · ");
  $("d-request").replaceChildren(...message(detail.request, detail));
  $("d-response").replaceChildren(...message(detail.response, detail));
}

function message(part, detail) {
  if (!part || !part.head) return [el("p", {class: "muted"}, detail.pending ? "Not yet." : "Nothing captured.")];
  const headers = el("table", {class: "headers"});
  for (const [name, value] of part.headers) headers.append(el("tr", {}, el("td", {}, name), el("td", {}, value)));
  const out = [el("pre", {}, part.head.split("\r\n")[0]), headers];
  if (detail.evicted) out.push(el("p", {class: "note"}, "The body was dropped to keep the inspector's memory bounded."));
  if (part.body) out.push(...body(part.body, detail));
  return out;
}

function body(b, detail) {
  const out = [];
  if (b.size === 0) return [el("p", {class: "muted"}, "No body.")];
  let note = size(b.size);
  if (b.truncated) note += ", of which the first " + size(b.kept) + " were kept";
  if (b.content_encoding) note += ", " + b.content_encoding + (b.decoded_complete ? " (decoded)" : " (decoded as far as kept)");
  out.push(el("p", {class: "muted"}, "Body: " + note));
  if (detail.websocket) out.push(el("p", {class: "muted"}, "WebSocket frames are not captured."));
  if (b.kind === "json" || b.kind === "text") out.push(el("pre", {class: "body " + b.kind}, b.text));
  else if (b.kind === "form") {
    const table = el("table", {class: "form"});
    for (const [key, value] of b.form) table.append(el("tr", {}, el("td", {}, key), el("td", {}, value)));
    out.push(table);
  } else if (b.kind === "image") out.push(el("img", {class: "body", alt: "the body, as an image", src: "data:" + b.mime + ";base64," + b.image}));
  else out.push(el("pre", {class: "body hex"}, b.hex + (b.hex_cut ? "\n…" : "")));
  return out;
}

async function replay(edits) {
  if (selected == null) return;
  $("e-error").textContent = "";
  try {
    const options = {method: "POST"};
    if (edits) {
      options.headers = {"Content-Type": "application/json"};
      options.body = JSON.stringify(edits);
    }
    const made = await api("/api/requests/" + selected + "/replay", options);
    upsert(made, true);
    select(made.id);
  } catch (error) {
    $("e-error").textContent = error.message;
    if (!edits) { $("editor").hidden = false; }
  }
}

function openEditor() {
  if (!shown) return;
  $("e-method").value = shown.method;
  $("e-path").value = shown.path;
  $("e-headers").value = shown.request.headers.map(([name, value]) => name + ": " + value).join("\n");
  const b = shown.request.body;
  $("e-body").value = b && !b.base64 ? b.data : "";
  $("e-error").textContent = "";
  $("editor").hidden = false;
  $("e-method").focus();
}

$("editor").addEventListener("submit", (event) => {
  event.preventDefault();
  const headers = $("e-headers").value.split("\n").filter((line) => line.includes(":"))
    .map((line) => [line.slice(0, line.indexOf(":")).trim(), line.slice(line.indexOf(":") + 1).trim()]);
  replay({method: $("e-method").value.trim(), path: $("e-path").value.trim(), headers, body: $("e-body").value});
});
$("e-cancel").addEventListener("click", () => { $("editor").hidden = true; });
$("replay").addEventListener("click", () => replay(null));
$("edit").addEventListener("click", openEditor);
$("clear").addEventListener("click", async () => { await api("/api/requests", {method: "DELETE"}); });
for (const id of ["f-method", "f-status", "f-path"]) $(id).addEventListener("input", refilter);

function visibleIds() {
  return [...tbody.children].filter((tr) => !tr.hidden).map((tr) => Number(tr.dataset.id));
}

document.addEventListener("keydown", (event) => {
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName);
  if (event.key === "Escape") { $("editor").hidden = true; event.target.blur && event.target.blur(); return; }
  if (typing || event.metaKey || event.ctrlKey || event.altKey) return;
  const ids = visibleIds();
  const at = ids.indexOf(selected);
  if (event.key === "ArrowDown" || event.key === "j") { if (ids.length) select(ids[Math.min(at + 1, ids.length - 1)]); }
  else if (event.key === "ArrowUp" || event.key === "k") { if (ids.length) select(ids[Math.max(at - 1, 0)]); }
  else if (event.key === "r") replay(null);
  else if (event.key === "e") openEditor();
  else if (event.key === "/") $("f-path").focus();
  else return;
  event.preventDefault();
});

function listen() {
  const events = new EventSource("/api/events");
  events.onopen = async () => {
    await reloadList().catch(() => {});
    $("live").textContent = "live";
    $("live").classList.add("on");
  };
  events.onmessage = (event) => {
    const summary = JSON.parse(event.data);
    if (reloading) held.push(summary); else upsert(summary, true);
  };
  events.addEventListener("cleared", () => { tbody.replaceChildren(); rows.clear(); $("empty").hidden = false; $("detail").hidden = true; selected = null; });
  events.onerror = () => { $("live").textContent = "reconnecting…"; $("live").classList.remove("on"); };
}

listen();
