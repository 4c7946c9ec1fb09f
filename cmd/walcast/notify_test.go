package main

import (
	"context"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/migrate"
	"github.com/walcast/walcast/migrations"
)

// TestNotifySource: with source: notify walcast serves the legacy triggers'
// cache_invalidate notifications (messages included) over the same
// protocol, and re-checks membership when a member row is deleted.
func TestNotifySource(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	conn, err := db.Pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = migrate.Apply(context.Background(), conn.Conn(), migrate.Set{Name: "notify", FS: migrations.Notify, Dir: "notify"})
	conn.Release()
	if err != nil {
		t.Fatal(err)
	}
	env := baseEnv(t, db)
	env["WALCAST_SOURCE"] = "notify"
	in := start(t, db, env)
	a, b := dial(t, in, alice), dial(t, in, bob)
	a.subscribe(project)
	b.subscribe(project)

	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'via notify')`, project, alice)
	for _, c := range []*client{a, b} {
		f := c.read(5 * time.Second)
		if f.str("type") != "cache_invalidate" || f.str("resource") != "message" || f.str("action") != "INSERT" || f.str("id") == "" || f.str("position") == "" {
			t.Fatalf("got %v", f)
		}
	}
	db.Exec(t, `DELETE FROM project_members WHERE project_id = $1 AND user_id = $2`, project, bob)
	if f := a.read(5 * time.Second); f.str("resource") != "project_members" || f.str("action") != "DELETE" {
		t.Fatalf("alice: %v", f)
	}
	for {
		f := b.read(5 * time.Second)
		if f.str("type") == "subscription_revoked" {
			if f.str("reason") != "member_removed" {
				t.Fatalf("bob: %v", f)
			}
			break
		}
		if f.str("resource") != "project_members" {
			t.Fatalf("bob before revocation: %v", f)
		}
	}
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'after')`, project, alice)
	a.read(5 * time.Second)
	b.expectQuiet(300 * time.Millisecond)
}
