// walcast-client.js — the browser (and Node ≥ 20) client for walcast.
// A plain ES module: import it as it is, no build step.
//
//   import { WalcastClient, tanstackInvalidator } from "./walcast-client.js";
//   const client = new WalcastClient({ url: "wss://rt.example.com/ws", token });
//   client.on("event", (ev) => console.log(ev.type, ev));
//   client.on("resync", ({ projectId }) => refetchEverything(projectId));
//   client.subscribe(projectId);
//   client.connect();
//
// It reconnects with jittered exponential backoff, resubscribes every
// project with `since` = the last position it saw (so nothing is lost within
// walcast's retained history), drops anything it has already seen, pings to
// notice dead connections, and refreshes its token without reconnecting.
// See docs/protocol.md for the frames.

const DEFAULTS = {
  minBackoffMs: 250,
  maxBackoffMs: 15000,
  pingIntervalMs: 20000,
  // A connection that hears nothing (not even a pong) this long is dead.
  deadAfterMs: 45000,
};

/** Compares walcast positions ("%016X/%08X"): they sort as strings. */
export function comparePositions(a, b) {
  if (a === b) return 0;
  if (!a) return -1;
  if (!b) return 1;
  return a < b ? -1 : 1;
}

export class WalcastClient {
  /**
   * @param {object} opts
   * @param {string} opts.url        ws(s)://host/ws
   * @param {string} [opts.token]    the JWT
   * @param {() => Promise<string>|string} [opts.getToken] called for a fresh token
   *        before reconnecting after the token expired (close 4001)
   * @param {typeof WebSocket} [opts.WebSocket] an implementation (default: global)
   */
  constructor(opts) {
    this.opts = { ...DEFAULTS, ...opts };
    this.token = opts.token || "";
    this.WS = opts.WebSocket || globalThis.WebSocket;
    this.ws = null;
    // projectId -> { last: position|null, origin: string|null, live: bool,
    //                presence: bool, meta: object|null, fresh: bool (SSE, openSSE) }
    this.projects = new Map();
    // projectId -> Map(userId -> { meta, online_at }): who is present, as
    // last told (kept while reconnecting; replaced by the next state).
    this.present = new Map();
    this.handlers = new Map();
    this.state = "idle"; // idle | connecting | open | closed
    // "websocket", or "sse" once WebSockets proved blocked (or absent):
    // see open().
    this.transport = opts.transport === "sse" || !this.WS ? "sse" : "websocket";
    this.failedOpens = 0; // WebSocket attempts in a row that never opened
    this.es = null;
    this.attempt = 0;
    this.paused = false;
    this.timers = { reconnect: null, ping: null };
    this.lastHeard = 0;
    // Browsers throttle timers in background tabs and sleeping laptops drop
    // sockets: when the tab is shown again or the network comes back, a
    // socket that is down reconnects now (with a fresh token from getToken
    // when the old one has expired) rather than at its backoff, and one
    // that is up is pinged to find out whether it still is.
    this.wake = () => {
      if (this.paused) return;
      if (this.state === "open") {
        if (Date.now() - this.lastHeard > this.opts.pingIntervalMs) this.send({ action: "ping" });
        return;
      }
      if (this.state === "connecting") return;
      clearTimeout(this.timers.reconnect);
      this.attempt = 0;
      this.open();
    };
    this.onVisible = () => {
      if (globalThis.document && globalThis.document.visibilityState === "visible") this.wake();
    };
    if (opts.wakeOnVisible !== false && globalThis.addEventListener && globalThis.document) {
      globalThis.document.addEventListener("visibilitychange", this.onVisible);
      globalThis.addEventListener("online", this.wake);
    }
  }

