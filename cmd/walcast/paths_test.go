package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestSocketAtTheRootPath: the app's existing frontend connects to
// wss://<host>?token=… (the root path, not /ws): that works unchanged,
// while a plain GET of / is still 404.
func TestSocketAtTheRootPath(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, strings.Replace(in.base, "http", "ws", 1)+"?token="+token(t, bob, time.Hour), nil)
	if err != nil {
		t.Fatalf("dial the root path: %v", err)
	}
	c := newClient(t, conn)
	c.subscribe(project)
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'to the root')`, project, alice)
	untilFrame(t, c, 10*time.Second, "the message", func(f frame) bool { return f.data()["content"] == "to the root" })

	resp, err := http.Get(in.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET / answered %d", resp.StatusCode)
	}
}
