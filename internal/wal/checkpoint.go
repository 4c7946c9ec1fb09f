package wal

import "time"

// heldTxn is a transaction the hub has taken but whose WAL the slot still
// keeps, so that a restart replays it and rebuilds the hub's history.
type heldTxn struct {
	// start is the transaction's first WAL position: replaying it needs
	// the WAL from there on.
	start, commit, end uint64
	at                 time.Time
}

// checkpointer decides how far the slot may be confirmed. Every transaction
// is handed to the hub before it is recorded here, so nothing is confirmed
// before the hub has taken it. Beyond that it holds the confirmed position
// back by a window, bounded by age and by bytes of WAL, so a crash replays
// the window: the bound is what the primary may be made to keep.
//
// A checkpointer is owned by the reader goroutine.
type checkpointer struct {
	maxAge   time.Duration
	maxBytes uint64
	held     []heldTxn
	// confirmable is the highest position the slot may be confirmed to.
	confirmable uint64
}

// delivered records a transaction the hub has taken.
func (c *checkpointer) delivered(start, commit, end uint64, at time.Time) {
	if start == 0 || start > commit {
		start = commit
	}
	c.held = append(c.held, heldTxn{start: start, commit: commit, end: end, at: at})
}

// target returns the position the slot may be confirmed to at now. head is
// the newest WAL position the server reported sending; openTxn is the commit
// LSN of a transaction whose Begin was read but not its Commit (0 if none),
// which must be replayed whole and so bounds the position from above.
func (c *checkpointer) target(now time.Time, head, openTxn uint64) uint64 {
	n := 0
	for _, h := range c.held {
		old := c.maxAge <= 0 || now.Sub(h.at) >= c.maxAge
		// A transaction whose WAL reaches back further than the bound
		// cannot be kept for replay, however new it is.
		big := head > h.start && head-h.start > c.maxBytes
		if !old && !big {
			break
		}
		if h.end > c.confirmable {
			c.confirmable = h.end
		}
		n++
	}
	if n > 0 {
		c.held = append(c.held[:0], c.held[n:]...)
	}
	if len(c.held) == 0 {
		// Nothing held: everything the server sent up to head has been
		// handed on, except an open transaction, whose commit record must
		// stay at or past the confirmed position to be replayed.
		safe := head
		if openTxn != 0 && openTxn < safe {
			safe = openTxn
		}
		if safe > c.confirmable {
			c.confirmable = safe
		}
	}
	return c.confirmable
}
