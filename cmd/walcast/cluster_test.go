package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	natsserver "github.com/nats-io/nats-server/v2/server"
)

// TestClusterFailover: three walcast replicas and one embedded NATS server
// against the real PostgreSQL. Clients are spread over the replicas; a
// writer commits messages continuously; the leader (the replica holding the
// slot) is killed with SIGKILL. Another replica takes the slot within 10 s,
// clients of the dead replica move to a surviving one and resume with
// since, and every client ends with exactly the committed messages of its
// projects, in commit order, none twice.
func TestClusterFailover(t *testing.T) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}

	db := newDB(t)
	var projects []string
	for i := 0; i < 3; i++ {
		p := fmt.Sprintf("%08d-1111-4000-8000-000000000000", i+1)
		projects = append(projects, p)
		db.Exec(t, `INSERT INTO projects (id, name, owner_id) VALUES ($1, 'cluster', $2)`, p, alice)
		db.Exec(t, `INSERT INTO project_members (project_id, user_id) VALUES ($1, $2), ($1, $3)`, p, alice, bob)
	}
	base := baseEnv(t, db)
	base["WALCAST_NATS_URL"] = ns.ClientURL()
	base["WALCAST_NATS_STREAM"] = "WALCAST_" + strings.ToUpper(base["WALCAST_SLOT_NAME"][len("walcast_"):])
	base["WALCAST_HISTORY_SIZE"] = "20000"
	base["WALCAST_LOG_LEVEL"] = "warn"
	var procs []*process
	var urls []string
	for i := 0; i < 3; i++ {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		env["WALCAST_HTTP_ADDR"] = freeAddr(t)
		p := startProcess(t, env)
		procs = append(procs, p)
		urls = append(urls, strings.Replace(p.base, "http", "ws", 1))
	}
	leader := func() int {
		for i, p := range procs {
			select {
			case <-p.done:
				continue
			default:
			}
			resp, err := http.Get(p.base + "/api/v1/status")
			if err != nil {
				continue
			}
			var st map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if st["leader"] == true {
				return i
			}
		}
		return -1
	}
	waitFor(t, 15*time.Second, "a leader", func() bool { return leader() >= 0 })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var clients []*chaosClient
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		c := &chaosClient{user: alice, projects: projects, urls: append(urls[i%3:], urls[:i%3]...), last: map[string]string{}, got: map[string][]string{}}
		if i%2 == 1 {
			c.user = bob
		}
		clients = append(clients, c)
		tok := token(t, c.user, time.Hour)
		wg.Add(1)
		go func() { defer wg.Done(); c.run(ctx, tok) }()
	}
	defer func() { cancel(); wg.Wait() }()
	waitFor(t, 10*time.Second, "clients subscribed", func() bool {
		for _, c := range clients {
			c.mu.Lock()
			n := len(c.last)
			c.mu.Unlock()
			if n < len(c.projects) {
				return false
			}
		}
		return true
	})

	committed := map[string][]string{}
	writerDone := make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(ctx, db.URL)
		if err != nil {
			writerDone <- err
			return
		}
		defer conn.Close(context.Background())
		deadline := time.Now().Add(8 * time.Second)
		for time.Now().Before(deadline) {
			proj := projects[rand.IntN(len(projects))]
			var id string
			if err := conn.QueryRow(ctx, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'c') RETURNING id::text`, proj, alice).Scan(&id); err != nil {
				writerDone <- err
				return
			}
			committed[proj] = append(committed[proj], id)
			time.Sleep(time.Duration(2+rand.IntN(4)) * time.Millisecond)
		}
		writerDone <- nil
	}()

	time.Sleep(2500 * time.Millisecond)
	old := leader()
	if old < 0 {
		t.Fatal("no leader before the kill")
	}
	killed := time.Now()
	procs[old].kill(syscall.SIGKILL)
	waitFor(t, 10*time.Second, "another replica takes the slot", func() bool { n := leader(); return n >= 0 && n != old })
	t.Logf("replica %d took over %s after replica %d was killed", leader(), time.Since(killed).Round(10*time.Millisecond), old)

	if err := <-writerDone; err != nil {
		t.Fatalf("writer: %v", err)
	}
	total := 0
	for _, ids := range committed {
		total += len(ids)
	}
	for _, c := range clients {
		c.mu.Lock()
		c.calm = true
		c.mu.Unlock()
	}
	waitFor(t, 30*time.Second, "every client has every message", func() bool {
		for _, c := range clients {
			c.mu.Lock()
			for _, proj := range c.projects {
				if len(c.got[proj]) < len(committed[proj]) {
					c.mu.Unlock()
					return false
				}
			}
			c.mu.Unlock()
		}
		return true
	})
	time.Sleep(200 * time.Millisecond)
	t.Logf("%d messages committed across %d projects", total, len(committed))
	for i, c := range clients {
		c.mu.Lock()
		if c.resyncs > 0 || len(c.dups) > 0 {
			t.Errorf("client %d: %d resyncs, duplicates %v", i, c.resyncs, c.dups)
		}
		for _, proj := range c.projects {
			if strings.Join(c.got[proj], ",") != strings.Join(committed[proj], ",") {
				t.Errorf("client %d project %s: got %d messages, want %d in commit order", i, proj, len(c.got[proj]), len(committed[proj]))
			}
		}
		c.mu.Unlock()
	}

	// Revocation crosses replicas: bob on a standby loses the project when
	// his membership row is deleted (the leader reads it from the WAL).
	cancel()
	wg.Wait()
	standby := -1
	for i := range procs {
		if i != old && i != leader() {
			standby = i
		}
	}
	b := dial(t, &instance{t: t, base: procs[standby].base}, bob)
	b.subscribe(projects[0])
	db.Exec(t, `DELETE FROM project_members WHERE project_id = $1 AND user_id = $2`, projects[0], bob)
	for {
		f := b.read(10 * time.Second)
		if f.str("type") == "subscription_revoked" {
			if f.str("reason") != "member_removed" || f.str("project_id") != projects[0] {
				t.Fatalf("revocation on the standby: %v", f)
			}
			break
		}
	}
	if !strings.Contains(scrape(t, procs[standby].base), "walcast_cluster_leader 0") {
		t.Error("the standby does not report walcast_cluster_leader 0")
	}
}