  /**
   * Registers fn for "event", "resync", "revoked", "error", "status",
   * "subscribed", "broadcast" ({ projectId, event, from, payload }) and
   * "presence" ({ projectId, users, joins, leaves }: users is everyone
   * present now, joins and leaves what changed, also across reconnects).
   */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type).delete(fn);
  }

  emit(type, payload) {
    for (const fn of this.handlers.get(type) || []) {
      try {
        fn(payload);
      } catch (err) {
        console.error("walcast handler failed", err);
      }
    }
  }

  /** The last position seen per project. */
  positions() {
    const out = {};
    for (const [id, p] of this.projects) if (p.last) out[id] = p.last;
    return out;
  }

  /**
   * The last position seen per project with the stream it comes from,
   * { [projectId]: { position, origin } }: what to persist across page loads
   * and pass back to subscribe() (a position of another stream is then
   * answered resync_required, never served as if it were this one's).
   */
  resumePoints() {
    const out = {};
    for (const [id, p] of this.projects) if (p.last) out[id] = { position: p.last, origin: p.origin };
    return out;
  }

  /** Starts (or restarts) the connection. */
  connect() {
    this.paused = false;
    this.open();
  }

  /**
   * Subscribes to a project; since resumes from a stored point: one of
   * resumePoints(), or a bare position (judged without its origin).
   */
  subscribe(projectId, since = null) {
    const p = this.projects.get(projectId) || { last: null, origin: null, live: false, presence: false, meta: null };
    const point = typeof since === "string" ? { position: since, origin: null } : since;
    if (point && point.position && comparePositions(point.position, p.last) > 0) {
      p.last = point.position;
      p.origin = point.origin || null;
    }
    this.projects.set(projectId, p);
    if (this.transport === "sse") {
      if (this.state !== "idle" && !this.paused) this.open(); // the projects are in the stream's URL
      return;
    }
    if (this.state === "open") this.sendSubscribe(projectId, p);
  }

  /**
   * Subscribes, waits until walcast confirms the subscription
   * (`subscribed`: every change committed after it reaches this client),
   * then runs the initial fetch and resolves with its result. A write that
   * commits while the fetch runs arrives as an event too, so nothing falls
   * between the fetch and the subscription (fetching first and subscribing
   * after loses what commits in between). Rejects if the subscription is
   * refused.
   */
  subscribeThenLoad(projectId, load) {
    return new Promise((resolve, reject) => {
      const offs = [];
      const done = () => offs.forEach((off) => off());
      offs.push(
        this.on("subscribed", ({ projectId: id }) => {
          if (id !== projectId) return;
          done();
          Promise.resolve().then(load).then(resolve, reject);
        }),
        this.on("error", (e) => {
          if (e.project_id !== projectId || (e.code !== "forbidden" && e.code !== "bad_request")) return;
          done();
          reject(Object.assign(new Error(e.message), { code: e.code }));
        }),
      );
      this.subscribe(projectId);
      if (this.state !== "open" && !this.paused) this.connect();
    });
  }

  unsubscribe(projectId) {
    this.projects.delete(projectId);
    this.setPresent(projectId, null);
    if (this.transport === "sse") {
      if (this.state !== "idle" && !this.paused) this.open();
      return;
    }
    this.send({ action: "unsubscribe", project_id: projectId });
  }

  /**
   * Follows who is present in a subscribed project ("presence" events) and,
   * with meta (a small object), tells the others about this user. Kept
   * across reconnects: the client asks again on every subscribe.
   */
  trackPresence(projectId, meta = null) {
    const p = this.projects.get(projectId);
    if (!p) throw new Error("subscribe to the project first");
    p.presence = true;
    if (meta !== null) p.meta = meta;
    if (p.live) this.sendPresence(projectId, p);
  }

  /** Who is present in a project: { [userId]: { meta, online_at } }. */
  presenceOf(projectId) {
    return Object.fromEntries(this.present.get(projectId) || []);
  }

  /**
   * Sends an ephemeral event (typing, a cursor) to the project's other
   * subscribers; self: true sends it back too. Never stored: false when
   * the socket is not open (the event is dropped, not queued).
   */
  broadcast(projectId, event, payload = {}, { self = false } = {}) {
    const p = this.projects.get(projectId);
    if (!p || !p.live || !this.ws || this.ws.readyState !== 1) return false;
    const frame = { action: "broadcast", project_id: projectId, event, payload };
    if (self) frame.self = true;
    this.send(frame);
    return true;
  }

  /** Uses a new token: on the open socket (refresh_token) and for reconnects. */
  setToken(token) {
    this.token = token;
    this.send({ action: "refresh_token", token });
  }

  /** Closes the socket and stays closed until connect() or resume(). */
  pause() {
    this.paused = true;
    // Closed on purpose: nobody is known to be present any more.
    for (const id of [...this.present.keys()]) this.setPresent(id, null);
    clearTimeout(this.timers.reconnect);
    this.teardown(1000, "paused");
    this.setState("closed");
  }

  resume() {
    this.connect();
  }

  /** Closes for good: the socket, and the page listeners. */
  close() {
    this.pause();
    if (globalThis.removeEventListener && globalThis.document) {
      globalThis.document.removeEventListener("visibilitychange", this.onVisible);
      globalThis.removeEventListener("online", this.wake);
    }
  }

  // --- internals ---

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("status", state);
  }

  send(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  sendPresence(projectId, p) {
    const frame = { action: "presence", project_id: projectId };
    if (p.meta) frame.meta = p.meta;
    this.send(frame);
  }

  // setPresent replaces who is present in a project (null: nobody known)
  // and emits what changed.
  setPresent(projectId, users) {
    const before = this.present.get(projectId) || new Map();
    const after = new Map(Object.entries(users || {}));
    if (users) this.present.set(projectId, after);
    else this.present.delete(projectId);
    const joins = {};
    const leaves = {};
    for (const [id, e] of after) {
      const old = before.get(id);
      if (!old || JSON.stringify(old.meta) !== JSON.stringify(e.meta)) joins[id] = e;
    }
    for (const [id, e] of before) if (!after.has(id)) leaves[id] = e;
    if (Object.keys(joins).length || Object.keys(leaves).length || users) {
      this.emit("presence", { projectId, users: Object.fromEntries(after), joins, leaves });
    }
  }

  sendSubscribe(projectId, p) {
    const frame = { action: "subscribe", project_id: projectId };
    if (p.presence && !p.meta) frame.presence = true;
    if (p.last) {
      frame.since = p.last;
      if (p.origin) frame.origin = p.origin;
    }
    p.live = false;
    this.send(frame);
  }

  open() {
    if (this.paused) return;
    this.teardown(1000, "reconnecting");
    this.setState("connecting");
    if (this.transport === "sse") return this.openSSE();
    const url = this.opts.url + (this.opts.url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(this.token);
    let ws;
    try {
      ws = new this.WS(url);
    } catch (err) {
      this.emit("error", { code: "connect", message: String(err) });
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      opened = true;
      this.failedOpens = 0;
      this.attempt = 0;
      this.lastHeard = Date.now();
      this.setState("open");
      for (const [id, p] of this.projects) this.sendSubscribe(id, p);
      this.startPing();
    };
    ws.onmessage = (msg) => {
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      this.handle(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopPing();
      this.setState("closed");
      if (this.paused) return;
      if (!opened && ++this.failedOpens >= 2 && this.opts.transport !== "websocket" && globalThis.EventSource) {
        // The socket never opens (a proxy or firewall blocks WebSockets):
        // the same events as Server-Sent Events (docs/protocol.md B.11).
        this.transport = "sse";
        this.emit("transport", "sse");
        this.attempt = 0;
      }
      if (ev.code === 4001 && this.opts.getToken) {
        Promise.resolve(this.opts.getToken()).then(
          (tok) => {
            this.token = tok;
            this.scheduleReconnect();
          },
          () => this.scheduleReconnect(),
        );
        return;
      }
      this.scheduleReconnect();
    };
    ws.onerror = () => {};
  }

  // openSSE opens the event stream of every project followed, resuming
  // from the earliest last position among them (later events a project
  // has seen already are dropped in handle). A project followed without
  // a position yet is replayed from there too; its events up to its own
  // `subscribed` are dropped (fresh), as a socket would not have sent
  // them. Resuming nothing because one project had no position lost the
  // others' events committed while the stream was down, with no resync.
  openSSE() {
    const ids = [...this.projects.keys()];
    if (ids.length === 0 || !globalThis.EventSource) {
      this.setState(ids.length === 0 ? "open" : "closed");
      return;
    }
    const base = this.opts.sseUrl || this.opts.url.replace(/^ws/, "http").replace(/\/ws\/?(\?.*)?$/, "").replace(/\/?(\?.*)?$/, "") + "/sse";
    let since = null;
    for (const p of this.projects.values()) {
      p.fresh = !p.last;
      if (p.last && (since === null || comparePositions(p.last, since) < 0)) since = p.last;
    }
    let url = base + "?token=" + encodeURIComponent(this.token) + "&project_id=" + ids.map(encodeURIComponent).join(",");
    if (since) url += "&last_event_id=" + encodeURIComponent(since);
    const es = new globalThis.EventSource(url);
    this.es = es;
    es.onopen = () => {
      if (this.es !== es) return;
      this.attempt = 0;
      this.lastHeard = Date.now();
      this.setState("open");
    };
    es.onmessage = (msg) => {
      if (this.es !== es) return;
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (frame.type === "error" && !frame.project_id && (frame.code === "unauthorized" || frame.code === "slow_consumer")) {
        // The stream ends (token expired, fell behind): a new one, with a
        // fresh token when there is one to get.
        es.close();
        this.es = null;
        this.setState("closed");
        const again = () => this.scheduleReconnect();
        if (frame.code === "unauthorized" && this.opts.getToken) {
          Promise.resolve(this.opts.getToken()).then((tok) => ((this.token = tok), again()), again);
        } else again();
        return;
      }
      this.handle(frame);
    };
    es.onerror = () => {
      if (this.es !== es) return;
      this.setState(es.readyState === 2 ? "closed" : "connecting");
      if (es.readyState === 2) {
        // Refused (a token gone stale, say): EventSource gives up; walcast's
        // client does not.
        this.es = null;
        if (this.opts.getToken) {
          Promise.resolve(this.opts.getToken()).then((tok) => ((this.token = tok), this.scheduleReconnect()), () => this.scheduleReconnect());
        } else this.scheduleReconnect();
      }
    };
  }

  handle(frame) {
    const p = frame.project_id ? this.projects.get(frame.project_id) : null;
    switch (frame.type) {
      case "pong":
      case "token_refreshed":
      case "unsubscribed":
        return;
      case "error":
        // A refused (re)subscribe: what was known of the project's
        // presence is not any more.
        if (frame.code === "forbidden" && frame.project_id) this.setPresent(frame.project_id, null);
        this.emit("error", frame);
        return;
      case "subscribed":
        // Everything up to this position has been delivered (docs/protocol.md B.1).
        if (p) {
          p.live = true;
          p.fresh = false;
          if (comparePositions(frame.position, p.last) > 0) p.last = frame.position;
          if (frame.origin) p.origin = frame.origin;
          if (p.presence && p.meta) this.sendPresence(frame.project_id, p);
        }
        this.emit("subscribed", { projectId: frame.project_id, position: frame.position });
        return;
      case "broadcast":
        if (p) this.emit("broadcast", { projectId: frame.project_id, event: frame.event, from: frame.from, payload: frame.payload });
        return;
      case "presence_state":
        if (p) this.setPresent(frame.project_id, frame.users);
        return;
      case "presence_diff":
        if (p) {
          const users = this.presenceOf(frame.project_id);
          for (const id of Object.keys(frame.leaves || {})) delete users[id];
          Object.assign(users, frame.joins || {});
          this.setPresent(frame.project_id, users);
        }
        return;
      case "resync_required":
        if (p) {
          // Live from this position on. After a resync of another origin
          // (a new cluster) positions start over, possibly lower: replace.
          p.last = frame.position;
          if (frame.origin) p.origin = frame.origin;
        }
        this.emit("resync", { projectId: frame.project_id, position: frame.position });
        return;
      case "subscription_revoked":
        this.projects.delete(frame.project_id);
        this.setPresent(frame.project_id, null);
        this.emit("revoked", { projectId: frame.project_id, reason: frame.reason, position: frame.position });
        return;
    }
    if (!p || !frame.position) return; // not ours (any more)
    if (p.fresh) return; // replayed from before this project was followed
    if (comparePositions(frame.position, p.last) <= 0) return; // seen already
    p.last = frame.position;
    this.emit("event", frame);
  }

  scheduleReconnect() {
    if (this.paused) return;
    clearTimeout(this.timers.reconnect);
    const base = Math.min(this.opts.maxBackoffMs, this.opts.minBackoffMs * 2 ** this.attempt);
    this.attempt++;
    const delay = base / 2 + Math.random() * (base / 2);
    this.timers.reconnect = setTimeout(() => this.open(), delay);
  }

  startPing() {
    this.stopPing();
    this.timers.ping = setInterval(() => {
      if (Date.now() - this.lastHeard > this.opts.deadAfterMs) {
        this.teardown(4000, "no answer");
        this.setState("closed");
        this.scheduleReconnect();
        return;
      }
      this.send({ action: "ping" });
    }, this.opts.pingIntervalMs);
  }

  stopPing() {
    clearInterval(this.timers.ping);
  }

  teardown(code, reason) {
    this.stopPing();
    if (this.es) {
      this.es.close();
      this.es = null;
    }
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(code, reason);
      } catch {
        /* already closed */
      }
    }
  }
}

/**
 * tanstackInvalidator turns walcast events into TanStack Query
 * invalidations, the way the app's frontend does: cache_invalidate →
 * the resource's key, message_created → the project's messages key.
 *
 *   client.on("event", tanstackInvalidator(queryClient));
 *   client.on("resync", ({ projectId }) => queryClient.invalidateQueries({ queryKey: ["projects", projectId] }));
 */
export function tanstackInvalidator(queryClient, keys = {}) {
  const k = {
    resource: (resource, ev) => (resource === "message" ? ["messages", ev.project_id] : [resource + "s", ev.project_id]),
    messages: (projectId) => ["messages", projectId],
    ...keys,
  };
  return (ev) => {
    if (ev.type === "cache_invalidate") {
      queryClient.invalidateQueries({ queryKey: k.resource(ev.resource, ev) });
    } else if (ev.type === "message_created") {
      queryClient.invalidateQueries({ queryKey: k.messages(ev.project_id) });
    }
  };
}
