package publish_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/pgtest"
	"github.com/walcast/walcast/publish"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestExampleAgainstTheDatabase runs the example's handler on a real
// database and reads what it wrote from a logical slot (test_decoding):
// the event follows its transaction's row change, a rolled-back one is
// never there, and a send on the pool is a transaction of its own.
func TestExampleAgainstTheDatabase(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	const (
		user    = "11111111-1111-4111-8111-111111111111"
		project = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
		sprint  = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
	)
	db.Exec(t, `INSERT INTO users (id, email, display_name) VALUES ($1, 'a@x', 'A')`, user)
	db.Exec(t, `INSERT INTO projects (id, name, owner_id) VALUES ($1, 'P', $2)`, project, user)
	db.Exec(t, `INSERT INTO sprints (id, project_id, name) VALUES ($1, $2, 'S')`, sprint, project)
	slot := "publish_" + pgtest.RandomSuffix()
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, slot)
	t.Cleanup(func() { _, _ = db.Pool.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, slot) })

	t.Setenv("DATABASE_URL", db.URL)
	Example()

	// Rolled back: nothing reaches the WAL's readers.
	errRollback := errors.New("roll back")
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if err := publish.Send(ctx, tx, project, "never_seen", nil); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	if err := publish.Send(ctx, db.Pool, project, "subscribed", nil); !errors.Is(err, publish.ErrReservedType) {
		t.Fatalf("a reserved type was sent: %v", err)
	}

	rows, err := db.Pool.Query(ctx, `SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL)`, slot)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	// Each line as a step: BEGIN, COMMIT, the table and action of a row
	// change, the transactionality, prefix and type of a message.
	var steps []string
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case f[0] == "BEGIN" || f[0] == "COMMIT":
			steps = append(steps, f[0])
		case f[0] == "table":
			steps = append(steps, f[1]+" "+f[2])
		case f[0] == "message:":
			typ := l[strings.Index(l, `"type":"`)+8:]
			steps = append(steps, strings.Join(f[1:5], " ")+" "+typ[:strings.IndexByte(typ, '"')])
		}
	}
	got := strings.Join(steps, " | ")
	want := "BEGIN | public.sprints: UPDATE: | transactional: 1 prefix: walcast, sprint_started | COMMIT | " +
		"BEGIN | transactional: 1 prefix: walcast, deploy_finished | COMMIT"
	if got != want {
		t.Fatalf("the WAL holds\n%s\nwant\n%s\n(changes:\n%s)", got, want, strings.Join(lines, "\n"))
	}
}
