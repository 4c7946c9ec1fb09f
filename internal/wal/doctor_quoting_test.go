package wal

import (
	"context"
	"strings"
	"testing"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/pgtest"
)

// TestDoctorFixesRunAsPrinted (found by an attack: the fixes named
// mixed-case tables unquoted, and failed or hit another table): a
// mixed-case schema, table and publication; every SQL fix Doctor prints
// runs as printed, and then Doctor finds nothing more to fix.
func TestDoctorFixesRunAsPrinted(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	db.Exec(t, `CREATE SCHEMA "App"`)
	db.Exec(t, `CREATE TABLE "App"."Tasks" (id uuid PRIMARY KEY, project_id uuid)`)
	db.Exec(t, `CREATE TABLE app_tasks_decoy (id int)`)
	tables := []events.Table{{Schema: "App", Name: "Tasks", Resource: "task", ProjectIDColumn: "project_id"}}
	db.Exec(t, `CREATE PUBLICATION "Pub" FOR TABLE "App"."Tasks" WITH (publish = 'insert')`)
	f, err := Doctor(ctx, db.Pool, "Pub", "walcast_q", tables)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range f {
		t.Logf("%s", x)
		if x.Fix == "" || strings.HasPrefix(x.Fix, "set ") || strings.HasPrefix(x.Fix, "raise") {
			continue
		}
		sql := strings.TrimSuffix(strings.TrimSpace(x.Fix), ";")
		if _, err := db.Pool.Exec(ctx, sql); err != nil {
			t.Errorf("the printed fix fails: %s: %v", sql, err)
		}
	}
	f, _ = Doctor(ctx, db.Pool, "Pub", "walcast_q", tables)
	if err := Errors(f); err != nil {
		t.Fatalf("after the printed fixes: %v", err)
	}
	// A publication lacking the table: its printed fix adds that table.
	db.Exec(t, `CREATE PUBLICATION "Pub2" FOR TABLE app_tasks_decoy`)
	f, _ = Doctor(ctx, db.Pool, "Pub2", "walcast_q", tables)
	for _, x := range f {
		t.Logf("%s", x)
		if strings.HasPrefix(x.Fix, "ALTER PUBLICATION") {
			if _, err := db.Pool.Exec(ctx, strings.TrimSuffix(x.Fix, ";")); err != nil {
				t.Errorf("the printed fix fails: %s: %v", x.Fix, err)
			}
		}
	}
	if f, _ = Doctor(ctx, db.Pool, "Pub2", "walcast_q", tables); Errors(f) != nil {
		t.Fatalf("after the printed fix: %v", Errors(f))
	}
}
