// react.js — React bindings of walcast-client.js (React 18 or 19, a peer
// dependency). Plain ES module, no JSX, no build step.
//
//   import { WalcastProvider, useProjectEvents, usePresence, useBroadcast,
//            useConnectionState } from "@walcast/client/react";
//
//   <WalcastProvider options={{ url, token, getToken }}>…</WalcastProvider>

import { createContext, createElement, useContext, useEffect, useRef, useState, useSyncExternalStore } from "react";
import { WalcastClient } from "./walcast-client.js";

const Context = createContext(null);

// Subscriptions are counted per client and project: several components
// may follow one project, and it is unsubscribed when the last one goes.
const holds = new WeakMap(); // client -> Map(projectId -> count)

function hold(client, projectId, presence) {
  let m = holds.get(client);
  if (!m) holds.set(client, (m = new Map()));
  const n = m.get(projectId) || 0;
  m.set(projectId, n + 1);
  if (n === 0) client.subscribe(projectId);
  if (presence) client.trackPresence(projectId);
  return () => {
    const left = m.get(projectId) - 1;
    if (left > 0) return void m.set(projectId, left);
    m.delete(projectId);
    client.unsubscribe(projectId);
  };
}

/**
 * Owns one client for the app: the one given, or one made from options
 * (connected on mount, closed on unmount).
 */
export function WalcastProvider({ client, options, children }) {
  const ref = useRef(null);
  if (!ref.current) ref.current = client || new WalcastClient(options);
  useEffect(() => {
    const c = ref.current;
    if (c.state === "idle" || c.state === "closed") c.connect();
    return () => {
      if (!client) c.close();
    };
  }, [client]);
  return createElement(Context.Provider, { value: ref.current }, children);
}

/** The provider's client. */
export function useWalcast() {
  const c = useContext(Context);
  if (!c) throw new Error("useWalcast: no WalcastProvider above this component");
  return c;
}

/** "idle" | "connecting" | "open" | "closed", for a live indicator. */
export function useConnectionState() {
  const c = useWalcast();
  return useSyncExternalStore(
    (onChange) => c.on("status", onChange),
    () => c.state,
    () => c.state,
  );
}

/**
 * Subscribes to projectId while the component is mounted and calls
 * handler with each of its events (cache_invalidate, domain events,
 * published events), and with {type:"resync_required"} when the project
 * must be refetched.
 */
export function useProjectEvents(projectId, handler) {
  const c = useWalcast();
  const h = useRef(handler);
  h.current = handler;
  useEffect(() => {
    if (!projectId) return undefined;
    const release = hold(c, projectId, false);
    const offEvent = c.on("event", (ev) => ev.project_id === projectId && h.current(ev));
    const offResync = c.on("resync", (r) => r.projectId === projectId && h.current({ type: "resync_required", project_id: projectId, position: r.position }));
    return () => {
      offEvent();
      offResync();
      release();
    };
  }, [c, projectId]);
}

/**
 * Who is present in projectId: { [userId]: { meta, online_at } }, kept up
 * to date; meta, when given, is what this user says about itself.
 */
export function usePresence(projectId, meta = null) {
  const c = useWalcast();
  const [users, setUsers] = useState(() => (projectId ? c.presenceOf(projectId) : {}));
  const metaJSON = meta == null ? "" : JSON.stringify(meta);
  useEffect(() => {
    if (!projectId) return undefined;
    const release = hold(c, projectId, true);
    if (metaJSON) c.trackPresence(projectId, JSON.parse(metaJSON));
    setUsers(c.presenceOf(projectId));
    const off = c.on("presence", (p) => p.projectId === projectId && setUsers(p.users));
    return () => {
      off();
      release();
    };
  }, [c, projectId, metaJSON]);
  return users;
}

/**
 * Broadcasts of one event in projectId: returns [send, last], where
 * send(payload) broadcasts to the project's other subscribers and last is
 * the last one received ({ from, payload }), or null; onReceive, when
 * given, is called with each.
 */
export function useBroadcast(projectId, event, onReceive) {
  const c = useWalcast();
  const [last, setLast] = useState(null);
  const h = useRef(onReceive);
  h.current = onReceive;
  useEffect(() => {
    if (!projectId) return undefined;
    const release = hold(c, projectId, false);
    const off = c.on("broadcast", (b) => {
      if (b.projectId !== projectId || b.event !== event) return;
      const got = { from: b.from, payload: b.payload };
      setLast(got);
      if (h.current) h.current(got);
    });
    return () => {
      off();
      release();
    };
  }, [c, projectId, event]);
  const send = (payload = {}) => c.broadcast(projectId, event, payload);
  return [send, last];
}
