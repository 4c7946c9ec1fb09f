package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/migrate"
	"github.com/walcast/walcast/internal/pgtest"
	"github.com/walcast/walcast/migrations"
)

// TestPostgresFastShutdownWhileHoldingAWindow: walcast holds the slot's
// confirmed position back (hold-back window), yet `pg_ctl stop -m fast`
// completes promptly, because routine status updates report the flush
// position as invalid; when PostgreSQL comes back walcast reconnects, and
// clients keep their sockets and get the next change exactly once.
func TestPostgresFastShutdownWhileHoldingAWindow(t *testing.T) {
	t.Parallel()
	cluster := newClusterDB(t)
	ctx := context.Background()

	env := map[string]string{
		"WALCAST_DATABASE_URL":  cluster.URL,
		"WALCAST_JWT_SECRET":    testSecret,
		"WALCAST_HTTP_ADDR":     freeAddr(t),
		"WALCAST_CONFIG":        "../../config/walcast.yaml",
		"WALCAST_HOLD_BACK_AGE": "1h",
		"WALCAST_DOWN_NOTICE":   "1s",
	}
	in := start(t, nil, env)
	c := dial(t, in, alice)
	c.subscribe(project)
	insert := func(content string) {
		t.Helper()
		conn, err := pgx.Connect(ctx, cluster.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, $3)`, project, alice, content); err != nil {
			t.Fatal(err)
		}
	}
	insert("before shutdown")
	c.read(5 * time.Second)
	if f := c.read(5 * time.Second); f.data()["content"] != "before shutdown" {
		t.Fatalf("got %v", f)
	}

	// The window is held: the slot is confirmed before that transaction.
	conn, err := pgx.Connect(ctx, cluster.URL)
	if err != nil {
		t.Fatal(err)
	}
	var held bool
	pgtest.StatusRepliesAfter(t, conn, "walcast", time.Now(), 2)
	if err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn < pg_current_wal_lsn() FROM pg_replication_slots WHERE slot_name = 'walcast'`).Scan(&held); err != nil || !held {
		t.Fatalf("window not held (%v)", err)
	}
	conn.Close(ctx)

	took, err := cluster.StopFast(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if took > 5*time.Second {
		t.Fatalf("pg_ctl stop -m fast took %s while walcast held a window", took)
	}
	t.Logf("fast shutdown took %s", took)
	waitFor(t, 10*time.Second, "readyz reports the lost database", func() bool {
		status, _ := doJSON(t, http.MethodGet, in.base+"/readyz", "", "", "")
		return status == http.StatusServiceUnavailable
	})
	// Down past the notice: the open socket is told, not left silent.
	if f := c.read(10 * time.Second); f.str("type") != "stream_down" || f.str("project_id") != project || f.str("since") == "" {
		t.Fatalf("want stream_down, got %v", f)
	}

	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "walcast reconnects", func() bool {
		status, _ := doJSON(t, http.MethodGet, in.base+"/readyz", "", "", "")
		return status == http.StatusOK
	})
	if f := c.read(5 * time.Second); f.str("type") != "stream_up" || f.str("project_id") != project {
		t.Fatalf("want stream_up, got %v", f)
	}
	insert("after restart")
	// The replayed window is not delivered again; the new change is.
	c.read(5 * time.Second)
	if f := c.read(5 * time.Second); f.data()["content"] != "after restart" {
		t.Fatalf("after restart got %v", f)
	}
	c.expectQuiet(300 * time.Millisecond)
}

// TestStartRefusals: walcast stops at start with one clear line when the
// server lacks wal_level=logical, when the publication lacks a table, and
// when a table's replica identity cannot carry a DELETE's project.
func TestStartRefusals(t *testing.T) {
	t.Parallel()
	t.Run("wal_level", func(t *testing.T) {
		cluster := pgtest.NewCluster(t, "wal_level = replica")
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, cluster.URL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := migrate.Apply(ctx, conn, migrate.Set{Name: "schema", FS: migrations.Schema, Dir: "."}); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		env := map[string]string{"WALCAST_DATABASE_URL": cluster.URL, "WALCAST_JWT_SECRET": testSecret, "WALCAST_HTTP_ADDR": freeAddr(t), "WALCAST_CONFIG": "../../config/walcast.yaml"}
		err = run(ctx, []string{"serve"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "wal_level=replica") || !strings.Contains(err.Error(), "wal_level = logical") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("err = %v", err)
		}
	})
	cases := map[string]struct {
		sql  string
		want string
	}{
		"publication lacks a table": {`CREATE PUBLICATION partial FOR TABLE messages`, "publication partial lacks table(s)"},
		"replica identity":          {`ALTER TABLE messages REPLICA IDENTITY DEFAULT`, "public.messages: its replica identity does not carry column project_id"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			db := newDB(t)
			db.Exec(t, c.sql)
			env := baseEnv(t, db)
			if name == "publication lacks a table" {
				env["WALCAST_PUBLICATION_NAME"] = "partial"
			}
			err := run(context.Background(), []string{"serve"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
	t.Run("publication the role may not create", func(t *testing.T) {
		db := newDB(t)
		env := baseEnv(t, db) // as the walcast role, which owns no table
		env["WALCAST_PUBLICATION_NAME"] = "not_yet"
		err := run(context.Background(), []string{"serve"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), `CREATE PUBLICATION "not_yet" FOR TABLE "public"."projects"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("slot of another database names the setting", func(t *testing.T) {
		db, other := newDB(t), newDB(t)
		env := baseEnv(t, db)
		other.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, env["WALCAST_SLOT_NAME"])
		t.Cleanup(func() {
			_, _ = other.Pool.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, env["WALCAST_SLOT_NAME"])
		})
		err := run(context.Background(), []string{"serve"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "another database") || !strings.Contains(err.Error(), "WALCAST_SLOT_NAME") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("port in use leaves no slot", func(t *testing.T) {
		db := newDB(t)
		env := baseEnv(t, db)
		taken, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer taken.Close()
		env["WALCAST_HTTP_ADDR"] = taken.Addr().String()
		err = run(context.Background(), []string{"serve"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "listen on") {
			t.Fatalf("err = %v", err)
		}
		var slots int
		if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, env["WALCAST_SLOT_NAME"]).Scan(&slots); err != nil || slots != 0 {
			t.Fatalf("a refused start left %d slot(s) (%v)", slots, err)
		}
	})
	t.Run("missing setting", func(t *testing.T) {
		err := run(context.Background(), []string{"serve", "--config", "../../config/walcast.yaml"}, func(string) string { return "" }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "database.url (WALCAST_DATABASE_URL) is required") {
			t.Fatalf("err = %v", err)
		}
	})
}
