package wal

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/eventually"
	"github.com/walcast/walcast/internal/metrics"
	"github.com/walcast/walcast/internal/pgtest"
)

const (
	user    = "11111111-1111-4111-8111-111111111111"
	project = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
)

func fixture(t *testing.T) *pgtest.DB {
	db := pgtest.New(t)
	db.Exec(t, `INSERT INTO users (id, email, display_name) VALUES ($1, 'a@x', 'A')`, user)
	db.Exec(t, `INSERT INTO projects (id, name, owner_id) VALUES ($1, 'P', $2)`, project, user)
	return db
}

func confirmedFlush(t *testing.T, db *pgtest.DB, slot string) uint64 {
	t.Helper()
	var s string
	if err := db.Pool.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(lsn)
}

type recorder struct {
	mu      sync.Mutex
	txns    []*events.Txn
	fails   int // fail this many deliveries first
	refused int
}

func (r *recorder) sink(_ context.Context, txn *events.Txn) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fails > 0 {
		r.fails--
		r.refused++
		return errors.New("hub refused")
	}
	r.txns = append(r.txns, txn)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.txns)
}

func startReader(t *testing.T, db *pgtest.DB, cfg Config, rec *recorder) (*Reader, string) {
	t.Helper()
	ctx := context.Background()
	slot := "walcast_t_" + pgtest.RandomSuffix()
	if err := EnsurePublication(ctx, db.Pool, "pub", events.DefaultTables()); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureSlot(ctx, db.Pool, slot); err != nil {
		t.Fatal(err)
	}
	cfg.DatabaseURL, cfg.Slot, cfg.Publication = db.URL, slot, "pub"
	cfg.StatusInterval, cfg.ReconnectMin, cfg.ReconnectMax = 50*time.Millisecond, 20*time.Millisecond, 100*time.Millisecond
	m := metrics.New(prometheus.NewRegistry())
	r := NewReader(cfg, func(s, tb string) bool { return tb == "messages" }, rec.sink, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = r.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, slot
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	eventually.True(t, 15*time.Second, what, cond)
}

// A transaction the sink refuses is never confirmed, and is streamed again.
func TestRefusedTransactionIsNotConfirmed(t *testing.T) {
	db := fixture(t)
	rec := &recorder{fails: 3}
	r, slot := startReader(t, db, Config{}, rec)
	waitFor(t, "stream live", r.Live)
	before := confirmedFlush(t, db, slot)
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'one')`, project, user)
	waitFor(t, "delivery after refusals", func() bool { return rec.count() == 1 })
	txn := rec.txns[0]
	if txn.CommitLSN <= before || len(txn.Changes) != 1 || txn.Changes[0].New[3].Value != "one" {
		t.Fatalf("txn %+v", txn)
	}
	waitFor(t, "confirmed past the delivered txn", func() bool { return confirmedFlush(t, db, slot) >= txn.EndLSN })
	// Delivered once only, despite the replays: a later transaction comes
	// after any replay of the first would have.
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'two')`, project, user)
	waitFor(t, "the next transaction", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.txns) > 0 && rec.txns[len(rec.txns)-1].Changes[0].New[3].Value == "two"
	})
	if rec.count() != 2 {
		t.Fatalf("delivered %d transactions for 2", rec.count())
	}
}

// While refusing, the slot stays before the transaction.
func TestSlotHeldWhileSinkRefuses(t *testing.T) {
	db := fixture(t)
	rec := &recorder{fails: 1 << 30}
	r, slot := startReader(t, db, Config{}, rec)
	waitFor(t, "stream live", r.Live)
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'x')`, project, user)
	var lsn string
	if err := db.Pool.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	commitAfter, _ := pglogrepl.ParseLSN(lsn)
	// Several retries: each restarts the stream from the slot (a new
	// START_REPLICATION, where a wrong position would be confirmed).
	waitFor(t, "retries", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.refused >= 3 })
	if got := confirmedFlush(t, db, slot); got >= uint64(commitAfter) {
		t.Fatalf("slot confirmed %s past a refused transaction ending before %s", pglogrepl.LSN(got), lsn)
	}
	rec.mu.Lock()
	refused := rec.refused
	rec.mu.Unlock()
	if refused < 2 {
		t.Fatalf("the refused transaction was offered %d times; it must be streamed again after each failure", refused)
	}
}

// The hold-back window keeps the slot behind by age...
func TestHoldBackByAge(t *testing.T) {
	db := fixture(t)
	rec := &recorder{}
	r, slot := startReader(t, db, Config{HoldBackAge: time.Hour, HoldBackBytes: 1 << 40}, rec)
	waitFor(t, "stream live", r.Live)
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'x')`, project, user)
	waitFor(t, "delivery", func() bool { return rec.count() == 1 })
	pgtest.StatusRepliesAfter(t, db.Pool, slot, time.Now(), 3)
	if got := confirmedFlush(t, db, slot); got > rec.txns[0].CommitLSN {
		t.Fatalf("window not held: confirmed %s, txn commit %s", pglogrepl.LSN(got), pglogrepl.LSN(rec.txns[0].CommitLSN))
	}
}

