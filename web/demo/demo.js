// The walcast demo: chat and a task board of one project, live through
// walcast-client.js. Served by walcast only in demo mode.
import { WalcastClient } from "../walcast-client.js";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const statuses = ["todo", "in_progress", "done"];
let me = null;
let token = "";
let projectId = "";
let client = null;

async function api(path, opts = {}) {
  const res = await fetch(path, {
    ...opts,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...(opts.headers || {}) },
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw Object.assign(new Error(body.error?.message || res.statusText), { status: res.status });
  return body;
}

function banner(text) {
  const b = $("#banner");
  b.textContent = text;
  b.hidden = !text;
}

function setStatus(state) {
  const s = $("#status");
  s.className = state;
  s.querySelector("b").textContent = state === "open" ? "live" : state;
  // Sending while the socket is down would work (REST), but the page
  // could not show the result: say so instead.
  const send = $("#send");
  send.disabled = state !== "open";
  send.title = state === "open" ? "" : "reconnecting…";
}

function renderMessages(messages) {
  const ul = $("#messages");
  ul.replaceChildren(
    ...messages.map((m) => {
      const li = document.createElement("li");
      li.className = "message" + (m.senderId === me.id ? " mine" : "");
      li.dataset.id = m.id;
      const who = document.createElement("small");
      who.textContent = `${m.senderName || m.senderId.slice(0, 8)} · ${new Date(m.createdAt).toLocaleTimeString()}`;
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = m.content;
      li.append(who, text);
      return li;
    }),
  );
  ul.scrollTop = ul.scrollHeight;
}

// reloadUntil runs load until what it returns reflects an event, waiting
// 25 ms, then twice as long each time, for at most about 3 s. An event
// leaves walcast as soon as PostgreSQL has written its commit, which can
// be a moment before other sessions can read it (docs/protocol.md,
// "Refetching after an event"): a reload at once may miss the change.
async function reloadUntil(load, reflects) {
  for (let wait = 25; ; wait *= 2) {
    if (reflects(await load()) || wait > 1600) return;
    await new Promise((r) => setTimeout(r, wait));
  }
}

let messagesLoad = 0;
async function loadMessages() {
  const n = ++messagesLoad;
  const { messages } = await api(`/api/v1/projects/${projectId}/messages?limit=100`);
  // A newer load is under way: it renders (this one's list is still
  // returned, for reloadUntil).
  if (n === messagesLoad) renderMessages([...messages].reverse().map((m) => ({ ...m, senderName: names.get(m.senderId) })));
  return messages;
}

function renderTasks(tasks) {
  for (const col of document.querySelectorAll(".column")) col.querySelector("ul").replaceChildren();
  for (const t of tasks) {
    const li = document.createElement("li");
    li.className = "task";
    li.dataset.id = t.id;
    const title = document.createElement("div");
    title.className = "title";
    title.textContent = t.title;
    const meta = document.createElement("div");
    meta.className = "meta";
    const i = statuses.indexOf(t.status);
    const left = button("←", i > 0, () => move(t.id, statuses[i - 1]));
    const right = button("→", i >= 0 && i < statuses.length - 1, () => move(t.id, statuses[i + 1]));
    left.className = right.className = "ghost";
    right.dataset.move = "right";
    const pts = document.createElement("span");
    pts.textContent = t.storyPoints != null ? `${t.storyPoints} pts` : "";
    meta.append(left, pts, right);
    li.append(title, meta);
    const col = document.querySelector(`.column[data-status="${t.status}"] ul`) || document.querySelector(`.column ul`);
    col.append(li);
  }
}

function button(label, enabled, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.disabled = !enabled;
  b.style.visibility = enabled ? "visible" : "hidden";
  b.addEventListener("click", onClick);
  return b;
}

let tasksLoad = 0;
async function loadTasks() {
  const n = ++tasksLoad;
  const { tasks } = await api(`/demo/api/projects/${projectId}/tasks`);
  if (n === tasksLoad) renderTasks(tasks);
  return tasks;
}

async function move(taskId, status) {
  await api(`/demo/api/tasks/${taskId}`, { method: "PATCH", body: JSON.stringify({ status }) });
}

const names = new Map();

async function start() {
  const users = await (await fetch("/demo/api/users")).json();
  const select = $("#user");
  for (const u of users.users) {
    names.set(u.id, u.displayName);
    const o = document.createElement("option");
    o.value = u.id;
    o.textContent = u.displayName;
    select.append(o);
  }
  me = users.users.find((u) => u.id === params.get("user")) || users.users[0];
  select.value = me.id;
  select.addEventListener("change", () => {
    location.search = `?user=${select.value}`;
  });
  token = (await (await fetch(`/demo/api/token?user=${me.id}`)).json()).token;
  projectId = params.get("project") || users.project;
  $("#project-name").textContent = users.projectName || "";

  client = new WalcastClient({
    url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
    token,
    getToken: async () => (await (await fetch(`/demo/api/token?user=${me.id}`)).json()).token,
  });
  window.walcastDemo = { client };
  client.on("status", setStatus);
  client.on("event", (ev) => {
    const row = ev.data || {};
    switch (ev.type) {
      case "message_created":
        reloadUntil(loadMessages, (ms) => ms.some((m) => m.id === row.id));
        break;
      case "task_created":
      case "task_updated":
        reloadUntil(loadTasks, (ts) => ts.some((t) => t.id === row.id && t.status === row.status && t.title === row.title));
        break;
      case "task_deleted":
        reloadUntil(loadTasks, (ts) => !ts.some((t) => t.id === row.id));
        break;
      case "cache_invalidate":
        // Task rows come with their domain events above; a sprint, or
        // rows coalesced into BULK (no domain events), reload the board.
        if (ev.resource === "sprint" || (ev.resource === "task" && ev.action === "BULK")) loadTasks();
        break;
    }
  });
  client.on("resync", () => {
    loadMessages();
    loadTasks();
  });
  client.on("revoked", ({ reason }) => banner(`You lost access to this project (${reason}).`));
  client.on("error", (e) => {
    if (e.code === "forbidden") banner(`${me.displayName} is not a member of this project: nothing of it is shown.`);
  });
  // The page loads before the subscription is live: what is committed in
  // between arrives as no event, so the lists are loaded again once the
  // first subscribed says every later change will (the no-gap pattern of
  // subscribeThenLoad; later resubscribes resume with since).
  let live = false;
  client.on("subscribed", ({ projectId: id }) => {
    if (id !== projectId || live) return;
    live = true;
    loadMessages();
    loadTasks();
  });
  client.subscribe(projectId);
  client.trackPresence(projectId, { name: me.displayName });
  client.connect();

  // Who is online (presence) and who is typing (broadcast): ephemeral,
  // never stored (docs/protocol.md, B.9).
  client.on("presence", ({ users }) => {
    $("#online").replaceChildren(
      ...Object.entries(users)
        .map(([id, u]) => u.meta?.name || names.get(id) || id.slice(0, 8))
        .sort()
        .map((name) => Object.assign(document.createElement("span"), { className: "user", textContent: name })),
    );
  });
  const typing = new Map(); // user id -> timer
  const renderTyping = () => {
    const who = [...typing.keys()].map((id) => names.get(id) || id.slice(0, 8)).sort();
    $("#typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
  };
  client.on("broadcast", ({ event, from, payload }) => {
    if (event !== "typing") return;
    clearTimeout(typing.get(from));
    if (payload?.on) typing.set(from, setTimeout(() => (typing.delete(from), renderTyping()), 3000));
    else typing.delete(from);
    renderTyping();
  });
  let typingSent = 0;
  $("#message-input").addEventListener("input", () => {
    if (Date.now() - typingSent < 1000) return; // within the ephemeral budget
    typingSent = Date.now();
    client.broadcast(projectId, "typing", { on: true });
  });

  // Posts go one after another, so a user's messages commit in the order
  // they were sent.
  let sending = Promise.resolve();
  $("#composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("#message-input");
    const content = input.value.trim();
    if (!content) return;
    input.value = "";
    typingSent = 0;
    client.broadcast(projectId, "typing", { on: false });
    sending = sending
      .then(() => api(`/api/v1/projects/${projectId}/messages`, { method: "POST", body: JSON.stringify({ content }) }))
      .catch((err) => banner(`Not sent: ${err.message}`));
  });

  try {
    await Promise.all([loadMessages(), loadTasks()]);
  } catch (err) {
    if (err.status === 403) {
      banner(`${me.displayName} is not a member of this project: nothing of it is shown.`);
      $("#composer").hidden = true;
    } else {
      banner(String(err.message || err));
    }
  }
}

start();
