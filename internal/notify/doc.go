// Package notify is walcast's fallback source for databases where logical
// replication is not allowed: it LISTENs on the channel the legacy
// notify_cache_invalidation() triggers write to (walcast migrate
// --with-notify-triggers) and turns each notification into a
// cache_invalidate event for the hub. It is also the baseline walcast-bench
// compares the WAL source with.
//
// What it cannot do, because NOTIFY carries less than the WAL: no domain
// events (the payload has no row), no positions that survive a restart (a
// restart makes every resume a resync_required), nothing delivered for
// changes committed while walcast was down, and revocations found by asking
// the database again rather than read from the change.
//
// Concurrency model: Run is one goroutine that reads notifications in order
// and publishes each one's event to the hub (and asks the recheck to
// revoke memberships that ended); Live may be read from any goroutine.
package notify
