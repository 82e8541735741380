// whyrec web page: plain JS against the same REST API any client uses (no CDN, no build step).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { request: null };
window.whyrec = state; // the page state, for tests; request: what the current results answer: {query} | {user_id, query} | {image}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function setStatus(text, error = false) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

async function api(path, options = {}) {
  const resp = await fetch(path, options);
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  if (!resp.ok) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    throw new Error(detail || `${resp.status} ${resp.statusText}`);
  }
  return body;
}

const formatPrice = (p) => (p >= 1 ? p.toFixed(2) : p.toPrecision(2));

const postJSON = (path, data) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });

function photo(item, cls = "") {
  if (!item.image_url) return el("span", { class: "noimg" }, "no photo");
  return el("img", { src: item.image_url, alt: item.title, loading: "lazy", class: cls });
}

function renderResults(data, label, pending = false) {
  const grid = $("#results");
  grid.replaceChildren();
  for (const hit of data.results) {
    const facts = [hit.colour, hit.attributes.product_type, hit.price != null ? `price ${formatPrice(hit.price)}` : null].filter(Boolean);
    const card = el("article", { class: "card", tabindex: "0", "data-id": hit.id, onclick: () => openDetail(hit),
                                 onkeydown: (e) => { if (e.key === "Enter") openDetail(hit); } },
      el("div", { class: "photo" }, photo(hit)),
      el("div", { class: "body" },
        el("div", { class: "title" }, hit.title),
        el("div", { class: "meta" }, facts.join(" · ")),
        hit.matched && hit.matched.length ? el("div", { class: "chips" }, hit.matched.map((m) => el("span", { class: "chip hit" }, m))) : null,
        hit.rationale ? el("p", { class: "why" }, hit.rationale.text)
          : pending ? el("p", { class: "why pending" }, "writing why it fits…") : null));
    grid.append(card);
  }
  state.hits = Object.fromEntries(data.results.map((h) => [h.id, h]));
  state.timing = { results: performance.now(), whys: [] }; // when the page showed what (read by tests and the curious)
  setStatus(data.results.length ? `${data.results.length} results ${label} in ${Math.round(data.took_ms)} ms` : `nothing found ${label}`);
}

// one "why" line arriving from /search/stream: fill in its card
function fillWhy(ev) {
  const hit = state.hits && state.hits[ev.id];
  if (hit) hit.rationale = ev.rationale;
  const why = document.querySelector(`#results .card[data-id="${CSS.escape(ev.id)}"] .why`);
  if (why) { why.textContent = ev.rationale.text; why.classList.remove("pending"); }
  if (state.timing) state.timing.whys.push(performance.now());
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  return { event, data: data.join("\n") };
}

// The server-sent events of a fetch response, each {event, data (raw text)} handed to onEvent as it
// arrives: /search/stream here, /v1/chat/completions in chat.js
async function readEvents(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      onEvent(parseEvent(block));
    }
  }
}

// POST /search/stream: the ranked items are shown as soon as they come, the "why" lines as they are written
async function streamSearch(body, label) {
  const resp = await fetch("/search/stream", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!resp.ok) {
    let detail = null;
    try { detail = (await resp.json()).detail; } catch (_) { /* not JSON */ }
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    throw new Error(detail || `${resp.status} ${resp.statusText}`);
  }
  let shown = null;
  let written = 0;
  await readEvents(resp, (ev) => {
    const data = ev.data ? JSON.parse(ev.data) : null;
    if (ev.event === "results") { shown = data; renderResults(shown, label, body.explain); }
    else if (ev.event === "rationale") { fillWhy(data); written += 1; }
    else if (ev.event === "done" && shown && shown.results.length)
      setStatus(`${shown.results.length} results ${label} in ${Math.round(shown.took_ms)} ms · ${written} explanations in ${Math.round(data.took_ms)} ms`);
  });
}

async function runSearch(event) {
  if (event) event.preventDefault();
  const query = $("#q").value.trim();
  const user = $("#shopper").value;
  if (!query && !user) { setStatus("type what you are looking for, or pick a shopper", true); return; }
  setStatus("searching…");
  try {
    let data;
    if (user) {
      state.request = { user_id: user, query: query || null };
      data = await postJSON("/recommend", { user_id: user, query: query || null, explain: true });
      renderResults(data, query ? `for shopper ${user.slice(0, 8)}… and "${query}"` : `for shopper ${user.slice(0, 8)}…`);
    } else {
      state.request = { query };
      await streamSearch({ query, explain: true }, `for "${query}"`);
    }
  } catch (err) {
    setStatus(`search failed: ${err.message}`, true);
  }
}

