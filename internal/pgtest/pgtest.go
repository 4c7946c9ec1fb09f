package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/internal/migrate"
	"github.com/walcast/walcast/migrations"
)

// EnvURL names the variable holding the server's superuser URL.
const EnvURL = "WALCAST_TEST_DATABASE_URL"

// DB is one test's database.
type DB struct {
	Name string
	// URL connects to this database as the superuser.
	URL string
	// AppURL connects as the least-privilege walcast role
	// (migrations/role), which is what walcast runs as in the tests.
	AppURL string
	Pool   *pgxpool.Pool
}

// Publication is created in every test database by the superuser, as an
// operator would: the walcast role may not create it.
const Publication = "walcast_pub"

// AdminURL returns the server's superuser URL: EnvURL's, or, when it is
// unset, that of a throwaway server this test binary starts on first use
// (PostgreSQL's binaries are enough) and Main removes at the end.
func AdminURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	own.once.Do(func() {
		own.cluster, own.err = startCluster("max_replication_slots = 64", "max_wal_senders = 64", "max_connections = 300")
	})
	if own.err != nil {
		t.Fatalf("integration tests need PostgreSQL with wal_level=logical: set %s to a superuser URL, or install PostgreSQL's server binaries (%v)", EnvURL, own.err)
	}
	return own.cluster.URL
}

// own is the server AdminURL started for this test binary.
var own struct {
	once    sync.Once
	cluster *Cluster
	err     error
}

// Main runs a test binary's tests (call it from TestMain) and removes the
// server AdminURL started, if it did.
func Main(m *testing.M) {
	code := m.Run()
	if own.cluster != nil {
		own.cluster.remove()
	}
	os.Exit(code)
}

// New creates a fresh database with the reference schema.
func New(t testing.TB) *DB {
	t.Helper()
	admin := AdminURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tmpl, err := template(ctx, admin)
	if err != nil {
		t.Fatalf("pgtest: template: %v", err)
	}
	name := "walcast_test_" + RandomSuffix()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+tmpl); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	d := &DB{Name: name, URL: withDatabase(admin, name), AppURL: withUser(withDatabase(admin, name), "walcast")}
	d.Pool, err = pgxpool.New(ctx, d.URL)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	t.Cleanup(func() { d.drop(t, admin) })
	return d
}

func (d *DB) drop(t testing.TB, admin string) {
	d.Pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Logf("pgtest: cleanup connect: %v", err)
		return
	}
	defer conn.Close(ctx)
	// A slot still streaming cannot be dropped: end its walsender first.
	for i := 0; i < 50; i++ {
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, d.Name)
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, d.Name)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Logf("pgtest: drop slots of %s: %v", d.Name, err)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+d.Name+" WITH (FORCE)"); err != nil {
		t.Logf("pgtest: drop database %s: %v", d.Name, err)
	}
}

// Exec runs SQL on the test database, failing the test on error.
func (d *DB) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := d.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// RandomSuffix returns 10 random lowercase hex digits, for unique names.
func RandomSuffix() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func withUser(raw, user string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.User = url.User(user)
	return u.String()
}

func withDatabase(raw, db string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.Path = "/" + db
	return u.String()
}

// template returns the name of a database holding the migrated reference
// schema, creating it once per schema version (hash of the migrations).
func template(ctx context.Context, admin string) (string, error) {
	h := sha256.New()
	files, _ := fs.Glob(migrations.Schema, "*.sql")
	sort.Strings(files)
	for _, f := range files {
		b, _ := fs.ReadFile(migrations.Schema, f)
		h.Write([]byte(f))
		h.Write(b)
	}
	role, _ := fs.ReadFile(migrations.Role, "role/001_walcast_role.sql")
	h.Write(role)
	name := "walcast_tmpl_" + hex.EncodeToString(h.Sum(nil))[:12]

	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	// Test packages run in parallel processes: one builds, the others wait.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(7744)"); err != nil {
		return "", err
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(7744)") //nolint:errcheck
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	build := name + "_build"
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+build+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+build); err != nil {
		return "", err
	}
	bconn, err := pgx.Connect(ctx, withDatabase(admin, build))
	if err != nil {
		return "", err
	}
	_, err = migrate.Apply(ctx, bconn,
		migrate.Set{Name: "schema", FS: migrations.Schema, Dir: "."},
		migrate.Set{Name: "role", FS: migrations.Role, Dir: "role"})
	if err == nil {
		_, err = bconn.Exec(ctx, "CREATE PUBLICATION "+Publication+" FOR TABLE projects, sprints, tasks, messages, project_members")
	}
	bconn.Close(ctx)
	if err != nil {
		return "", fmt.Errorf("migrate template: %w", err)
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+build+" RENAME TO "+name); err != nil {
		return "", err
	}
	return name, nil
}

// Querier is a connection or a pool.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// StatusRepliesAfter waits until the walsender streaming slot has received
// n standby status updates sent after t0: n distinct reply_time values
// later than t0 (the client's clock; tests run on one machine). It is the
// witness that the client had n chances to confirm a position since t0,
// for the tests that check what it did not confirm.
func StatusRepliesAfter(t testing.TB, q Querier, slot string, t0 time.Time, n int) {
	t.Helper()
	seen := map[time.Time]bool{}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for len(seen) < n {
		var reply *time.Time
		err := q.QueryRow(context.Background(), `SELECT r.reply_time FROM pg_stat_replication r
			JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1`, slot).Scan(&reply)
		if err != nil && err != pgx.ErrNoRows {
			t.Fatalf("reply time of %s: %v", slot, err)
		}
		if reply != nil && reply.After(t0) {
			seen[*reply] = true
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s: %d status updates after %s, waited for %d", slot, len(seen), t0.Format(time.RFC3339Nano), n)
		}
		<-tick.C
	}
}
