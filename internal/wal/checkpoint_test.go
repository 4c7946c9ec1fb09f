package wal

import (
	"testing"
	"time"
)

func TestCheckpointerWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		deliver       *heldTxn // delivered before the target is asked
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
			{deliver: &heldTxn{commit: 100, end: 120}, head: 120, want: 120},
			{head: 500, want: 500},               // nothing held: up to what was received
			{head: 900, openTxn: 600, want: 600}, // but not past an open transaction
		}},
		{"age holds back", time.Minute, 1 << 30, []step{
			{deliver: &heldTxn{commit: 100, end: 120}, head: 120, want: 0},
			{deliver: &heldTxn{commit: 130, end: 150}, now: 30 * time.Second, head: 150, want: 0},
			{now: 61 * time.Second, head: 150, want: 120},
			{now: 91 * time.Second, head: 2000, want: 2000},
		}},
		{"bytes bound forces the position forward", time.Hour, 100, []step{
			{deliver: &heldTxn{start: 110, commit: 115, end: 120}, head: 120, want: 0},
			{deliver: &heldTxn{start: 140, commit: 150, end: 160}, head: 200, want: 0},
			{head: 211, want: 120},   // 211-110 > 100
			{head: 1000, want: 1000}, // both out: nothing held
		}},
		{"a transaction larger than the bound is not held", time.Hour, 100, []step{
			{deliver: &heldTxn{start: 100, commit: 390, end: 400}, head: 400, want: 400},
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
