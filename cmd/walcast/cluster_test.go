package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// TestClusterFailover: three walcast replicas and one embedded NATS server
// against the real PostgreSQL. Clients are spread over the replicas; a
// writer commits messages continuously; the leader (the replica holding the
// slot) is killed with SIGKILL. Another replica takes the slot within 10 s,
// clients of the dead replica move to a surviving one and resume with
// since, and every client ends with exactly the committed messages of its
// projects, in commit order, none twice. Then a revocation and a gap (the
// slot dropped under the leader) cross from the leader to a standby.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
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

	var clients []*chaosClient
	for i := 0; i < 6; i++ {
		c := &chaosClient{user: alice, projects: projects, urls: append(urls[i%3:], urls[:i%3]...), last: map[string]string{}, got: map[string][]string{}}
		if i%2 == 1 {
			c.user = bob
		}
		clients = append(clients, c)
	}
	stop := runClients(t, clients)
	defer stop()

	writer := startWriting(db.URL, projects, 1<<30, 1, 8*time.Second)

	// The kill falls mid-stream: a leader serves, and every client has
	// messages already.
	waitFor(t, 10*time.Second, "a leader streaming to every client", func() bool {
		if leader() < 0 {
			return false
		}
		for _, c := range clients {
			c.mu.Lock()
			n := 0
			for _, ids := range c.got {
				n += len(ids)
			}
			c.mu.Unlock()
			if n < 20 {
				return false
			}
		}
		return true
	})
	old := leader()
	if old < 0 {
		t.Fatal("no leader before the kill")
	}
	killed := time.Now()
	procs[old].kill(syscall.SIGKILL)
	waitFor(t, 10*time.Second, "another replica takes the slot", func() bool { n := leader(); return n >= 0 && n != old })
	t.Logf("replica %d took over %s after replica %d was killed", leader(), time.Since(killed).Round(10*time.Millisecond), old)

	w := <-writer
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	total := 0
	for _, ids := range w.ids {
		total += len(ids)
	}
	t.Logf("%d messages committed across %d projects", total, len(w.ids))
	checkExact(t, db.URL, clients, w.ids)

	// Revocation crosses replicas: bob on a standby loses the project when
	// his membership row is deleted (the leader reads it from the WAL).
	stop()
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

	// A gap the leader finds (its slot dropped under it: it re-creates
	// it) reaches the standby's subscribers through the stream too.
	a := dial(t, &instance{t: t, base: procs[standby].base}, alice)
	a.subscribe(projects[1])
	dropSlot(t, db, base["WALCAST_SLOT_NAME"])
	gapUntil(t, a, "resync_required", projects[1], 20*time.Second)
}