async function runImageSearch() {
  const file = $("#image-input").files[0];
  if (!file) return;
  const preview = $("#image-preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  setStatus("looking for similar items…");
  const form = new FormData();
  form.append("image", file);
  const words = $("#q").value.trim();
  if (words) form.append("text", words);
  try {
    const data = await api("/search/image", { method: "POST", body: form });
    state.request = { query: data.request || null };
    const guess = data.predicted_category && data.predicted_category[0];
    renderResults(data, `like ${file.name}` + (guess ? ` · predicted category: ${guess.label} (${Math.round(guess.probability * 100)}%)` : ""));
  } catch (err) {
    setStatus(`image search failed: ${err.message}`, true);
  }
}

async function showSimilar(item) {
  $("#detail").close();
  setStatus("finding similar items…");
  try {
    const data = await api(`/items/${encodeURIComponent(item.id)}/similar?explain=true`);
    state.request = { query: data.request || null };
    renderResults(data, `similar to ${item.title}`);
  } catch (err) {
    setStatus(`similar items failed: ${err.message}`, true);
  }
}

function renderEvidence(evidence) {
  const box = $("#evidence");
  box.replaceChildren();
  const list = el("ul");
  for (const [key, value] of Object.entries(evidence || {})) {
    if (value === null || value === undefined || (Array.isArray(value) && !value.length) ||
        (typeof value === "object" && !Array.isArray(value) && !Object.keys(value).length) || key === "product") continue;
    list.append(el("li", {}, el("strong", {}, key.replace(/_/g, " ") + ": "), describe(value)));
  }
  box.append(list.children.length ? list : el("p", { class: "meta" }, "no evidence recorded"));
}

function describe(value) {
  if (Array.isArray(value)) return value.map(describe).join(", ");
  if (value && typeof value === "object") {
    const kind = (k) => String(k).replace(/_/g, " ");
    if ("quote" in value && "kind" in value) return `"${value.quote}" (${kind(value.kind)}${value.value !== value.quote ? ": " + value.value : ""})`;
    if ("phrase" in value && "kind" in value) return `${value.negated ? "not " : ""}${value.phrase} (${kind(value.kind)})`;
    if ("item_id" in value && "shared" in value)
      return `${value.title} (shares ${value.shared.map((s) => `${kind(s[0])} ${s[1]}`).join(", ")})`;
    if ("title" in value && "id" in value) return `${value.title} (${value.id})`;
    return Object.entries(value).map(([k, v]) => `${k}: ${describe(v)}`).join("; ");
  }
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
  return String(value);
}

async function openDetail(hit) {
  const dialog = $("#detail");
  $("#detail-title").textContent = hit.title;
  $("#detail-meta").textContent = [`item ${hit.id}`, hit.colour, hit.price != null ? `price ${formatPrice(hit.price)}` : null].filter(Boolean).join(" · ");
  const img = $("#detail-image");
  img.hidden = !hit.image_url;
  if (hit.image_url) { img.src = hit.image_url; img.alt = hit.title; }
  $("#detail-text").textContent = hit.rationale ? hit.rationale.text : "…";
  $("#detail-backend").textContent = "";
  $("#evidence").replaceChildren(el("p", { class: "meta" }, "loading evidence…"));
  const facts = $("#facts");
  facts.replaceChildren();
  for (const [k, v] of Object.entries(hit.attributes || {})) facts.append(el("dt", {}, k.replace(/_/g, " ")), el("dd", {}, v));
  if (hit.description) facts.append(el("dt", {}, "description"), el("dd", {}, hit.description));
  $("#detail-similar").onclick = () => showSimilar(hit);
  if (!dialog.open) dialog.showModal();
  const req = { item_id: hit.id };
  const r = state.request || {};
  if (r.user_id) req.user_id = r.user_id;
  if (r.query) req.query = r.query;
  try {
    const ex = await postJSON("/explain", req);
    $("#detail-text").textContent = ex.rationale.text;
    $("#detail-backend").textContent = `written by the ${ex.backend} explainer` +
      (ex.rationale.fallback_reason ? ` (fallback: ${ex.rationale.fallback_reason})` : "") +
      (ex.rationale.facts_used.length ? ` · facts used: ${ex.rationale.facts_used.join(", ")}` : "");
    renderEvidence(ex.evidence);
  } catch (err) {
    $("#evidence").replaceChildren(el("p", { class: "meta" }, `explanation failed: ${err.message}`));
  }
}

async function loadShoppers() {
  try {
    const users = await api("/users?limit=30");
    const select = $("#shopper");
    for (const u of users) select.append(el("option", { value: u.id }, `${u.id.slice(0, 10)}… (${u.purchases} purchases)`));
  } catch (_) { /* the selector stays at "anyone" */ }
}

async function loadHealth() {
  try {
    const h = await api("/health");
    $("#health").textContent = `${h.items.toLocaleString()} items · ${h.encoder} encoder · ${h.explainer} explanations`;
  } catch (_) {
    $("#health").textContent = "service not ready";
  }
}

$("#search-form").addEventListener("submit", runSearch);
$("#image-input").addEventListener("change", runImageSearch);
$("#shopper").addEventListener("change", () => { if ($("#shopper").value) runSearch(); });
$("#detail").addEventListener("click", (e) => { if (e.target === $("#detail")) $("#detail").close(); });
loadShoppers();
loadHealth();
