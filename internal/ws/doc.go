// Package ws speaks the socket protocol of docs/protocol.md §1 over
// coder/websocket: token check on upgrade, subscribe/unsubscribe/ping
// frames, membership checks, server pings, and the close codes 1001 (going
// away), 1009 (frame too big), 4001 (token expired) and 4008 (slow consumer).
// It is thin over the hub, which owns subscriptions and ordering.
//
// # Concurrency model
//
// ServeHTTP checks the token and admission, upgrades, and returns: each
// socket then runs on a goroutine of its own (the handler's goroutine has
// grown a deep stack serving the request, and at ten thousand sockets
// those stacks would be most of the memory), which reads and answers
// client frames in order, and one writer goroutine that acts on the
// socket's events (pings, token expiry, shutdown, a flood, a 4008) and
// writes whatever would block. Queued frames are normally written by one
// of a few write workers (one per CPU by default, websocket.write_workers)
// that Server.Run drives: the hub tells the socket's worker, which moves
// each socket's frames into its buffer and flushes it with a write that
// does not block; only the socket's own writer ever waits on the network.
// Frames keep their order because one buffer holds them, and a frame is
// never split between writers. Pings wait for their pong on short-lived
// goroutines the socket waits for. Control answers (pong, error,
// unsubscribed) go through the hub queue, so they stay in order with
// events.
//
// # Lifecycle
//
// Run drives the write workers; ServeHTTP runs a socket until the client
// leaves, the socket fails, or Shutdown closes every socket with 1001 and
// waits for them (and then Run returns).
package ws
