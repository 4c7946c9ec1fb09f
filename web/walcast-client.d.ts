// Types of walcast-client.js and of every frame of docs/protocol.md.

/** A position: "%016X/%08X" (commit LSN / index); positions sort as strings. */
export type Position = string;

// ---- Server → client frames (a discriminated union on `type`) ----

export interface SubscribedFrame { type: "subscribed"; project_id: string; position: Position; origin?: string }
export interface UnsubscribedFrame { type: "unsubscribed"; project_id: string }
export interface ErrorFrame {
  type: "error";
  code: "bad_request" | "unauthorized" | "forbidden" | "rate_limited" | "internal";
  message: string;
  project_id?: string;
}
export interface ResyncRequiredFrame { type: "resync_required"; project_id: string; position: Position; origin?: string; reason?: string }
export interface SubscriptionRevokedFrame {
  type: "subscription_revoked";
  project_id: string;
  reason: "member_removed" | "project_deleted";
  position: Position;
}
export interface PongFrame { type: "pong" }
export interface TokenRefreshedFrame { type: "token_refreshed"; expires_at: string }
export interface StreamDownFrame { type: "stream_down"; project_id: string; since: string }
export interface StreamUpFrame { type: "stream_up"; project_id: string }

/** A row change, for every resource. */
export interface CacheInvalidateFrame {
  type: "cache_invalidate";
  resource: "project" | "sprint" | "task" | "message" | "project_members" | (string & {});
  id?: string;
  action: "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE" | "BULK";
  project_id: string;
  timestamp: string;
  position: Position;
}

/** The row of a domain event, camelCase (docs/protocol.md §2, B.4). */
export type Row = Record<string, unknown>;

export type DomainEventType =
  | "message_created"
  | "task_created" | "task_updated" | "task_deleted"
  | "sprint_created" | "sprint_updated" | "sprint_deleted"
  | "project_updated"
  | "member_added" | "member_removed";

export interface DomainEventFrame<T extends DomainEventType = DomainEventType, D extends Row = Row> {
  type: T;
  project_id: string;
  position: Position;
  timestamp: string;
  data: D;
}

export interface Message extends Row {
  id: string;
  projectId: string;
  senderId: string;
  content: string;
  messageType: string;
  createdAt: string;
  updatedAt: string;
}
export type MessageCreatedFrame = DomainEventFrame<"message_created", Message>;

/** An event the application published (docs/protocol.md B.8). */
export interface PublishedEventFrame<D extends Row = Row> {
  type: string;
  project_id: string;
  position: Position;
  timestamp: string;
  data: D;
}

export interface BroadcastFrame<P = Record<string, unknown>> {
  type: "broadcast";
  project_id: string;
  event: string;
  from: string;
  payload: P;
}
export interface PresenceEntry<M = Record<string, unknown>> { meta: M; online_at: string }
export interface PresenceStateFrame { type: "presence_state"; project_id: string; users: Record<string, PresenceEntry> }
export interface PresenceDiffFrame {
  type: "presence_diff";
  project_id: string;
  joins: Record<string, PresenceEntry>;
  leaves: Record<string, PresenceEntry>;
}

/** Frames walcast itself defines. */
export type ControlFrame =
  | SubscribedFrame | UnsubscribedFrame | ErrorFrame | ResyncRequiredFrame | SubscriptionRevokedFrame
  | PongFrame | TokenRefreshedFrame | StreamDownFrame | StreamUpFrame
  | BroadcastFrame | PresenceStateFrame | PresenceDiffFrame;

/** Frames that carry a position: what the "event" callback receives.
 * Published events have the application's own types (a plain string), so
 * narrow them by your type names. */
export type EventFrame = CacheInvalidateFrame | DomainEventFrame | PublishedEventFrame;

/** Every frame walcast defines, discriminated on `type` (published events,
 * whose types are the application's, are PublishedEventFrame). */
export type ServerFrame = ControlFrame | CacheInvalidateFrame | DomainEventFrame;