// ...and the bytes bound forces it forward: walcast never makes the primary
// keep more than HoldBackBytes of WAL past what it has read.
func TestHoldBackBytesBound(t *testing.T) {
	db := fixture(t)
	rec := &recorder{}
	r, slot := startReader(t, db, Config{HoldBackAge: time.Hour, HoldBackBytes: 64 << 10}, rec)
	waitFor(t, "stream live", r.Live)
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'x')`, project, user)
	waitFor(t, "delivery", func() bool { return rec.count() == 1 })
	// ~200 kB of WAL: more than the 64 kB bound.
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) SELECT $1, $2, md5(i::text) FROM generate_series(1, 2000) i`, project, user)
	waitFor(t, "second delivery", func() bool { return rec.count() == 2 })
	// The big transaction alone is past the bound: it cannot be held either.
	waitFor(t, "bytes bound advances the slot past both", func() bool { return confirmedFlush(t, db, slot) >= rec.txns[1].EndLSN })
}

func TestSetupChecks(t *testing.T) {
	db := fixture(t)
	ctx := context.Background()
	tables := events.DefaultTables()
	db.Exec(t, `CREATE PUBLICATION partial FOR TABLE messages`)
	if err := EnsurePublication(ctx, db.Pool, "partial", tables); err == nil || !strings.Contains(err.Error(), "lacks table(s) public.projects") {
		t.Fatalf("partial publication: %v", err)
	}
	doctorErr := func(tables []events.Table) error {
		t.Helper()
		findings, err := Doctor(ctx, db.Pool, "pub", "walcast_doctor", tables)
		if err != nil {
			t.Fatal(err)
		}
		return Errors(findings)
	}
	if err := doctorErr(tables); err != nil {
		t.Fatalf("reference schema: %v", err)
	}
	// A row filter or a column list hides changes: a filtered membership
	// table leaves walcast blind to removals, another table only lossy.
	db.Exec(t, `CREATE PUBLICATION filtered FOR TABLE projects, sprints, tasks (id, project_id, title), messages, project_members WHERE (role <> 'guest')`)
	pub, err := ReadPublication(ctx, db.Pool, "filtered", tables)
	if err != nil || len(pub.Missing) != 0 || len(pub.Filtered) != 2 || !pub.AccessBlind() ||
		!strings.Contains(strings.Join(pub.Problems(tables), ";"), "filters the rows or columns of public.project_members") {
		t.Fatalf("filtered: %+v %v", pub, err)
	}
	if err := EnsurePublication(ctx, db.Pool, "filtered", tables); err == nil {
		t.Fatal("a filtered publication was accepted at start")
	}
	db.Exec(t, `ALTER PUBLICATION filtered SET TABLE projects, sprints, tasks (id, project_id, title), messages, project_members`)
	if pub, err := ReadPublication(ctx, db.Pool, "filtered", tables); err != nil || pub.AccessBlind() || len(pub.Filtered) != 1 {
		t.Fatalf("column list on tasks only: %+v %v", pub, err)
	}
	db.Exec(t, `ALTER TABLE tasks REPLICA IDENTITY DEFAULT`)
	if err := doctorErr(tables); err == nil || !strings.Contains(err.Error(), "public.tasks") || !strings.Contains(err.Error(), "project_id") {
		t.Fatalf("default identity: %v", err)
	}
	missing := append(tables, events.Table{Name: "nope", Resource: "x", ProjectIDColumn: "p"})
	db.Exec(t, `ALTER TABLE tasks REPLICA IDENTITY FULL`)
	if err := doctorErr(missing); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing table: %v", err)
	}
	slot := "walcast_t_" + pgtest.RandomSuffix()
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, slot)
	if _, err := EnsureSlot(ctx, db.Pool, slot); err == nil || !strings.Contains(err.Error(), "not logical/pgoutput") {
		t.Fatalf("foreign slot: %v", err)
	}
}

// The monitor reads the slot and warns past the retained-WAL threshold.
func TestMonitorWarnsOnRetainedWAL(t *testing.T) {
	db := fixture(t)
	ctx := context.Background()
	slot := "walcast_t_" + pgtest.RandomSuffix()
	if _, err := EnsureSlot(ctx, db.Pool, slot); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) SELECT $1, $2, md5(i::text) FROM generate_series(1, 500) i`, project, user)
	m := metrics.New(prometheus.NewRegistry())
	var logs strings.Builder
	mon := NewMonitor(db.Pool, slot, time.Second, 1024, slog.New(slog.NewJSONHandler(&logs, nil)), m)
	st, err := mon.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.RetainedWAL <= 1024 || st.WALStatus == "" || st.ConfirmedLSN == "" {
		t.Fatalf("stats %+v", st)
	}
	if testutil.ToFloat64(m.RetainedWALWarning) != 1 || !strings.Contains(logs.String(), "retains a lot of WAL") {
		t.Fatalf("no warning: gauge %v, logs %s", testutil.ToFloat64(m.RetainedWALWarning), logs.String())
	}
	if testutil.ToFloat64(m.RetainedWALBytes) != float64(st.RetainedWAL) {
		t.Fatal("retained WAL gauge not set")
	}
}
