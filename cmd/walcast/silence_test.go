package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/pgtest"
)

// The tests of this file each run one of the faults that used to lose
// events silently while a writer commits continuously and clients
// disconnect at random and resume with since and origin. At the end every
// committed change is checked against what each client got: it arrived,
// once and in commit order, or a resync_required covers it.

// committed is one change the writer committed: the event a subscriber of
// project must get (key, e.g. "message_created:<id>") and a lower bound of
// its commit position, the WAL insert position read in its own statement,
// on the cluster (era) it was written to.
type committed struct {
	project string
	key     string
	before  uint64
	era     int
	// unordered: committed beside the writer (by a fault), so its place
	// in the writer's commit order is not known.
	unordered bool
}

// writeOp commits the n-th change on conn and returns what it committed.
type writeOp func(ctx context.Context, conn *pgx.Conn, n int) ([]committed, error)

// steadyWriter runs a writeOp every few milliseconds from one connection
// until stopped; a broken connection is replaced (a change whose commit was
// not acknowledged is not counted: clients may or may not get it).
type steadyWriter struct {
	mu      sync.Mutex
	url     string
	era     int
	rows    []committed
	errs    int
	cancel  context.CancelFunc
	done    chan struct{}
	lastErr error
}

func startSteadyWriter(url string, op writeOp) *steadyWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &steadyWriter{url: url, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		for n := 0; ctx.Err() == nil; n++ {
			w.mu.Lock()
			url, era := w.url, w.era
			w.mu.Unlock()
			if conn == nil || conn.Config().ConnString() != url {
				if conn != nil {
					conn.Close(context.Background())
				}
				var err error
				if conn, err = pgx.Connect(ctx, url); err != nil {
					conn = nil
					w.fail(err)
					time.Sleep(50 * time.Millisecond)
					continue
				}
			}
			rows, err := op(ctx, conn, n)
			w.mu.Lock()
			for i := range rows {
				rows[i].era = era
			}
			w.rows = append(w.rows, rows...)
			w.mu.Unlock()
			if err != nil {
				w.fail(err)
				if conn.IsClosed() {
					conn = nil
				}
				time.Sleep(50 * time.Millisecond)
				continue
			}
			time.Sleep(time.Duration(3+rand.IntN(4)) * time.Millisecond)
		}
	}()
	return w
}

func (w *steadyWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if errors.Is(err, context.Canceled) {
		return
	}
	w.errs++
	w.lastErr = err
}

// moveTo sends the writer to another cluster: what it commits there is of
// the next era.
func (w *steadyWriter) moveTo(url string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.url = url
	w.era++
}

// count is how many changes have been committed so far.
func (w *steadyWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.rows)
}

// waitForMore waits until n more changes are committed.
func (w *steadyWriter) waitForMore(t *testing.T, n int) {
	t.Helper()
	from := w.count()
	waitFor(t, 20*time.Second, fmt.Sprintf("%d more committed changes", n), func() bool { return w.count() >= from+n })
}

func (w *steadyWriter) stop() []committed {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rows
}

// parseLSN reads a pg_lsn; safe to call from a writer goroutine.
func parseLSN(t *testing.T, s string) uint64 {
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Errorf("lsn %q: %v", s, err)
	}
	return uint64(lsn)
}

// insertMessages is a writeOp: one message into one of projects, in turn.
func insertMessages(t *testing.T, projects []string) writeOp {
	return func(ctx context.Context, conn *pgx.Conn, n int) ([]committed, error) {
		p := projects[n%len(projects)]
		var id, lsn string
		err := conn.QueryRow(ctx, `WITH ins AS (INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'steady') RETURNING id)
			SELECT id::text, pg_current_wal_insert_lsn()::text FROM ins`, p, alice).Scan(&id, &lsn)
		if err != nil {
			return nil, err
		}
		return []committed{{project: p, key: "message_created:" + id, before: parseLSN(t, lsn)}}, nil
	}
}

