package main

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/eventually"
)

// TestResumeRightAfterKillWithAFullWindow: 20,000 messages sit in the
// hold-back window when walcast is killed, and 3,000 more are committed
// while it is down; restarted, it replays all of them while five clients
// resume with the last position each saw. No client is closed as slow
// (6,000 frames of history it has not seen, far over its queue of 1,024),
// none gets resync_required, and each gets exactly what it missed, once,
// in order.
func TestResumeRightAfterKillWithAFullWindow(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	env["WALCAST_HOLD_BACK_AGE"] = "1h"
	env["WALCAST_HISTORY_SIZE"] = "50000"
	env["WALCAST_LOG_LEVEL"] = "warn"
	p := startProcess(t, env)

	const clients = 5
	last := make([]string, clients)
	read := make([]atomic.Int64, clients)
	var wg sync.WaitGroup
	for i := range clients {
		c := dial(t, &instance{base: p.base}, alice)
		c.subscribe(project)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 40_000; n++ { // a cache_invalidate and a message_created each
				f, err := c.tryRead(30 * time.Second)
				if err != nil {
					t.Errorf("client %d at frame %d: %v", i, n, err)
					return
				}
				last[i] = f.str("position")
				read[i].Add(1)
			}
		}()
	}
	// Written at the pace the clients read (the window filling is on
	// trial here, not the queue bound).
	for k := range 40 { // 500 rows each: not over the bulk threshold
		db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) SELECT $1, $2, 'windowed ' || i FROM generate_series(1, 500) i`, project, alice)
		waitFor(t, 30*time.Second, "clients read the batch", func() bool {
			for i := range read {
				if read[i].Load() < int64(1000*(k+1)) && !t.Failed() {
					return false
				}
			}
			return true
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	p.kill(syscall.SIGKILL)
	for range 30 {
		db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) SELECT $1, $2, 'down ' || i FROM generate_series(1, 100) i`, project, alice)
	}
	p = startProcess(t, env)
	resumed := make([]*client, clients)
	for i := range clients {
		c := dial(t, &instance{base: p.base}, alice)
		c.send(map[string]string{"action": "subscribe", "project_id": project, "since": last[i]})
		resumed[i] = c
	}
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) SELECT $1, $2, 'after ' || i FROM generate_series(1, 5) i`, project, alice)
	for i, c := range resumed {
		got, prev := 0, last[i]
		for got < 2*(3000+5) {
			f, err := c.tryRead(20 * time.Second)
			if err != nil {
				t.Fatalf("client %d after %d frames: %v", i, got, err)
			}
			switch f.str("type") {
			case "subscribed", "stream_up":
				continue
			case "resync_required":
				t.Fatalf("client %d: resync_required inside the window", i)
			case "message_created":
				if content, _ := f.data()["content"].(string); !strings.HasPrefix(content, "down ") && !strings.HasPrefix(content, "after ") {
					t.Fatalf("client %d: replayed %q again", i, content)
				}
			}
			if p := f.str("position"); p <= prev {
				t.Fatalf("client %d: %s at or before %s (its since %s)", i, p, prev, last[i])
			} else {
				prev = p
			}
			got++
		}
		c.expectQuiet(200 * time.Millisecond)
	}
}

// TestRestartsDoNotExtendTheWindow: the hold-back window is counted from
// each transaction's commit, so restarting walcast twice within it does not
// hold the slot back past the window's age.
func TestRestartsDoNotExtendTheWindow(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	env["WALCAST_HOLD_BACK_AGE"] = "4s"
	env["WALCAST_LOG_LEVEL"] = "warn"
	p := startProcess(t, env)
	c := dial(t, &instance{base: p.base}, alice)
	c.subscribe(project)
	committed := time.Now()
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'held')`, project, alice)
	// While the transaction is held the slot stays at or before its commit
	// record; released, it moves past it. (Not the server's WAL end: other
	// databases' WAL reaches the slot only with the walsender's keepalives.)
	f := c.read(5 * time.Second)
	pos, err := events.ParsePosition(f.str("position"))
	if err != nil {
		t.Fatalf("event %v: %v", f, err)
	}
	commitLSN := pglogrepl.LSN(pos.LSN)
	for range 2 {
		time.Sleep(2500 * time.Millisecond) // within the window: the transaction is held
		p.kill(syscall.SIGKILL)
		p = startProcess(t, env)
	}
	confirmed := func() pglogrepl.LSN {
		var s string
		if err := db.Pool.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, env["WALCAST_SLOT_NAME"]).Scan(&s); err != nil {
			t.Fatal(err)
		}
		l, _ := pglogrepl.ParseLSN(s)
		return l
	}
	// 4 s after the commit plus a status interval; restarted clocks would
	// hold it until 4 s after the last restart (9 s after the commit).
	if !eventually.Poll(time.Until(committed.Add(7*time.Second)), func() bool { return confirmed() > commitLSN }) {
		t.Fatalf("slot still at %s, at or before the commit at %s, %s after it", confirmed(), commitLSN, time.Since(committed).Round(time.Millisecond))
	}
}
