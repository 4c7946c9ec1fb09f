package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/walcast/walcast/internal/pgtest"
	"github.com/walcast/walcast/internal/wal"
)

// startNATS runs an embedded NATS server with JetStream for one test.
func startNATS(t *testing.T) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	return ns
}

// isLeader reports whether the walcast at base streams the slot.
func isLeader(base string) bool {
	resp, err := http.Get(base + "/api/v1/status")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var st map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&st)
	return st["leader"] == true
}

// clustered copies env and adds NATS with a stream of the test's own (a
// nil ns keeps env's).
func clustered(env map[string]string, ns *natsserver.Server, stream string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		out[k] = v
	}
	if ns != nil {
		out["WALCAST_NATS_URL"] = ns.ClientURL()
		out["WALCAST_NATS_STREAM"] = stream
		out["WALCAST_LOG_LEVEL"] = "warn"
	}
	return out
}

// TestClusterStreamOfAnotherDatabaseIsPurged: the database moves to
// another cluster whose WAL is behind the old one's; walcast stops, and
// restarted it finds the NATS stream full of the old cluster's events. It
// purges them (their positions would make the hub take every new event
// for one it has): the new cluster's changes reach a fresh subscriber.
func TestClusterStreamOfAnotherDatabaseIsPurged(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	old := newClusterDB(t)
	advanceWAL(t, old, "0/6000000", "old cluster")
	env := clustered(clusterEnv(t, old), ns, "PURGED")
	a := start(t, nil, env)
	c := dial(t, a, alice)
	c.subscribe(project)
	advanceWAL(t, old, "0/0", "seen on the old cluster")
	gapUntil(t, c, "message_created", project, 10*time.Second)
	if _, err := old.StopFast(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	nw := newClusterDB(t, fmt.Sprintf("port = %d", old.Port))
	select {
	case err := <-a.done:
		a.done <- nil
		if !errors.Is(err, wal.ErrOriginChanged) {
			t.Fatalf("walcast ended with %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("walcast did not stop")
	}
	b := start(t, nil, env)
	waitFor(t, 15*time.Second, "the restarted walcast leads", func() bool { return isLeader(b.base) })
	r := dial(t, b, alice)
	r.send(map[string]string{"action": "subscribe", "project_id": project})
	gapUntil(t, r, "subscribed", project, 5*time.Second)
	ctx := context.Background()
	conn, err := nw.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'new cluster')`, project, alice); err != nil {
		t.Fatal(err)
	}
	if f, _ := gapUntil(t, r, "message_created", project, 10*time.Second); f.data()["content"] != "new cluster" {
		t.Fatalf("got %v", f)
	}
}

// leaderAndStandby starts replica A, waits until it leads, starts B, and
// returns both with a client of B's that has received a first message.
func leaderAndStandby(t *testing.T, db *pgtest.DB, base map[string]string) (a, b *instance, c *client) {
	t.Helper()
	envA, envB := clustered(base, nil, ""), clustered(base, nil, "")
	envA["WALCAST_HTTP_ADDR"], envB["WALCAST_HTTP_ADDR"] = freeAddr(t), freeAddr(t)
	a = start(t, db, envA)
	waitFor(t, 15*time.Second, "A leads", func() bool { return isLeader(a.base) })
	b = start(t, db, envB)
	c = dial(t, b, alice)
	c.subscribe(project)
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'before')`, project, alice)
	gapUntil(t, c, "message_created", project, 10*time.Second)
	return a, b, c
}

// TestClusterStandbyFindsARecreatedSlot: the leader goes away; a message
// is committed and an operator drops and re-creates the slot. The standby
// taking the slot over finds it past what the last leader recorded
// (before confirming), or gone, and tells every subscriber to resync.
func TestClusterStandbyFindsARecreatedSlot(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	db := newDB(t)
	base := clustered(baseEnv(t, db), ns, "RECREATED")
	// The standby polls slowly, so the leader is known and the operator's
	// work is done before it takes over.
	cfg, err := os.ReadFile("../../config/walcast.yaml")
	if err != nil {
		t.Fatal(err)
	}
	slow := strings.Replace(string(cfg), "failover_poll: 1s", "failover_poll: 6s", 1)
	if slow == string(cfg) {
		t.Fatal("config/walcast.yaml has no failover_poll: 1s")
	}
	base["WALCAST_CONFIG"] = t.TempDir() + "/slow.yaml"
	if err := os.WriteFile(base["WALCAST_CONFIG"], []byte(slow), 0o644); err != nil {
		t.Fatal(err)
	}
	base["WALCAST_LOG_LEVEL"] = "info"
	a, b, c := leaderAndStandby(t, db, base)

	a.stop()
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'lost')`, project, alice)
	// The standby may take the slot at any moment: the operator ends
	// whoever streams from it, drops it and creates it again. Either the
	// standby finds it past what the leader recorded, or finds it gone and
	// re-creates it: both are gaps.
	slot := base["WALCAST_SLOT_NAME"]
	dropSlot(t, db, slot)
	_, _ = db.Pool.Exec(context.Background(), `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("A:\n%s\nB:\n%s", a.logs.String(), b.logs.String())
		}
	})
	if _, got := gapUntil(t, c, "resync_required", project, 20*time.Second); len(got) > 1 || (len(got) == 1 && got[0] != "lost") {
		t.Fatalf("messages before the resync: %v", got)
	}
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'after')`, project, alice)
	if f, _ := gapUntil(t, c, "message_created", project, 10*time.Second); f.data()["content"] != "after" {
		t.Fatalf("got %v", f)
	}
}

// TestClusterStandbyDuringASlotsCreation: the standby polls while an
// operator's re-creation of the slot is still waiting for open
// transactions (the slot exists, with no position yet). The standby's
// attempt must neither take that for the slot's progress nor overwrite the
// leader's record of it (it did: the takeover then saw no gap).
func TestClusterStandbyDuringASlotsCreation(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	db := newDB(t)
	base := clustered(baseEnv(t, db), ns, "CREATING")
	base["WALCAST_LOG_LEVEL"] = "info"
	a, b, c := leaderAndStandby(t, db, base)

	ctx := context.Background()
	open, err := db.Pool.Begin(ctx) // holds the slot's creation back
	if err != nil {
		t.Fatal(err)
	}
	defer open.Rollback(ctx) //nolint:errcheck
	if _, err := open.Exec(ctx, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'open')`, project, alice); err != nil {
		t.Fatal(err)
	}
	a.stop()
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'lost')`, project, alice)
	slot := base["WALCAST_SLOT_NAME"]
	dropSlot(t, db, slot)
	created := make(chan error, 1)
	go func() {
		_, err := db.Pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
		created <- err
	}()
	// The standby polls every second (cluster.failover_poll): it tries
	// the slot while the creation waits.
	waitFor(t, 10*time.Second, "the standby tried the slot while it was being created", func() bool {
		return strings.Contains(b.logs.String(), "no confirmed position yet")
	})
	if err := open.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	// 'lost' may have reached the standby, had it taken the old slot over
	// before the drop; either way the re-created slot is a gap.
	if _, got := gapUntil(t, c, "resync_required", project, 20*time.Second); len(got) > 1 || (len(got) == 1 && got[0] != "lost") {
		t.Fatalf("messages before the resync: %v", got)
	}
}

// TestClusterResumeAheadOfTheWAL: a resume position beyond the server's
// WAL (forged, or another database's from a client that sends no origin)
// is answered resync_required in cluster mode too, where a replica's hub
// may legitimately lag another's.
func TestClusterResumeAheadOfTheWAL(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	db := newDB(t)
	in := start(t, db, clustered(baseEnv(t, db), ns, "AHEAD"))
	waitFor(t, 15*time.Second, "a leader", func() bool { return isLeader(in.base) })
	c := dial(t, in, alice)
	c.send(map[string]string{"action": "subscribe", "project_id": project, "since": "00000FFF00000000/00000000"})
	if f := c.read(5 * time.Second); f.str("type") != "resync_required" {
		t.Fatalf("since beyond the WAL answered %v", f)
	}
}