// moveTasks is a writeOp: a task created in from, then moved to to (two
// transactions). from's subscribers get it created, then deleted; to's get
// it updated.
func moveTasks(t *testing.T, from, to string) writeOp {
	return func(ctx context.Context, conn *pgx.Conn, n int) ([]committed, error) {
		var id, lsn string
		err := conn.QueryRow(ctx, `WITH ins AS (INSERT INTO tasks (project_id, title) VALUES ($1, 'moving') RETURNING id)
			SELECT id::text, pg_current_wal_insert_lsn()::text FROM ins`, from).Scan(&id, &lsn)
		if err != nil {
			return nil, err
		}
		rows := []committed{{project: from, key: "task_created:" + id, before: parseLSN(t, lsn)}}
		if err := conn.QueryRow(ctx, `WITH up AS (UPDATE tasks SET project_id = $1 WHERE id = $2 RETURNING id)
			SELECT pg_current_wal_insert_lsn()::text FROM up`, to, id).Scan(&lsn); err != nil {
			return rows, err
		}
		before := parseLSN(t, lsn)
		return append(rows, committed{project: from, key: "task_deleted:" + id, before: before},
			committed{project: to, key: "task_updated:" + id, before: before}), nil
	}
}

// received is one frame a recorder kept.
type received struct {
	key      string // "" for resync_required
	position string
	origin   string // of a resync_required
}

// recorder is a chaosClient that also keeps, per project, every event
// (by key) and resync_required it received, and resumes with the origin.
func newRecorder(user, url string, projects []string) *chaosClient {
	return &chaosClient{user: user, projects: projects, url: url, last: map[string]string{}, got: map[string][]string{},
		log: map[string][]received{}}
}

// eventKey names an event as committed does: its type and row id.
func eventKey(f frame) string {
	switch typ := f.str("type"); typ {
	case "cache_invalidate":
		if f.str("id") == "" {
			return ""
		}
		return typ + ":" + f.str("resource") + ":" + f.str("action") + ":" + f.str("id")
	default:
		if id, ok := f.data()["id"].(string); ok {
			return typ + ":" + id
		}
	}
	return ""
}

// checkCovered calms the clients, waits until each has, for each project,
// got its last committed change or a resync_required after it, and then
// fails for any committed change a client neither got nor was told to
// resync over, for duplicates, and for changes out of commit order. A
// resync_required covers a change when its position is at or after the
// change's lower bound on the same cluster, or when it comes from a later
// cluster (the client refetches everything once it arrives). It returns
// how many changes were covered by a resync rather than delivered.
func checkCovered(t *testing.T, clients []*chaosClient, rows []committed, origins []string) (covered int) {
	t.Helper()
	for _, c := range clients {
		c.mu.Lock()
		c.calm = true
		c.mu.Unlock()
	}
	eraOf := func(origin string) int {
		for i, o := range origins {
			if o == origin {
				return i
			}
		}
		t.Fatalf("resync_required of an unknown origin %q (known: %v)", origin, origins)
		return -1
	}
	covers := func(r received, row committed) bool {
		if r.key != "" {
			return false
		}
		era := eraOf(r.origin)
		if era != row.era {
			return era > row.era
		}
		pos, err := events.ParsePosition(r.position)
		return err == nil && pos.LSN >= row.before
	}
	last := map[string]committed{} // the writer's last change of each project
	for _, row := range rows {
		if !row.unordered {
			last[row.project] = row
		}
	}
	// A client has settled on a project when it has the writer's last
	// change of it and every change the fault made itself (those are out
	// of the writer's order, and the resync that covers them can come
	// after the writer's last change: a publication check runs every
	// second), each delivered or covered by a resync.
	seen := func(c *chaosClient, p string, row committed) bool {
		for _, r := range c.log[p] {
			if r.key == row.key || covers(r, row) {
				return true
			}
		}
		return false
	}
	settled := func(c *chaosClient, p string) bool {
		if row, ok := last[p]; ok && !seen(c, p, row) {
			return false
		}
		for _, row := range rows {
			if row.unordered && row.project == p && !seen(c, p, row) {
				return false
			}
		}
		return true
	}
	waitFor(t, 30*time.Second, "every client has the last change of each project, and the fault's own, or a resync after them", func() bool {
		for _, c := range clients {
			c.mu.Lock()
			for _, p := range c.projects {
				if !settled(c, p) {
					c.mu.Unlock()
					return false
				}
			}
			c.mu.Unlock()
		}
		return true
	})
	for i, c := range clients {
		c.mu.Lock()
		if len(c.dups) > 0 {
			t.Logf("client %d, its last frames:\n%s", i, strings.Join(c.trace[max(0, len(c.trace)-100):], "\n"))
			t.Errorf("client %d: duplicates %v", i, c.dups)
		}
		for _, p := range c.projects {
			got := map[string]int{} // key → index in the client's log
			for j, r := range c.log[p] {
				if r.key != "" {
					if _, dup := got[r.key]; dup {
						t.Errorf("client %d project %s: %s twice", i, p, r.key)
					}
					got[r.key] = j
				}
			}
			prev, missing := -1, 0
			for _, row := range rows {
				if row.project != p {
					continue
				}
				j, ok := got[row.key]
				if ok && row.unordered {
					continue
				}
				if ok {
					if j < prev {
						t.Errorf("client %d project %s: %s out of commit order", i, p, row.key)
					}
					prev = j
					continue
				}
				if !slicesAny(c.log[p], func(r received) bool { return covers(r, row) }) {
					missing++
					if missing <= 3 {
						t.Errorf("client %d project %s: %s (committed at or after %s, cluster %d) neither delivered nor covered by a resync_required",
							i, p, row.key, pglogrepl.LSN(row.before), row.era)
					}
					continue
				}
				covered++
			}
			if missing > 3 {
				t.Errorf("client %d project %s: %d changes lost in silence in all", i, p, missing)
			}
		}
		c.mu.Unlock()
	}
	return covered
}

