import type { QueryClient, QueryKey } from "@tanstack/query-core";
import type { WalcastClient } from "./walcast-client.js";

export interface QueryKeys {
  messages(projectId: string): QueryKey;
  resource(resource: string, projectId: string): QueryKey;
  project(projectId: string): QueryKey;
}

export declare const defaultKeys: QueryKeys;

export interface ConnectOptions {
  keys?: Partial<QueryKeys>;
  /** Resources whose keys a resync invalidates (default: the five tables'). */
  resources?: string[];
  /** Append message_created rows to the cached list instead of refetching. */
  appendMessages?: boolean;
}

export declare function connectQueryClient(walcast: WalcastClient, queryClient: QueryClient, options?: ConnectOptions): () => void;
