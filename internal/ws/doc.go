// Package ws speaks the socket protocol of docs/protocol.md §1 over
// coder/websocket: token check on upgrade, subscribe/unsubscribe/ping
// frames, membership checks, server pings, and the close codes 1001 (going
// away), 1009 (frame too big), 4001 (token expired) and 4008 (slow consumer).
// It is thin over the hub, which owns subscriptions and ordering.
//
// # Concurrency model
//
// Each socket has two goroutines: the handler's, which reads and answers
// client frames in order, and a writer that acts on the socket's events
// (pings, token expiry, shutdown, a 4008) and writes whatever would block.
// Queued frames are normally written by one of a few write workers (one
// per CPU by default, websocket.write_workers): the hub tells the
// socket's worker, which writes each socket's frames with one write that
// does not block, and hands a socket whose buffer is full to its own
// writer. Whoever writes holds the socket's write lock, so frames keep
// their order. Pings wait for their pong on a short-lived goroutine. All
// control answers (pong, error, unsubscribed) go through the hub queue,
// so they stay in order with events.
//
// # Lifecycle
//
// Server.ServeHTTP runs a socket until the client leaves, the socket fails,
// or Shutdown closes every socket with 1001 and waits for them.
package ws
