// What the node tests share (not part of the package): the addresses and
// identities TestJSClient (cmd/walcast) passes in the environment, a
// message posted through walcast's REST route, and a polling wait.
import assert from "node:assert/strict";

export const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: run this through go test -run TestJSClient ./cmd/walcast`);
  return v;
};
export const WS = env("WALCAST_WS_URL");
export const HTTP = env("WALCAST_HTTP_URL");
export const PROJECT = env("PROJECT");

// post sends a chat message to PROJECT as the token's user.
export async function post(token, content) {
  const res = await fetch(`${HTTP}/api/v1/projects/${PROJECT}/messages`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ content }),
  });
  assert.equal(res.status, 201);
  return res.json();
}

// waitFor resolves once pred holds, or rejects after ms; what() adds to
// the error what the test was looking at.
export function waitFor(pred, ms = 5000, what = () => "") {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = () => {
      if (pred()) return resolve();
      if (Date.now() - start > ms) return reject(new Error("timed out" + (what() ? ": " + what() : "")));
      setTimeout(tick, 10);
    };
    tick();
  });
}
