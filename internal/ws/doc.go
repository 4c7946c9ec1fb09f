// Package ws speaks the socket protocol of docs/protocol.md §1 over
// coder/websocket: token check on upgrade, subscribe/unsubscribe/ping
// frames, membership checks, server pings, and the close codes 1001 (going
// away), 1009 (frame too big), 4001 (token expired) and 4008 (slow consumer).
// It is thin over the hub, which owns subscriptions and ordering.
//
// # Concurrency model
//
// Each socket has two goroutines: the handler's, which reads and answers
// client frames in order, and a writer that drains the client's hub queue
// with a timeout on every write. Pings run on a third, short-lived loop
// because a ping waits for its pong. All control answers (pong, error,
// unsubscribed) go through the hub queue, so they stay in order with events.
//
// # Lifecycle
//
// Server.ServeHTTP runs a socket until the client leaves, the socket fails,
// or Shutdown closes every socket with 1001 and waits for them.
package ws
