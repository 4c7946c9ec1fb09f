// Package cluster carries committed events between walcast replicas through
// NATS JetStream.
//
// Topology: every replica runs the WAL reader, but a logical slot streams
// to one connection at a time, so exactly one replica (the leader) holds
// it; the others retry and take over when it dies. The leader maps each
// committed transaction to events and publishes them to the stream (one
// message per event, subject <prefix>.<project>, message id = position, so
// a transaction republished after a failover is dropped as a duplicate)
// and returns only when JetStream has acknowledged them: the slot is
// confirmed past a transaction only once it is durable in the stream.
// Every replica, the leader included, consumes the stream in order and
// feeds its own hub, so a client gets the same events, with the same
// positions, from any replica, and resumes with since on any of them
// (history is the stream, bounded by its retention).
//
// Concurrency model: Publish is called by the WAL reader's goroutine; Run
// consumes on its own goroutine and calls deliver in stream order.
package cluster
