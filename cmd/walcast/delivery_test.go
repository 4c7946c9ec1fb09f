package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestResumeWithSince: a client that reconnects with the last position it
// saw gets every event after it, in order, exactly once, then live events;
// a since older than the retained history gets one resync_required.
func TestResumeWithSince(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	env["WALCAST_HISTORY_SIZE"] = "20"
	in := start(t, db, env)

	c := dial(t, in, alice)
	c.subscribe(project)
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'seen')`, project, alice)
	c.read(5 * time.Second)
	seen := c.read(5 * time.Second)
	_ = c.conn.CloseNow()

	for i := 1; i <= 5; i++ {
		db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, $3)`, project, alice, fmt.Sprint("missed ", i))
	}
	// Let the hub take them before resuming: they must come as replay.
	waitFor(t, 5*time.Second, "hub caught up", func() bool {
		_, st := doJSON(t, "GET", in.base+"/api/v1/status", "", "", "")
		return st["history_events"] == float64(12)
	})

	r := dial(t, in, alice)
	r.send(map[string]string{"action": "subscribe", "project_id": project, "since": seen.str("position")})
	last := seen.str("position")
	var got []string
	for {
		f := r.read(5 * time.Second)
		if f.str("type") == "subscribed" {
			if f.str("position") != last {
				t.Fatalf("subscribed at %s, last replayed %s", f.str("position"), last)
			}
			break
		}
		if f.str("position") <= last {
			t.Fatalf("out of order or repeated: %v after %s", f, last)
		}
		last = f.str("position")
		if f.str("type") == "message_created" {
			got = append(got, f.data()["content"].(string))
		}
	}
	if fmt.Sprint(got) != "[missed 1 missed 2 missed 3 missed 4 missed 5]" {
		t.Fatalf("replayed %v", got)
	}
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'live')`, project, alice)
	r.read(5 * time.Second)
	if f := r.read(5 * time.Second); f.data()["content"] != "live" || f.str("position") <= last {
		t.Fatalf("live after replay: %v", f)
	}

	// 20 more events push "seen" out of the 20-event history.
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) SELECT $1, $2, 'filler' FROM generate_series(1, 10)`, project, alice)
	waitFor(t, 5*time.Second, "filler published", func() bool {
		_, st := doJSON(t, "GET", in.base+"/api/v1/status", "", "", "")
		return st["history_events"] == float64(20)
	})
	old := dial(t, in, alice)
	old.send(map[string]string{"action": "subscribe", "project_id": project, "since": seen.str("position")})
	rs := old.read(5 * time.Second)
	sub := old.read(5 * time.Second)
	if rs.str("type") != "resync_required" || sub.str("type") != "subscribed" || rs.str("position") != sub.str("position") {
		t.Fatalf("since outside history: %v then %v", rs, sub)
	}
	if m := scrape(t, in.base); !strings.Contains(m, "walcast_resyncs_sent_total 1") {
		t.Error("walcast_resyncs_sent_total did not count the resync")
	}
}

// TestBulkTransactionsAreCoalesced: more than the threshold of rows of one
// project in one transaction reach sockets as one BULK cache_invalidate per
// resource; a smaller transaction is untouched.
func TestBulkTransactionsAreCoalesced(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	env["WALCAST_BULK_THRESHOLD"] = "10"
	in := start(t, db, env)
	c := dial(t, in, alice)
	c.subscribe(project)

	tx(t, db, func(_ context.Context, q querier) {
		mustExec(t, q, `INSERT INTO messages (project_id, sender_id, content) SELECT $1, $2, 'bulk' FROM generate_series(1, 300)`, project, alice)
		mustExec(t, q, `INSERT INTO tasks (project_id, title) SELECT $1, 't' FROM generate_series(1, 5)`, project)
	})
	m := c.read(5 * time.Second)
	k := c.read(5 * time.Second)
	if m.str("type") != "cache_invalidate" || m.str("action") != "BULK" || m.str("resource") != "message" || m["id"] != nil ||
		k.str("action") != "BULK" || k.str("resource") != "task" {
		t.Fatalf("bulk: %v, %v", m, k)
	}
	c.expectQuiet(300 * time.Millisecond)

	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) SELECT $1, $2, 'small' FROM generate_series(1, 10)`, project, alice)
	for i := 0; i < 20; i++ {
		f := c.read(5 * time.Second)
		if f.str("action") == "BULK" {
			t.Fatalf("10 rows (not more than the threshold) were coalesced: %v", f)
		}
	}
	c.expectQuiet(300 * time.Millisecond)
}
