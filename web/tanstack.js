// tanstack.js — walcast events into TanStack Query's cache (query-core 5,
// so React, Vue, Solid and Svelte Query alike).
//
//   import { QueryClient } from "@tanstack/query-core";
//   import { connectQueryClient } from "@walcast/client/tanstack";
//   const stop = connectQueryClient(walcast, queryClient, { appendMessages: true });
//
// Defaults follow the app's query keys (the bug report's messageKeys):
//   messages of a project     ["messages", projectId]
//   any other resource        [resource + "s", projectId]  (tasks, sprints, …)
//   everything of a project   ["projects", projectId]      (resync_required)

/** The app's query keys; replace any of them. */
export const defaultKeys = {
  messages: (projectId) => ["messages", projectId],
  resource: (resource, projectId) => (resource === "message" ? ["messages", projectId] : [resource + "s", projectId]),
  project: (projectId) => ["projects", projectId],
};

/**
 * Keeps queryClient in step with walcast: a cache_invalidate invalidates
 * its resource's queries of the project (a BULK one too: the whole
 * resource), a resync_required invalidates everything of the project
 * (keys.project, and every resource key), and, with appendMessages, a
 * message_created is appended to the cached list (setQueryData) instead of
 * a refetch. Invalidations that arrive together (in the same task, e.g.
 * one frame's cache_invalidate and its domain event, or a transaction's
 * events) are batched: each key once.
 *
 * @returns a function that stops it.
 */
export function connectQueryClient(walcast, queryClient, options = {}) {
  const keys = { ...defaultKeys, ...(options.keys || {}) };
  const resources = options.resources || ["project", "sprint", "task", "message", "project_members"];
  const pending = new Map(); // JSON key -> key
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    const batch = [...pending.values()];
    pending.clear();
    for (const queryKey of batch) queryClient.invalidateQueries({ queryKey });
  };
  const invalidate = (queryKey) => {
    pending.set(JSON.stringify(queryKey), queryKey);
    if (!scheduled) {
      scheduled = true;
      queueMicrotask(flush);
    }
  };
  const appended = new Set(); // message ids put in the cache by setQueryData

  const offEvent = walcast.on("event", (ev) => {
    if (ev.type === "message_created" && options.appendMessages) {
      const key = keys.messages(ev.project_id);
      const row = ev.data;
      let applied = false;
      queryClient.setQueryData(key, (old) => {
        if (!Array.isArray(old)) return old; // nothing cached (or another shape): refetch instead
        applied = true;
        if (old.some((m) => m && m.id === row.id)) return old;
        return [...old, row];
      });
      if (applied) appended.add(row.id);
      else invalidate(key);
      return;
    }
    if (ev.type === "cache_invalidate") {
      if (options.appendMessages && ev.resource === "message" && ev.action === "INSERT") {
        return; // its message_created follows in the same transaction
      }
      invalidate(keys.resource(ev.resource, ev.project_id));
      return;
    }
    if (ev.type === "message_created") invalidate(keys.messages(ev.project_id));
  });
  const offResync = walcast.on("resync", ({ projectId }) => {
    invalidate(keys.project(projectId));
    for (const r of resources) invalidate(keys.resource(r, projectId));
  });
  const offRevoked = walcast.on("revoked", ({ projectId }) => {
    // Access ended: what is cached of the project must not be shown.
    queryClient.removeQueries({ queryKey: keys.project(projectId) });
    for (const r of resources) queryClient.removeQueries({ queryKey: keys.resource(r, projectId) });
  });
  return () => {
    offEvent();
    offResync();
    offRevoked();
  };
}
