// The chat panel: the OpenAI-compatible /v1/chat/completions, streamed, with the whole history
// resent on every turn (the server keeps no session). Products an answer names come back in the
// final chunk's `whyrec` object and are shown as chips that open the item's explanation.
"use strict";

const chat = { messages: [], busy: false };

function chatEl(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function chatScroll() { const log = document.getElementById("chat-log"); log.scrollTop = log.scrollHeight; }

async function chatProducts(bubble, ids) {
  if (!ids || !ids.length) return;
  const row = chatEl("div", "chat-products");
  row.setAttribute("data-products", ids.join(" "));
  bubble.after(row);
  for (const id of ids) {
    const chip = chatEl("button", "chat-product");
    chip.type = "button";
    chip.setAttribute("data-id", id);
    chip.append(chatEl("span", "", id));
    row.append(chip);
    try {
      const resp = await fetch(`/items/${encodeURIComponent(id)}`);
      if (!resp.ok) continue;
      const item = await resp.json();
      chip.replaceChildren();
      if (item.image_url) { const img = chatEl("img"); img.src = item.image_url; img.alt = item.title; chip.append(img); }
      chip.append(chatEl("span", "", item.title));
      chip.title = `item ${item.id}`;
      chip.addEventListener("click", () => { if (typeof openDetail === "function") openDetail(item); });
    } catch (_) { /* the chip keeps the bare id */ }
  }
  chatScroll();
}

async function chatSend(event) {
  event.preventDefault();
  const input = document.getElementById("chat-input");
  const text = input.value.trim();
  if (!text || chat.busy) return;
  chat.busy = true;
  input.value = "";
  const log = document.getElementById("chat-log");
  log.append(chatEl("div", "msg user", text));
  chat.messages.push({ role: "user", content: text });
  const bubble = chatEl("div", "msg assistant streaming", "");
  log.append(bubble);
  chatScroll();
  let answer = "";
  let extra = null;
  try {
    const body = { model: "whyrec", messages: chat.messages, stream: true };
    const shopper = document.getElementById("shopper");
    if (shopper && shopper.value) body.user = shopper.value;
    const resp = await fetch("/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!resp.ok || !resp.body) throw new Error(`${resp.status} ${resp.statusText}`);
    await readEvents(resp, (ev) => {  // app.js
      if (!ev.data || ev.data === "[DONE]") return;
      const chunk = JSON.parse(ev.data);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) { answer += delta.content; bubble.textContent = answer; chatScroll(); }
      if (chunk.whyrec) extra = chunk.whyrec;
    });
    chat.messages.push({ role: "assistant", content: answer });
    bubble.setAttribute("data-turn", extra ? extra.turn : "");
    await chatProducts(bubble, extra ? extra.products : []);
  } catch (err) {
    bubble.classList.add("error");
    bubble.textContent = `the assistant failed: ${err.message}`;
    chat.messages.pop();
  } finally {
    bubble.classList.remove("streaming");
    chat.busy = false;
  }
}

function chatReset() {
  chat.messages = [];
  const log = document.getElementById("chat-log");
  log.replaceChildren(chatEl("p", "chat-hint", "New conversation: what are you looking for?"));
}

document.getElementById("chat-form").addEventListener("submit", chatSend);
document.getElementById("chat-reset").addEventListener("click", chatReset);
