// Package events turns committed transactions read from the WAL into the wire
// events of the walcast protocol (docs/protocol.md §2).
//
// It is pure: no I/O, no goroutines, no clock. The wal package produces Txn
// values; a Mapper, built from the table mapping in config, turns each Txn into
// an ordered slice of Event values whose Payload is the exact JSON frame every
// subscriber of the project receives, marshaled once.
//
// Positions (Position) are derived from the WAL alone: the transaction's commit
// LSN and the event's index within the events of that transaction, so the same
// change has the same position after a restart.
//
// Concurrency model: Txn, Change and Event are values; a Mapper is safe for
// concurrent use once built (its state is read-only).
package events
