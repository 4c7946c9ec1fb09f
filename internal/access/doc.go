// Package access decides whether a membership lookup may grant access when
// it races a change of membership that the WAL stream has already brought.
//
// PostgreSQL hands a commit to logical walsenders as soon as its record is
// flushed, before the transaction is visible to other sessions (it first
// waits for synchronous standbys, then leaves the ProcArray). walcast can
// therefore read a removal from the stream and then run a lookup that still
// sees the removed row. Every lookup returns its own MVCC snapshot
// (pg_current_snapshot() in the same statement); the Ledger remembers the
// transactions of recent access transitions; Decide refuses an answer whose
// snapshot does not see the newest transition of its pair. docs/access.md
// explains why this is complete.
//
// Concurrency model: Snapshot, Proof and Decide are values and pure
// functions. A Ledger is not safe for concurrent use; its owner (the hub)
// guards it with the lock under which it publishes transitions.
//
// Dependencies: none.
package access
