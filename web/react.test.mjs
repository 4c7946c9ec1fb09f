// React bindings rendered for real (react-dom in a jsdom document) against
// a real walcast, run by TestJSClient with node --test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body><div id=root></div></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
if (!globalThis.navigator) globalThis.navigator = dom.window.navigator;

const React = await import("react");
const { createRoot } = await import("react-dom/client");
const { WalcastProvider, useProjectEvents, usePresence, useBroadcast, useConnectionState } = await import("./react.js");
const { WalcastClient } = await import("./walcast-client.js");

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: run this through go test -run TestJSClient ./cmd/walcast`);
  return v;
};
const WS = env("WALCAST_WS_URL");
const HTTP = env("WALCAST_HTTP_URL");
const PROJECT = env("PROJECT");
const h = React.createElement;

function waitFor(pred, ms = 5000) {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = () => {
      if (pred()) return resolve();
      if (Date.now() - start > ms) return reject(new Error("timed out: " + document.getElementById("root").innerHTML));
      setTimeout(tick, 10);
    };
    tick();
  });
}

function Chat() {
  const state = useConnectionState();
  const [messages, setMessages] = React.useState([]);
  useProjectEvents(PROJECT, (ev) => {
    if (ev.type === "message_created") setMessages((m) => [...m, ev.data.content]);
  });
  const users = usePresence(PROJECT, { name: "Bob" });
  const [, typing] = useBroadcast(PROJECT, "typing");
  return h(
    "div",
    null,
    h("span", { id: "state" }, state),
    h("ul", { id: "messages" }, messages.map((m, i) => h("li", { key: i }, m))),
    h("span", { id: "online" }, Object.keys(users).sort().join(",")),
    h("span", { id: "typing" }, typing ? typing.from : ""),
  );
}

const text = (id) => document.getElementById(id)?.textContent ?? "";

test("the hooks render a live project: connection state, events, presence, broadcasts; unmounting unsubscribes and closes", async () => {
  const root = createRoot(document.getElementById("root"));
  root.render(h(WalcastProvider, { options: { url: WS, token: env("BOB_TOKEN") } }, h(Chat)));
  await waitFor(() => text("state") === "open" && text("online").includes(env("BOB")));

  const res = await fetch(`${HTTP}/api/v1/projects/${PROJECT}/messages`, {
    method: "POST",
    headers: { Authorization: `Bearer ${env("ALICE_TOKEN")}`, "Content-Type": "application/json" },
    body: JSON.stringify({ content: "hello react" }),
  });
  assert.equal(res.status, 201);
  await waitFor(() => text("messages").includes("hello react"));

  const alice = new WalcastClient({ url: WS, token: env("ALICE_TOKEN") });
  await alice.subscribeThenLoad(PROJECT, async () => null);
  alice.trackPresence(PROJECT, { name: "Alice" });
  await waitFor(() => text("online").includes(env("ALICE")));
  alice.broadcast(PROJECT, "typing", { on: true });
  await waitFor(() => text("typing") === env("ALICE"));

  root.unmount();
  await waitFor(() => !alice.presenceOf(PROJECT)[env("BOB")]);
  alice.close();
});
