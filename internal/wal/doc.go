// Package wal owns the logical replication connection: it creates the
// publication and the permanent pgoutput slot when they are missing, checks
// wal_level and replica identities at start, streams pgoutput (protocol 1),
// decodes it into committed events.Txn values with typed column values, and
// hands each whole transaction to a Sink.
//
// # Confirmed position
//
// The slot's confirmed position moves only past transactions the sink has
// taken, and trails them by a window bounded in age and WAL bytes
// (Config.HoldBackAge, Config.HoldBackBytes), so that after a crash the slot
// replays the window and the hub's history is rebuilt with the same
// positions. Routine standby status updates report write = received and an
// invalid flush position; a valid flush is sent only to advance the slot.
// A walsender shuts down only when the client's reported flush (or, if
// invalid, write) position reaches what it sent, so holding the flush back
// in every update would make PostgreSQL's fast shutdown hang.
//
// # Concurrency model
//
// Reader.Run is one goroutine: it receives, decodes, calls the sink and
// sends status updates in turn, so the sink sees transactions strictly in
// commit order. Live, ConfirmedLSN and ReceivedLSN may be read from any
// goroutine. Monitor polls the slot's statistics on its own goroutine.
//
// # Lifecycle
//
// NewReader starts nothing. Run connects, streams, and on any error
// reconnects with jittered exponential backoff; transactions the sink already
// took are skipped when the server replays them. When ctx ends Run sends one
// last status update and closes the connection.
package wal
