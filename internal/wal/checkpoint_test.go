package wal

import (
	"testing"
	"time"
)

func TestCheckpointerWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type txn struct{ start, commit, end uint64 }
	type step struct {
		deliver       *txn // delivered before the target is asked
		now           time.Duration
		head, openTxn uint64
		want          uint64
	}
	cases := []struct {
		name     string
		maxAge   time.Duration
		maxBytes uint64
		steps    []step
	}{
		{"no window confirms at once", 0, 0, []step{
			{deliver: &txn{commit: 100, end: 120}, head: 120, want: 120},
			{head: 500, want: 500},               // nothing held: up to what was received
			{head: 900, openTxn: 600, want: 600}, // but not past an open transaction
		}},
		{"age holds back", time.Minute, 1 << 30, []step{
			{deliver: &txn{commit: 100, end: 120}, head: 120, want: 0},
			{deliver: &txn{commit: 130, end: 150}, now: 30 * time.Second, head: 150, want: 0},
			{now: 61 * time.Second, head: 150, want: 120},
			{now: 91 * time.Second, head: 2000, want: 2000},
		}},
		{"bytes bound forces the position forward", time.Hour, 100, []step{
			{deliver: &txn{start: 110, commit: 115, end: 120}, head: 120, want: 0},
			{deliver: &txn{start: 140, commit: 150, end: 160}, head: 200, want: 0},
			{head: 211, want: 120},   // 211-110 > 100
			{head: 1000, want: 1000}, // both out: nothing held
		}},
		{"a transaction larger than the bound is not held", time.Hour, 100, []step{
			{deliver: &txn{start: 100, commit: 390, end: 400}, head: 400, want: 400},
		}},
		{"never moves back", 0, 0, []step{
			{head: 500, want: 500},
			{head: 400, want: 500},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cp := checkpointer{maxAge: c.maxAge, maxBytes: c.maxBytes}
			for i, s := range c.steps {
				now := t0.Add(s.now)
				if s.deliver != nil {
					cp.delivered(s.deliver.start, s.deliver.commit, s.deliver.end, now)
				}
				if got := cp.target(now, s.head, s.openTxn); got != s.want {
					t.Fatalf("step %d: target %d, want %d", i, got, s.want)
				}
			}
		})
	}
}

// Transactions close together share one entry, released when its first
// transaction's time is up; the bounds hold for every one of them.
func TestCheckpointerMergesCloseTransactions(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cp := checkpointer{maxAge: 5 * time.Minute, maxBytes: 64 << 20}
	// 15,000 transactions a second for 2 s, 200 bytes of WAL each.
	var lsn uint64 = 1000
	for i := range 30000 {
		at := t0.Add(time.Duration(i) * time.Second / 15000)
		cp.delivered(lsn, lsn+150, lsn+200, at)
		lsn += 200
	}
	if n := len(cp.held); n > 30000/1000*2+10 {
		t.Fatalf("%d entries held for 30,000 transactions in 2 s", n)
	}
	firstEnd := cp.held[0].end
	if got := cp.target(t0.Add(5*time.Minute-time.Millisecond), lsn, 0); got != 0 {
		t.Fatalf("confirmed %d before the first transaction's time was up", got)
	}
	// At 5 min the first entry is released: up to its last transaction,
	// which is at most maxAge/1000 (300 ms) younger than its first.
	got := cp.target(t0.Add(5*time.Minute), lsn, 0)
	if got != firstEnd || got == 0 {
		t.Fatalf("target %d, want the first entry's end %d", got, firstEnd)
	}
	if span := (got - 1000) / 200; span > 15000*3/10+1 {
		t.Fatalf("released %d transactions, more than 300 ms of them", span)
	}
	// Never more than maxBytes kept: an entry spans at most maxBytes/64.
	for _, h := range cp.held {
		if h.end-h.start > cp.maxBytes/64 {
			t.Fatalf("entry spans %d bytes", h.end-h.start)
		}
	}
	if got := cp.target(t0.Add(6*time.Minute), lsn, 0); got != lsn {
		t.Fatalf("after the window: target %d, want %d", got, lsn)
	}
}

// TestCheckpointerAgesFromCommit: a held transaction is aged from its
// commit time (the reader passes it), so one replayed after a restart is
// released when its window, counted from the commit, has passed, not a
// whole window after the restart: any number of restarts cannot hold the
// slot back longer than the window.
func TestCheckpointerAgesFromCommit(t *testing.T) {
	commit := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := checkpointer{maxAge: time.Minute, maxBytes: 1 << 30}
	// Replayed by a process that started 50 s after the commit.
	restart := commit.Add(50 * time.Second)
	c.delivered(100, 100, 120, commit)
	if got := c.target(restart, 120, 0); got != 0 {
		t.Fatalf("released %d before the window passed", got)
	}
	if got := c.target(commit.Add(61*time.Second), 120, 0); got != 120 {
		t.Fatalf("held %d past the window counted from the commit", got)
	}
}
