// Tests of walcast-client.js against a real walcast, run by
// TestJSClient (cmd/walcast) with node --test, which starts walcast and a
// fresh database and passes their addresses in the environment.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { WalcastClient, tanstackInvalidator, comparePositions } from "./walcast-client.js";
import { env, WS, PROJECT, post, waitFor } from "./testenv.mjs";

function collect(client) {
  const got = { events: [], resyncs: [], statuses: [] };
  client.on("event", (ev) => got.events.push(ev));
  client.on("resync", (r) => got.resyncs.push(r));
  client.on("status", (s) => got.statuses.push(s));
  return got;
}

// hs256 issues a token for user valid for ms, signed with the test secret.
function hs256(user, ms) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = b64({ alg: "HS256", typ: "JWT" }) + "." + b64({ sub: user, iat: now, exp: now + Math.ceil(ms / 1000) });
  return body + "." + createHmac("sha256", env("JWT_SECRET")).update(body).digest("base64url");
}

const contents = (got) => got.events.filter((e) => e.type === "message_created").map((e) => e.data.content);

test("positions compare as strings in commit order", () => {
  assert.equal(comparePositions("0000000000000001/00000002", "0000000000000001/00000010"), -1);
  assert.equal(comparePositions("00000000000000A0/00000000", "0000000000000099/FFFFFFFF"), 1);
  assert.equal(comparePositions(null, "0000000000000001/00000000"), -1);
});

test("a member receives a message posted through the REST route, and the TanStack adapter invalidates its keys", async () => {
  const bob = new WalcastClient({ url: WS, token: env("BOB_TOKEN") });
  const got = collect(bob);
  const invalidated = [];
  bob.on("event", tanstackInvalidator({ invalidateQueries: (q) => invalidated.push(JSON.stringify(q.queryKey)) }));
  let subscribed = false;
  bob.on("subscribed", () => (subscribed = true));
  bob.subscribe(PROJECT);
  bob.connect();
  await waitFor(() => subscribed);
  await post(env("ALICE_TOKEN"), "hello from node");
  await waitFor(() => contents(got).includes("hello from node"));
  const mc = got.events.find((e) => e.type === "message_created");
  assert.equal(mc.project_id, PROJECT);
  assert.equal(mc.data.senderId, env("ALICE"));
  assert.deepEqual(invalidated, [JSON.stringify(["messages", PROJECT]), JSON.stringify(["messages", PROJECT])]);
  bob.close();
});

test("after a dropped connection it resumes from its last position: every missed event, once, in order", async () => {
  const bob = new WalcastClient({ url: WS, token: env("BOB_TOKEN"), minBackoffMs: 20 });
  const got = collect(bob);
  let subscribed = 0;
  bob.on("subscribed", () => subscribed++);
  bob.subscribe(PROJECT);
  bob.connect();
  await waitFor(() => subscribed === 1);
  await post(env("ALICE_TOKEN"), "before drop");
  await waitFor(() => contents(got).includes("before drop"));
  bob.pause();
  for (const c of ["missed 1", "missed 2", "missed 3"]) await post(env("ALICE_TOKEN"), c);
  bob.resume();
  await waitFor(() => contents(got).length >= 4);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(contents(got), ["before drop", "missed 1", "missed 2", "missed 3"]);
  const positions = got.events.map((e) => e.position);
  assert.deepEqual([...positions].sort(), positions, "events arrive in position order");
  assert.equal(new Set(positions).size, positions.length, "no duplicates");
  assert.equal(got.resyncs.length, 0);
  assert.ok(got.statuses.includes("closed") && got.statuses.at(-1) === "open");
  bob.close();
});

test("a position older than walcast retains surfaces as a resync callback", async () => {
  const bob = new WalcastClient({ url: WS, token: env("BOB_TOKEN") });
  const got = collect(bob);
  bob.subscribe(PROJECT, "0000000000000001/00000000");
  bob.connect();
  await waitFor(() => got.resyncs.length === 1);
  assert.equal(got.resyncs[0].projectId, PROJECT);
  bob.close();
});

test("resume points carry the stream's origin; one of another stream is answered with a resync", async () => {
  const bob = new WalcastClient({ url: WS, token: env("BOB_TOKEN") });
  let subscribed = false;
  bob.on("subscribed", () => (subscribed = true));
  bob.subscribe(PROJECT);
  bob.connect();
  await waitFor(() => subscribed);
  await post(env("ALICE_TOKEN"), "to resume from");
  await waitFor(() => bob.resumePoints()[PROJECT]?.position > "");
  const point = bob.resumePoints()[PROJECT];
  assert.match(point.origin, /^\d+\.\d+\.\w+$/, "origin is <system identifier>.<timeline>.<slot>");
  bob.close();

  // The same point resumes quietly; a point of another cluster does not.
  const same = new WalcastClient({ url: WS, token: env("BOB_TOKEN") });
  const gotSame = collect(same);
  let live = false;
  same.on("subscribed", () => (live = true));
  same.subscribe(PROJECT, point);
  same.connect();
  await waitFor(() => live);
  assert.equal(gotSame.resyncs.length, 0);
  same.close();

  const other = new WalcastClient({ url: WS, token: env("BOB_TOKEN") });
  const gotOther = collect(other);
  other.subscribe(PROJECT, { position: point.position, origin: "1.1.another_cluster" });
  other.connect();
  await waitFor(() => gotOther.resyncs.length === 1);
  assert.equal(other.resumePoints()[PROJECT].origin, point.origin, "the server's origin replaces the stale one");
  other.close();
});

