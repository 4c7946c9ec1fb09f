package main

import (
	"context"
	"os"
	"testing"
)

// TestDemoDataSeedsTheBoardAndChat: make run's demo data applies on the
// schema (again too: it is idempotent) and leaves a board and a chat
// that are not empty.
func TestDemoDataSeedsTheBoardAndChat(t *testing.T) {
	t.Parallel()
	sql, err := os.ReadFile("../../scripts/demo.sql")
	if err != nil {
		t.Fatal(err)
	}
	db := newDB(t)
	db.Exec(t, string(sql))
	db.Exec(t, string(sql))
	var tasks, messages, statuses int
	if err := db.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM tasks WHERE project_id = $1),
		(SELECT count(*) FROM messages WHERE project_id = $1), (SELECT count(DISTINCT status) FROM tasks WHERE project_id = $1)`, project).
		Scan(&tasks, &messages, &statuses); err != nil {
		t.Fatal(err)
	}
	if tasks < 4 || messages < 2 || statuses < 3 {
		t.Fatalf("demo project: %d tasks in %d columns, %d messages", tasks, statuses, messages)
	}
}
