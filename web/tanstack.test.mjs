// Tests of tanstack.js and subscribeThenLoad against a real walcast and the
// real @tanstack/query-core (web/package.json, installed from the lockfile
// by make test), run by TestJSClient with node --test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { QueryClient, QueryObserver } from "@tanstack/query-core";
import { WalcastClient } from "./walcast-client.js";
import { connectQueryClient } from "./tanstack.js";
import { env, WS, HTTP, PROJECT, post as postAs, waitFor } from "./testenv.mjs";

const post = (content) => postAs(env("ALICE_TOKEN"), content);
const sql = (q) => execFileSync("psql", [env("DATABASE_URL"), "-qAtc", q], { encoding: "utf8" });

async function fetchMessages() {
  const res = await fetch(`${HTTP}/api/v1/projects/${PROJECT}/messages?limit=100`, { headers: { Authorization: `Bearer ${env("BOB_TOKEN")}` } });
  return (await res.json()).messages.reverse();
}

// A QueryClient observing the project's messages, counting fetches.
function observed(queryClient) {
  const counts = { fetches: 0 };
  const observer = new QueryObserver(queryClient, {
    queryKey: ["messages", PROJECT],
    queryFn: async () => {
      counts.fetches++;
      return fetchMessages();
    },
    staleTime: Infinity,
  });
  const unsubscribe = observer.subscribe(() => {});
  return { observer, counts, unsubscribe };
}

test("a new message invalidates its query once (the frame's two events batched) and the observer refetches", async () => {
  const queryClient = new QueryClient();
  const bob = new WalcastClient({ url: WS, token: env("BOB_TOKEN") });
  const stop = connectQueryClient(bob, queryClient);
  const { observer, counts, unsubscribe } = observed(queryClient);
  await waitFor(() => counts.fetches === 1 && observer.getCurrentResult().isSuccess);
  await bob.subscribeThenLoad(PROJECT, async () => null);
  const m = await post("invalidate me");
  await waitFor(() => observer.getCurrentResult().data?.some((x) => x.id === m.id));
  assert.equal(counts.fetches, 2, "one refetch for the cache_invalidate and the message_created of one insert");
  stop();
  unsubscribe();
  bob.close();
});

test("with appendMessages a message_created is appended with setQueryData, without a refetch", async () => {
  const queryClient = new QueryClient();
  const bob = new WalcastClient({ url: WS, token: env("BOB_TOKEN") });
  const stop = connectQueryClient(bob, queryClient, { appendMessages: true });
  const { observer, counts, unsubscribe } = observed(queryClient);
  await waitFor(() => observer.getCurrentResult().isSuccess);
  await bob.subscribeThenLoad(PROJECT, async () => null);
  const m = await post("append me");
  await waitFor(() => observer.getCurrentResult().data?.some((x) => x.id === m.id));
  assert.equal(counts.fetches, 1, "no refetch");
  const last = observer.getCurrentResult().data.at(-1);
  assert.equal(last.content, "append me");
  assert.equal(last.senderId, env("ALICE"));
  stop();
  unsubscribe();
  bob.close();
});

test("a BULK transaction invalidates the resource; a resync invalidates everything of the project", async () => {
  const queryClient = new QueryClient();
  const bob = new WalcastClient({ url: WS, token: env("BOB_TOKEN") });
  const stop = connectQueryClient(bob, queryClient);
  const invalidated = [];
  const orig = queryClient.invalidateQueries.bind(queryClient);
  queryClient.invalidateQueries = (filters) => {
    invalidated.push(JSON.stringify(filters.queryKey));
    return orig(filters);
  };
  await bob.subscribeThenLoad(PROJECT, async () => null);
  sql(`INSERT INTO tasks (project_id, title) SELECT '${PROJECT}', 'bulk ' || i FROM generate_series(1, 600) i`);
  await waitFor(() => invalidated.includes(JSON.stringify(["tasks", PROJECT])));
  assert.equal(invalidated.filter((k) => k === JSON.stringify(["tasks", PROJECT])).length, 1, "one BULK invalidation for 600 rows");
  bob.close();
  stop();

  const old = new WalcastClient({ url: WS, token: env("BOB_TOKEN") });
  const stopOld = connectQueryClient(old, queryClient);
  invalidated.length = 0;
  old.subscribe(PROJECT, "0000000000000001/00000000");
  old.connect();
  await waitFor(() => invalidated.includes(JSON.stringify(["projects", PROJECT])));
  for (const k of [["projects", PROJECT], ["messages", PROJECT], ["tasks", PROJECT], ["sprints", PROJECT]]) {
    assert.ok(invalidated.includes(JSON.stringify(k)), `resync invalidates ${k}`);
  }
  stopOld();
  old.close();
});

test("subscribeThenLoad misses no write committed while the initial load runs", async () => {
  const bob = new WalcastClient({ url: WS, token: env("BOB_TOKEN") });
  const seen = [];
  bob.on("event", (ev) => ev.type === "message_created" && seen.push(ev.data.content));
  // The load reads its snapshot, then a write commits before it returns:
  // fetched first and subscribed after, that write would be lost.
  const loaded = await bob.subscribeThenLoad(PROJECT, async () => {
    const snapshot = await fetchMessages();
    await post("in the window");
    return snapshot;
  });
  assert.ok(!loaded.some((m) => m.content === "in the window"), "the snapshot predates the write");
  await waitFor(() => seen.includes("in the window"));
  bob.close();

  const mallory = new WalcastClient({ url: WS, token: env("MALLORY_TOKEN") });
  await assert.rejects(mallory.subscribeThenLoad(PROJECT, async () => 1), /member/);
  mallory.close();
});
