import type { ReactNode } from "react";
import type { ClientOptions, ConnectionState, EventFrame, PresenceEntry, WalcastClient } from "./walcast-client.js";

export declare function WalcastProvider(props: { client?: WalcastClient; options?: ClientOptions; children?: ReactNode }): ReactNode;
export declare function useWalcast(): WalcastClient;
export declare function useConnectionState(): ConnectionState;
export declare function useProjectEvents(
  projectId: string | null | undefined,
  handler: (ev: EventFrame | { type: "resync_required"; project_id: string; position: string }) => void,
): void;
export declare function usePresence(projectId: string | null | undefined, meta?: Record<string, unknown> | null): Record<string, PresenceEntry>;
export declare function useBroadcast<P = Record<string, unknown>>(
  projectId: string | null | undefined,
  event: string,
  onReceive?: (b: { from: string; payload: P }) => void,
): [send: (payload?: P) => boolean, last: { from: string; payload: P } | null];
