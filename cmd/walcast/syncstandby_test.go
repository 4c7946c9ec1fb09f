package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/internal/eventually"
	"github.com/walcast/walcast/internal/pgtest"
)

// silentStandby makes a cluster's commits race their own visibility
// deterministically. PostgreSQL streams a commit to logical walsenders
// once it is flushed locally; with a synchronous standby that never
// answers, the committing session then waits, its transaction invisible
// to every other session, for as long as the test likes.
type silentStandby struct {
	t       *testing.T
	cluster *pgtest.Cluster
	// local commits without waiting: every write of a test but the ones
	// it means to hold.
	local   *pgxpool.Pool
	release func()
}

func newSilentStandby(t *testing.T, cluster *pgtest.Cluster) *silentStandby {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(cluster.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "local"
	local, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(local.Close)
	s := &silentStandby{t: t, cluster: cluster, local: local}
	s.release = sync.OnceFunc(func() {
		for _, sql := range []string{`ALTER SYSTEM RESET synchronous_standby_names`, `SELECT pg_reload_conf()`} {
			if _, err := local.Exec(context.Background(), sql); err != nil {
				t.Errorf("%s: %v", sql, err)
			}
		}
	})
	return s
}

// exec runs sql on a session that does not wait for the standby.
func (s *silentStandby) exec(sql string, args ...any) {
	s.t.Helper()
	if _, err := s.local.Exec(context.Background(), sql, args...); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
}

// hold makes every commit from now on wait for the standby that never
// answers, and returns once one does. Release (also at the test's end,
// before walcast stops and the cluster goes) lets them all through.
func (s *silentStandby) hold() {
	s.t.Helper()
	s.exec(`ALTER SYSTEM SET synchronous_standby_names = 'never_answers'`)
	s.exec(`SELECT pg_reload_conf()`)
	s.t.Cleanup(s.release)
	// A reload is asynchronous: a probe commit (to a table outside the
	// publication; only a commit that wrote WAL waits) shows the wait is
	// in force before the test relies on it. The probe is then cancelled,
	// which ends its wait (it stays committed locally).
	s.exec(`CREATE TABLE IF NOT EXISTS standby_probe (x int)`)
	ctx := context.Background()
	probeHeld := func() bool {
		s.t.Helper()
		pc, err := pgx.Connect(ctx, s.cluster.URL)
		if err != nil {
			s.t.Fatal(err)
		}
		defer pc.Close(ctx)
		pid := pc.PgConn().PID()
		done := make(chan error, 1)
		go func() { _, err := pc.Exec(ctx, `INSERT INTO standby_probe VALUES (1)`); done <- err }()
		held := eventually.Poll(time.Second, func() bool {
			select {
			case err := <-done:
				done <- err
				return true // committed without waiting: not in force yet
			default:
			}
			return s.waiting(pid)
		}) && len(done) == 0
		s.exec(`SELECT pg_cancel_backend($1)`, int64(pid))
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.t.Fatal("the cancelled probe commit did not return")
		}
		return held
	}
	waitFor(s.t, 10*time.Second, "commits waiting for the synchronous standby", probeHeld)
}

// waiting reports whether backend pid is held in the synchronous
// replication wait.
func (s *silentStandby) waiting(pid uint32) bool {
	s.t.Helper()
	var ev string
	if err := s.local.QueryRow(context.Background(), `SELECT coalesce(wait_event, '') FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&ev); err != nil {
		s.t.Fatal(err)
	}
	return ev == "SyncRep"
}
