// React bindings rendered for real (react-dom in a jsdom document) against
// a real walcast, run by TestJSClient with node --test.
import { test } from "node:test";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body><div id=root></div></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
if (!globalThis.navigator) globalThis.navigator = dom.window.navigator;

const React = await import("react");
const { createRoot } = await import("react-dom/client");
const { WalcastProvider, useProjectEvents, usePresence, useBroadcast, useConnectionState } = await import("./react.js");
const { WalcastClient } = await import("./walcast-client.js");
const { env, WS, PROJECT, post, waitFor: waitForThat } = await import("./testenv.mjs");

const h = React.createElement;

const waitFor = (pred, ms = 5000) => waitForThat(pred, ms, () => document.getElementById("root").innerHTML);

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

  await post(env("ALICE_TOKEN"), "hello react");
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
