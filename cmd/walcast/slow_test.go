package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestSlowConsumerIsClosedWith4008: a socket that stops reading overflows
// its queue and is closed with 4008 after what was already written, while
// a healthy socket on the same project receives every frame.
func TestSlowConsumerIsClosedWith4008(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	env["WALCAST_QUEUE_SIZE"] = "256"
	env["WALCAST_HISTORY_SIZE"] = "20000"
	env["WALCAST_BULK_THRESHOLD"] = "0"
	env["WALCAST_LOG_LEVEL"] = "info"
	in := start(t, db, env)

	healthy := dial(t, in, alice)
	healthy.subscribe(project)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, _, err := websocket.Dial(ctx, strings.Replace(in.base, "http", "ws", 1)+"/ws?token="+token(t, bob, time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.CloseNow()
	raw.SetReadLimit(1 << 20)
	if err := raw.Write(ctx, websocket.MessageText, []byte(`{"action":"subscribe","project_id":"`+project+`"}`)); err != nil {
		t.Fatal(err)
	}
	// The slow socket reads nothing from here on.

	// Transactions of 50 rows (100 frames, within the queue) that a reading
	// client keeps up with, ~16 MB in all: more than the slow socket's
	// kernel buffers and queue can hold.
	const batches, rows = 160, 50
	got := 0
	deadline := time.Now().Add(40 * time.Second)
	for b := 1; b <= batches; b++ {
		db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) SELECT $1, $2, repeat('x', 2000) FROM generate_series(1, $3)`, project, alice, rows)
		for got < 2*rows*b {
			f, err := healthy.tryRead(time.Until(deadline))
			if err != nil {
				t.Fatalf("healthy client got %d of %d frames: %v", got, 2*rows*b, err)
			}
			if f.str("type") == "cache_invalidate" || f.str("type") == "message_created" {
				got++
			}
		}
	}

	// Now the slow client reads: what was written, then the 4008 close.
	var closeErr error
	last, read := "", 0
	for i := 0; i < 3*rows*batches; i++ {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, b, err := raw.Read(rctx)
		cancel()
		if err != nil {
			closeErr = err
			break
		}
		var f frame
		_ = json.Unmarshal(b, &f)
		if f.str("type") == "message_created" || f.str("type") == "cache_invalidate" {
			if f.str("position") <= last {
				t.Fatalf("slow client: %s after %s", f.str("position"), last)
			}
			last = f.str("position")
			read++
		}
	}
	if status := websocket.CloseStatus(closeErr); status != 4008 {
		t.Fatalf("slow client closed with %v (%v), want 4008", status, closeErr)
	}
	var ce websocket.CloseError
	if !errors.As(closeErr, &ce) || ce.Reason != "slow consumer" {
		t.Fatalf("close reason: %v", closeErr)
	}
	if !strings.Contains(scrape(t, in.base), "walcast_slow_consumer_closes_total 1") {
		t.Error("walcast_slow_consumer_closes_total did not count the close")
	}
	// The slow client reconnects and resumes from the last position it
	// read: it gets exactly the rest.
	if read == 0 || read >= 2*rows*batches {
		t.Fatalf("slow client read %d of %d frames before the close", read, 2*rows*batches)
	}
	again := dial(t, in, bob)
	again.send(map[string]string{"action": "subscribe", "project_id": project, "since": last})
	for read < 2*rows*batches {
		f := again.read(10 * time.Second)
		if f.str("type") == "subscribed" {
			t.Fatalf("subscribed after %d of %d frames", read, 2*rows*batches)
		}
		if f.str("position") <= last {
			t.Fatalf("resumed: %s after %s", f.str("position"), last)
		}
		last = f.str("position")
		read++
	}
	if f := again.read(5 * time.Second); f.str("type") != "subscribed" {
		t.Fatalf("after the replay: %v", f)
	}

	// The healthy client is still served.
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'still here')`, project, alice)
	healthy.read(5 * time.Second)
	if f := healthy.read(5 * time.Second); f.data()["content"] != "still here" {
		t.Fatalf("healthy after: %v", f)
	}
}
