// Compiled by tsc --noEmit in make test (TestTypeScriptDeclarations): the
// declarations hold together and type what a frontend writes.
import { QueryClient } from "@tanstack/query-core";
import { WalcastClient, comparePositions, type EventFrame, type ServerFrame, type MessageCreatedFrame } from "./walcast-client.js";
import { connectQueryClient, defaultKeys } from "./tanstack.js";

const client = new WalcastClient({ url: "wss://rt.example.com", token: "t", getToken: async () => "fresh" });
const qc = new QueryClient();
const stop: () => void = connectQueryClient(client, qc, { appendMessages: true, keys: { messages: (id) => ["chat", id] } });
stop();
client.on("event", (ev: EventFrame) => {
  if (ev.type === "message_created") {
    const m = ev as MessageCreatedFrame;
    const content: string = m.data.content;
    void content;
  }
});
client.on("presence", ({ users }) => Object.keys(users));
client.on("status", (s) => (s === "open" ? 1 : 0));
const n: -1 | 0 | 1 = comparePositions("0000000000000001/00000000", null);
void n;
void defaultKeys.messages("p");
async function load(): Promise<number> {
  return client.subscribeThenLoad("p", async () => 42);
}
void load;
function describe(f: ServerFrame): string {
  switch (f.type) {
    case "subscription_revoked":
      return f.reason;
    case "error":
      return f.code;
    case "presence_diff":
      return Object.keys(f.joins).join();
    default:
      return f.type;
  }
}
void describe;
// @ts-expect-error: subscribe takes a project id
client.subscribe(42);
// @ts-expect-error: an unknown callback
client.on("nope", () => {});

// The React bindings.
import { createElement } from "react";
import { WalcastProvider, useBroadcast, useConnectionState, usePresence, useProjectEvents } from "./react.js";

function Chat(): null {
  const state: "idle" | "connecting" | "open" | "closed" = useConnectionState();
  useProjectEvents("p", (ev) => void ev.type);
  const users = usePresence("p", { name: "Bob" });
  const [send, last] = useBroadcast<{ on: boolean }>("p", "typing");
  send({ on: true });
  void [state, users, last?.payload.on];
  return null;
}
void createElement(WalcastProvider, { options: { url: "wss://x" } }, createElement(Chat));
