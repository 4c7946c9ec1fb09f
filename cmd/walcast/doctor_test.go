package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// TestCheckReportsEveryProblemAtOnce: walcast check lists every problem of
// a database with its fix, all at once, and creates nothing; serve refuses
// to start with one message naming all of them (before, each restart found
// the next one).
func TestCheckReportsEveryProblemAtOnce(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	db.Exec(t, `ALTER TABLE messages REPLICA IDENTITY DEFAULT; ALTER TABLE tasks REPLICA IDENTITY DEFAULT;
		ALTER TABLE sprints REPLICA IDENTITY DEFAULT; REVOKE SELECT ON tasks FROM walcast;
		ALTER PUBLICATION `+"walcast_pub"+` DROP TABLE sprints`)
	env := baseEnv(t, db)
	getenv := func(k string) string { return env[k] }

	var out bytes.Buffer
	err := run(context.Background(), []string{"check"}, getenv, &out, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "5 problem(s)") {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"table public.messages: its replica identity does not carry column project_id",
		`ALTER TABLE "public"."messages" REPLICA IDENTITY FULL;`,
		"table public.tasks: its replica identity",
		"table public.sprints: its replica identity",
		"may not read public.tasks", `GRANT SELECT ON "public"."tasks" TO "walcast";`,
		"lacks table(s) public.sprints", `ALTER PUBLICATION "walcast_pub" ADD TABLE "public"."sprints"`,
		"max_slot_wal_keep_size is unlimited",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check's report lacks %q:\n%s", want, out.String())
		}
	}
	var slots int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, env["WALCAST_SLOT_NAME"]).Scan(&slots); err != nil || slots != 0 {
		t.Fatalf("check created %d slot(s) (%v)", slots, err)
	}

	err = run(context.Background(), []string{"serve"}, getenv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "5 problem(s)") || !strings.Contains(err.Error(), "public.sprints") || !strings.Contains(err.Error(), "GRANT SELECT") {
		t.Fatalf("serve: %v", err)
	}

	// Fixed: check says so.
	db.Exec(t, `ALTER TABLE messages REPLICA IDENTITY FULL; ALTER TABLE tasks REPLICA IDENTITY FULL;
		ALTER TABLE sprints REPLICA IDENTITY FULL; GRANT SELECT ON tasks TO walcast;
		ALTER PUBLICATION walcast_pub ADD TABLE sprints`)
	out.Reset()
	if err := run(context.Background(), []string{"check"}, getenv, &out, io.Discard); err != nil || !strings.Contains(out.String(), "ok: walcast can start") {
		t.Fatalf("after the fixes: %v\n%s", err, out.String())
	}
}
