package wal

import "time"

// heldTxn is a transaction the hub has taken but whose WAL the slot still
// keeps, so that a restart replays it and rebuilds the hub's history.
type heldTxn struct {
	// start is the transaction's first WAL position: replaying it needs
	// the WAL from there on; end is where confirming it moves the slot.
	start, end uint64
	at         time.Time
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
//
// Transactions that follow each other closely are kept as one entry, its
// start and time those of the first: one entry per transaction grew to
// millions (hundreds of MB) at 15k transactions/s over a five-minute
// window, and shifting them was a tenth of the reader's CPU. A merged
// entry spans at most a thousandth of the window's age and a 64th of its
// bytes, and is released when its first transaction is, so the later ones
// are confirmed at most that much early: the window shrinks by that
// slack and never grows past its bounds.
func (c *checkpointer) delivered(start, commit, end uint64, at time.Time) {
	if start == 0 || start > commit {
		start = commit
	}
	if n := len(c.held); n > 0 {
		last := &c.held[n-1]
		if at.Sub(last.at) < c.maxAge/1000 && end >= last.start && end-last.start <= c.maxBytes/64 {
			last.end = end
			return
		}
	}
	c.held = append(c.held, heldTxn{start: start, end: end, at: at})
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
		// Re-sliced, not shifted: append reallocates (copying only what
		// is still held) when it needs room.
		clear(c.held[:n])
		c.held = c.held[n:]
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