func slicesAny[T any](s []T, f func(T) bool) bool {
	for _, v := range s {
		if f(v) {
			return true
		}
	}
	return false
}

// steadyFixture makes a database with three projects alice and bob are
// members of, walcast on it, and recorders over them.
func steadyFixture(t *testing.T, env func(map[string]string)) (*pgtest.DB, map[string]string, *instance, []string, []*chaosClient, func()) {
	t.Helper()
	db := newDB(t)
	var projects []string
	for i := 0; i < 3; i++ {
		p := fmt.Sprintf("%08d-2222-4000-8000-000000000000", i+1)
		projects = append(projects, p)
		db.Exec(t, `INSERT INTO projects (id, name, owner_id) VALUES ($1, 'steady', $2)`, p, alice)
		db.Exec(t, `INSERT INTO project_members (project_id, user_id) VALUES ($1, $2), ($1, $3)`, p, alice, bob)
	}
	e := baseEnv(t, db)
	e["WALCAST_LOG_LEVEL"] = "warn"
	e["WALCAST_HISTORY_SIZE"] = "20000"
	if env != nil {
		env(e)
	}
	in := start(t, db, e)
	url := strings.Replace(in.base, "http", "ws", 1)
	clients := []*chaosClient{
		newRecorder(alice, url, projects),
		newRecorder(bob, url, projects[:2]),
		newRecorder(alice, url, projects[1:]),
	}
	stop := runClients(t, clients)
	t.Cleanup(stop)
	return db, e, in, projects, clients, stop
}

// originOf returns the origin walcast at in names.
func originOf(t *testing.T, in *instance) string {
	t.Helper()
	c := dial(t, in, alice)
	defer c.conn.CloseNow()
	c.send(map[string]string{"action": "subscribe", "project_id": project})
	f, _ := gapUntil(t, c, "subscribed", project, 5*time.Second) // after what the hub catches up with
	o := f.str("origin")
	if o == "" {
		t.Fatal("subscribed without an origin")
	}
	return o
}

