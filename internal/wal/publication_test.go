package wal

import (
	"context"
	"testing"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/pgtest"
)

// TestPublicationIdentity: the identity changes with what can hide
// changes from the stream (a table out of the publication and back, a
// table rebuilt under another id, the publication's actions) and not with
// what cannot (privileges, indexes, a rename undone, statistics): a routine
// GRANT must not make every project resync.
func TestPublicationIdentity(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	tables := events.DefaultTables()
	identity := func() string {
		t.Helper()
		id, err := publicationIdentity(ctx, db.Pool, pgtest.Publication, tables)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	for _, tc := range []struct {
		name    string
		sql     string
		changes bool
	}{
		{"a re-grant", `GRANT SELECT ON messages TO walcast; GRANT USAGE ON SCHEMA public TO PUBLIC`, false},
		{"an index", `CREATE INDEX messages_content ON messages (content)`, false},
		{"statistics", `ANALYZE messages`, false},
		{"a rename undone", `BEGIN; ALTER TABLE messages RENAME TO m2; ALTER TABLE m2 RENAME TO messages; COMMIT`, false},
		{"a schema rename undone", `BEGIN; ALTER SCHEMA public RENAME TO p2; ALTER SCHEMA p2 RENAME TO public; COMMIT`, false},
		{"out of the publication and back", `BEGIN; ALTER PUBLICATION ` + pgtest.Publication + ` DROP TABLE messages; ALTER PUBLICATION ` + pgtest.Publication + ` ADD TABLE messages; COMMIT`, true},
		{"the actions flipped and back", `ALTER PUBLICATION ` + pgtest.Publication + ` SET (publish = 'insert'); ALTER PUBLICATION ` + pgtest.Publication + ` SET (publish = 'insert, update, delete, truncate')`, true},
		{"rebuilt", `BEGIN; CREATE TABLE sprints_new (LIKE sprints INCLUDING ALL); DROP TABLE sprints CASCADE; ALTER TABLE sprints_new RENAME TO sprints; ALTER PUBLICATION ` + pgtest.Publication + ` ADD TABLE sprints; COMMIT`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := identity()
			db.Exec(t, tc.sql)
			if changed := identity() != before; changed != tc.changes {
				t.Fatalf("identity changed: %v, want %v", changed, tc.changes)
			}
		})
	}
}