test("a refreshed token keeps the socket open", async () => {
  // Issued here, so that it is still valid when the test starts however
  // long the tests before it took.
  const shortMs = 2000;
  const bob = new WalcastClient({ url: WS, token: hs256(env("BOB"), shortMs), minBackoffMs: 20 });
  const got = collect(bob);
  let subscribed = false;
  bob.on("subscribed", () => (subscribed = true));
  bob.subscribe(PROJECT);
  bob.connect();
  await waitFor(() => subscribed);
  bob.setToken(env("BOB_TOKEN"));
  // The short token has expired by now; the socket must still be the same.
  await new Promise((r) => setTimeout(r, shortMs + 500));
  await post(env("ALICE_TOKEN"), "after refresh");
  await waitFor(() => contents(got).includes("after refresh"));
  assert.deepEqual(got.statuses.filter((s) => s === "closed"), [], "the socket was never closed");
  bob.close();
});

test("presence and broadcast: who is online and who is typing, across a reconnect", async () => {
  const ALICE = env("ALICE");
  const BOB = env("BOB");
  const alice = new WalcastClient({ url: WS, token: env("ALICE_TOKEN"), minBackoffMs: 20 });
  const bob = new WalcastClient({ url: WS, token: env("BOB_TOKEN"), minBackoffMs: 20 });
  const typing = [];
  alice.on("broadcast", (b) => typing.push(b));
  const aliceSaw = [];
  alice.on("presence", (p) => aliceSaw.push(p));
  const bobSaw = [];
  bob.on("presence", (p) => bobSaw.push(p));

  alice.subscribe(PROJECT);
  alice.connect();
  await waitFor(() => alice.projects.get(PROJECT)?.live);
  alice.trackPresence(PROJECT, { name: "Alice" });
  bob.subscribe(PROJECT);
  bob.trackPresence(PROJECT); // asked for on subscribe
  bob.connect();
  await waitFor(() => alice.presenceOf(PROJECT)[BOB] && bob.presenceOf(PROJECT)[ALICE]?.meta?.name === "Alice");

  assert.equal(alice.broadcast(PROJECT, "typing", { on: true }), true);
  assert.ok(bob.broadcast(PROJECT, "typing", { on: true }));
  await waitFor(() => typing.length === 1);
  assert.deepEqual(typing[0], { projectId: PROJECT, event: "typing", from: BOB, payload: { on: true } });

  // Alice's connection drops: bob sees her leave, then come back with her
  // meta (the client asks for presence again on its resubscribe).
  bobSaw.length = 0;
  alice.ws.close();
  await waitFor(() => bobSaw.some((p) => p.leaves[ALICE]) && bob.presenceOf(PROJECT)[ALICE]?.meta?.name === "Alice");

  // Bob closes his page: alice sees him leave.
  bob.close();
  await waitFor(() => aliceSaw.some((p) => p.leaves[BOB]) && !alice.presenceOf(PROJECT)[BOB]);
  assert.equal(bob.broadcast(PROJECT, "typing", {}), false, "a closed client does not queue broadcasts");
  alice.close();
});

test("over Server-Sent Events, following one more project loses nothing of the others", async () => {
  const client = new WalcastClient({ url: WS, token: env("ALICE_TOKEN"), transport: "sse", minBackoffMs: 20 });
  try {
    const got = collect(client);
    client.subscribe(PROJECT);
    client.connect();
    await waitFor(() => client.projects.get(PROJECT)?.live);
    await post(env("ALICE_TOKEN"), "sse before the pause");
    await waitFor(() => contents(got).includes("sse before the pause"));

    // The stream is down while a message is written and another project
    // is followed (one with no position yet): the new stream must resume
    // the first project from its last position.
    client.pause();
    await post(env("ALICE_TOKEN"), "sse while paused");
    client.subscribe("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb");
    client.resume();
    await waitFor(() => contents(got).includes("sse while paused"));
    assert.deepEqual(
      contents(got).filter((c) => c.startsWith("sse ")),
      ["sse before the pause", "sse while paused"],
    );
    assert.equal(got.resyncs.length, 0);
  } finally {
    client.close(); // an open stream would keep node --test waiting
  }
});