// TestSteadyWriterAcrossFaults: each fault that used to lose events in
// silence, under a continuous writer and reconnecting clients.
func TestSteadyWriterAcrossFaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  func(map[string]string)
		// fault runs while the writer writes; it returns the changes it
		// committed itself.
		fault func(t *testing.T, db *pgtest.DB, env map[string]string, projects []string, w *steadyWriter) []committed
	}{
		{name: "slot dropped while streaming", fault: func(t *testing.T, db *pgtest.DB, env map[string]string, projects []string, w *steadyWriter) []committed {
			dropSlot(t, db, env["WALCAST_SLOT_NAME"])
			return nil
		}},
		{name: "slot dropped and re-created by an operator", fault: func(t *testing.T, db *pgtest.DB, env map[string]string, projects []string, w *steadyWriter) []committed {
			dropSlot(t, db, env["WALCAST_SLOT_NAME"])
			w.waitForMore(t, 20) // committed while there is no slot: lost
			_, _ = db.Pool.Exec(context.Background(), `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, env["WALCAST_SLOT_NAME"])
			return nil
		}},
		{name: "table out of the publication and back", env: func(e map[string]string) { e["WALCAST_PUBLICATION_CHECK_INTERVAL"] = "100ms" },
			fault: func(t *testing.T, db *pgtest.DB, env map[string]string, projects []string, w *steadyWriter) []committed {
				db.Exec(t, `ALTER PUBLICATION `+pgtest.Publication+` DROP TABLE messages`)
				w.waitForMore(t, 50)
				db.Exec(t, `ALTER PUBLICATION `+pgtest.Publication+` ADD TABLE messages`)
				return nil
			}},
		{name: "table dropped and added back within one check", fault: func(t *testing.T, db *pgtest.DB, env map[string]string, projects []string, w *steadyWriter) []committed {
			var id, lsn string
			tx(t, db, func(ctx context.Context, q querier) {
				mustExec(t, q, `ALTER PUBLICATION `+pgtest.Publication+` DROP TABLE messages`)
				if err := q.(pgx.Tx).QueryRow(ctx, `WITH ins AS (INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'unpublished') RETURNING id)
					SELECT id::text, pg_current_wal_insert_lsn()::text FROM ins`, projects[0], alice).Scan(&id, &lsn); err != nil {
					t.Fatal(err)
				}
				mustExec(t, q, `ALTER PUBLICATION `+pgtest.Publication+` ADD TABLE messages`)
			})
			return []committed{{project: projects[0], key: "message_created:" + id, before: parseLSN(t, lsn)}}
		}},
		{name: "task moved while the replica identity lacks the project", fault: func(t *testing.T, db *pgtest.DB, env map[string]string, projects []string, w *steadyWriter) []committed {
			var id, lsn string
			if err := db.Pool.QueryRow(context.Background(), `INSERT INTO tasks (project_id, title) VALUES ($1, 'to move') RETURNING id::text`, projects[0]).Scan(&id); err != nil {
				t.Fatal(err)
			}
			tx(t, db, func(ctx context.Context, q querier) {
				mustExec(t, q, `ALTER TABLE tasks REPLICA IDENTITY DEFAULT`)
				if err := q.(pgx.Tx).QueryRow(ctx, `WITH up AS (UPDATE tasks SET project_id = $1 WHERE id = $2 RETURNING id)
					SELECT pg_current_wal_insert_lsn()::text FROM up`, projects[1], id).Scan(&lsn); err != nil {
					t.Fatal(err)
				}
				mustExec(t, q, `ALTER TABLE tasks REPLICA IDENTITY FULL`)
			})
			before := parseLSN(t, lsn)
			return []committed{{project: projects[0], key: "task_deleted:" + id, before: before}, {project: projects[1], key: "task_updated:" + id, before: before}}
		}},
		{name: "project column renamed", fault: func(t *testing.T, db *pgtest.DB, env map[string]string, projects []string, w *steadyWriter) []committed {
			var id, lsn string
			tx(t, db, func(ctx context.Context, q querier) {
				mustExec(t, q, `ALTER TABLE messages RENAME COLUMN project_id TO pid`)
				if err := q.(pgx.Tx).QueryRow(ctx, `WITH ins AS (INSERT INTO messages (pid, sender_id, content) VALUES ($1, $2, 'renamed') RETURNING id)
					SELECT id::text, pg_current_wal_insert_lsn()::text FROM ins`, projects[0], alice).Scan(&id, &lsn); err != nil {
					t.Fatal(err)
				}
				mustExec(t, q, `ALTER TABLE messages RENAME COLUMN pid TO project_id`)
			})
			return []committed{{project: projects[0], key: "message_created:" + id, before: parseLSN(t, lsn)}}
		}},
		{name: "replica identity without the project", fault: func(t *testing.T, db *pgtest.DB, env map[string]string, projects []string, w *steadyWriter) []committed {
			var id, lsn string
			var p string
			tx(t, db, func(ctx context.Context, q querier) {
				mustExec(t, q, `ALTER TABLE messages REPLICA IDENTITY DEFAULT`)
				if err := q.(pgx.Tx).QueryRow(ctx, `WITH del AS (DELETE FROM messages WHERE id = (SELECT id FROM messages WHERE content = 'steady' ORDER BY created_at DESC LIMIT 1) RETURNING id, project_id)
					SELECT id::text, project_id::text, pg_current_wal_insert_lsn()::text FROM del`).Scan(&id, &p, &lsn); err != nil {
					t.Fatal(err)
				}
				mustExec(t, q, `ALTER TABLE messages REPLICA IDENTITY FULL`)
			})
			return []committed{{project: p, key: "cache_invalidate:messages:DELETE:" + id, before: parseLSN(t, lsn)}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, env, in, projects, clients, stop := steadyFixture(t, tc.env)
			origin := originOf(t, in)
			w := startSteadyWriter(db.URL, insertMessages(t, projects))
			w.waitForMore(t, 100)
			own := tc.fault(t, db, env, projects, w)
			for i := range own {
				own[i].unordered = true
			}
			w.waitForMore(t, 100) // after the fault: delivered again
			rows := append(w.stop(), own...)
			covered := checkCovered(t, clients, rows, []string{origin})
			stop()
			resyncs := 0
			for _, c := range clients {
				resyncs += c.resyncs
			}
			t.Logf("%d changes committed; %d covered by resync_required; %d resyncs received; writer errors %d (%v)", len(rows), covered, resyncs, w.errs, w.lastErr)
			if resyncs == 0 {
				t.Error("no client was told to resync: the fault did not happen")
			}
		})
	}
}

// TestSteadyWriterAcrossAMovedTask: tasks created in one project and moved
// to another, continuously, with clients resuming at random: the old
// project's subscribers get each task created and deleted, the new one's
// get it updated, none lost and no resync needed.
func TestSteadyWriterAcrossAMovedTask(t *testing.T) {
	t.Parallel()
	db, _, _, projects, clients, stop := steadyFixture(t, nil)
	w := startSteadyWriter(db.URL, moveTasks(t, projects[0], projects[1]))
	w.waitForMore(t, 300)
	rows := w.stop()
	if covered := checkCovered(t, clients, rows, nil); covered != 0 {
		t.Errorf("%d changes covered by a resync: none should need one", covered)
	}
	stop()
	for i, c := range clients {
		if c.resyncs > 0 {
			t.Errorf("client %d: %d resyncs", i, c.resyncs)
		}
	}
	t.Logf("%d changes committed", len(rows))
}

// TestSteadyWriterAcrossAClusterMove: the database moves to a new cluster at
// the same address while the writer writes; walcast stops (its origin is
// gone), is started again, and every client resuming with the old origin
// is told to resync; what the new cluster commits arrives.
func TestSteadyWriterAcrossAClusterMove(t *testing.T) {
	t.Parallel()
	old := newClusterDB(t)
	env := clusterEnv(t, old)
	in := start(t, nil, env)
	url := strings.Replace(in.base, "http", "ws", 1)
	projects := []string{project}
	clients := []*chaosClient{newRecorder(alice, url, projects), newRecorder(bob, url, projects)}
	stop := runClients(t, clients)
	defer stop()
	origins := []string{originOf(t, in)}
	w := startSteadyWriter(old.URL, insertMessages(t, projects))
	w.waitForMore(t, 100)

	if _, err := old.StopFast(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	nw := newClusterDB(t, fmt.Sprintf("port = %d", old.Port))
	w.moveTo(nw.URL)
	select {
	case err := <-in.done:
		in.done <- nil
		if err == nil {
			t.Fatal("walcast ended without an error")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("walcast did not stop")
	}
	in = start(t, nil, env)
	origins = append(origins, originOf(t, in))
	w.waitForMore(t, 100)
	rows := w.stop()
	covered := checkCovered(t, clients, rows, origins)
	t.Logf("%d changes committed on two clusters; %d covered by resync_required", len(rows), covered)
	for i, c := range clients {
		if c.resyncs == 0 {
			t.Errorf("client %d was never told to resync", i)
		}
	}
}