// ---- Client → server frames ----

export type ClientFrame =
  | { action: "subscribe"; project_id: string; since?: Position; origin?: string; presence?: boolean }
  | { action: "unsubscribe"; project_id: string }
  | { action: "ping" }
  | { action: "refresh_token"; token: string }
  | { action: "broadcast"; project_id: string; event: string; payload?: Record<string, unknown>; self?: boolean }
  | { action: "presence"; project_id: string; meta?: Record<string, unknown> };

// ---- The client ----

export type ConnectionState = "idle" | "connecting" | "open" | "closed";

export interface ResumePoint { position: Position; origin: string | null }

export interface ClientOptions {
  /** ws(s)://host/ws (or the root path). */
  url: string;
  token?: string;
  /** A fresh token, asked for before reconnecting after 4001 (token expired). */
  getToken?: () => string | Promise<string>;
  WebSocket?: typeof WebSocket;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  pingIntervalMs?: number;
  deadAfterMs?: number;
  /** Reconnect at once when the tab is shown again or the network comes
   * back (default true; browsers only). */
  wakeOnVisible?: boolean;
  /** "websocket" only, "sse" only, or (default) WebSocket with a fall back
   * to Server-Sent Events when sockets never open. */
  transport?: "websocket" | "sse";
  /** The event stream's URL (default: derived from url, at /sse). */
  sseUrl?: string;
}

export interface Handlers {
  event: (ev: EventFrame) => void;
  resync: (r: { projectId: string; position: Position }) => void;
  revoked: (r: { projectId: string; reason: SubscriptionRevokedFrame["reason"]; position: Position }) => void;
  error: (e: ErrorFrame | { code: "connect"; message: string }) => void;
  status: (s: ConnectionState) => void;
  subscribed: (s: { projectId: string; position: Position }) => void;
  broadcast: (b: { projectId: string; event: string; from: string; payload: Record<string, unknown> }) => void;
  transport: (t: "sse") => void;
  presence: (p: {
    projectId: string;
    users: Record<string, PresenceEntry>;
    joins: Record<string, PresenceEntry>;
    leaves: Record<string, PresenceEntry>;
  }) => void;
}

export declare function comparePositions(a: Position | null | undefined, b: Position | null | undefined): -1 | 0 | 1;

export declare class WalcastClient {
  constructor(opts: ClientOptions);
  readonly state: ConnectionState;
  /** The transport in use: Server-Sent Events once WebSockets proved blocked. */
  readonly transport: "websocket" | "sse";
  on<K extends keyof Handlers>(type: K, fn: Handlers[K]): () => void;
  connect(): void;
  subscribe(projectId: string, since?: Position | ResumePoint | null): void;
  unsubscribe(projectId: string): void;
  setToken(token: string): void;
  pause(): void;
  resume(): void;
  close(): void;
  positions(): Record<string, Position>;
  resumePoints(): Record<string, ResumePoint>;
  trackPresence(projectId: string, meta?: Record<string, unknown> | null): void;
  presenceOf(projectId: string): Record<string, PresenceEntry>;
  broadcast(projectId: string, event: string, payload?: Record<string, unknown>, opts?: { self?: boolean }): boolean;
  /**
   * Subscribes, waits until walcast confirms (subscribed: every later
   * change will arrive), then runs the initial fetch: no write that commits
   * between the fetch and the subscription is missed.
   */
  subscribeThenLoad<T>(projectId: string, load: () => Promise<T>): Promise<T>;
}

/** The plain invalidator of earlier versions (see ./tanstack for more). */
export declare function tanstackInvalidator(
  queryClient: { invalidateQueries(filters: { queryKey: readonly unknown[] }): unknown },
  keys?: {
    resource?: (resource: string, ev: CacheInvalidateFrame) => readonly unknown[];
    messages?: (projectId: string) => readonly unknown[];
  },
): (ev: EventFrame) => void;
