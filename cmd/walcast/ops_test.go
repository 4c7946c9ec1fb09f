package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/walcast/walcast/internal/events"
)

// TestOperatorRoutes checks /healthz, /readyz, /api/v1/status and that
// /metrics carries the names of docs/protocol.md §4 and passes promlint (the
// checker behind `promtool check metrics`).
func TestOperatorRoutes(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	in := start(t, db, env)
	c := dial(t, in, alice)
	c.subscribe(project)
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'x')`, project, alice)
	c.read(5 * time.Second)
	c.read(5 * time.Second)

	// walcast runs as the least-privilege role, not as a superuser.
	var users []string
	rows, err := db.Pool.Query(context.Background(), `SELECT DISTINCT usename::text FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'walcast%'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var u string
		_ = rows.Scan(&u)
		users = append(users, u)
	}
	if len(users) != 1 || users[0] != "walcast" {
		t.Fatalf("walcast connects as %v, want only the walcast role", users)
	}

	if status, body := doJSON(t, http.MethodGet, in.base+"/healthz", "", "", ""); status != 200 || body["status"] != "ok" {
		t.Fatalf("healthz: %d %v", status, body)
	}
	if status, body := doJSON(t, http.MethodGet, in.base+"/readyz", "", "", ""); status != 200 {
		t.Fatalf("readyz: %d %v", status, body)
	}
	status, st := doJSON(t, http.MethodGet, in.base+"/api/v1/status", "", "", "")
	if status != 200 {
		t.Fatalf("status: %d %v", status, st)
	}
	for _, k := range []string{"slot", "publication", "confirmed_lsn", "lag_bytes", "connections", "subscriptions", "last_event_at"} {
		if _, ok := st[k]; !ok {
			t.Errorf("status lacks %q: %v", k, st)
		}
	}
	if st["slot"] != env["WALCAST_SLOT_NAME"] || st["connections"] != float64(1) || st["subscriptions"] != float64(1) || st["last_event_at"] == nil {
		t.Errorf("status values: %v", st)
	}

	text := scrape(t, in.base)
	for _, name := range []string{
		"walcast_ws_connections 1", "walcast_subscriptions 1",
		`walcast_wal_changes_total{action="INSERT",table="messages"} 1`,
		`walcast_events_sent_total{type="message_created"} 1`,
		"walcast_replication_lag_bytes", "walcast_delivery_latency_seconds_bucket",
		"walcast_slow_consumer_closes_total 0",
	} {
		if !strings.Contains(text, name) {
			t.Errorf("metrics lack %q", name)
		}
	}
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "walcast_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
}

// TestReplicationLossIsRetried kills walcast's walsender: /readyz turns 503
// with a reason, the reader reconnects with backoff, and changes committed
// meanwhile still arrive, once.
func TestReplicationLossIsRetried(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	in := start(t, db, env)
	c := dial(t, in, alice)
	c.subscribe(project)

	// Keep the walsender dead for a moment so /readyz can be seen failing.
	deadline := time.Now().Add(2 * time.Second)
	saw503 := false
	for time.Now().Before(deadline) && !saw503 {
		db.Exec(t, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, env["WALCAST_SLOT_NAME"])
		status, body := doJSON(t, http.MethodGet, in.base+"/readyz", "", "", "")
		if status == http.StatusServiceUnavailable && body["reason"] != nil {
			saw503 = true
		}
	}
	if !saw503 {
		t.Fatal("readyz never reported the lost replication stream")
	}
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'during outage')`, project, alice)
	waitFor(t, 15*time.Second, "readyz after reconnect", func() bool {
		status, _ := doJSON(t, http.MethodGet, in.base+"/readyz", "", "", "")
		return status == 200
	})
	inv := c.read(10 * time.Second)
	mc := c.read(5 * time.Second)
	if inv.str("type") != "cache_invalidate" || mc.data()["content"] != "during outage" {
		t.Fatalf("after reconnect: %v %v", inv, mc)
	}
	c.expectQuiet(500 * time.Millisecond)
	if strings.Contains(scrape(t, in.base), "walcast_wal_reconnects_total 0") {
		t.Error("walcast_wal_reconnects_total did not count the reconnect")
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds walcast once for the tests that need a real process.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "walcast-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "walcast")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build walcast: %v", buildErr)
	}
	return binPath
}

// process is walcast as a separate OS process, for SIGKILL and SIGTERM.
type process struct {
	cmd  *exec.Cmd
	base string
	out  *syncBuffer
	done chan struct{}
}

func startProcess(t *testing.T, env map[string]string) *process {
	t.Helper()
	cmd := exec.Command(binary(t), "serve")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &process{cmd: cmd, base: "http://" + env["WALCAST_HTTP_ADDR"], out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	waitFor(t, 20*time.Second, "walcast process ready", func() bool {
		select {
		case <-p.done:
			t.Fatalf("walcast exited:\n%s", p.out.String())
		default:
		}
		resp, err := http.Get(p.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

func (p *process) kill(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// TestRestartStreamsWhatWasMissed stops walcast (SIGTERM, then SIGKILL),
// commits while it is down, and checks that after each restart the missed
// changes are streamed, with the positions they would have had, and nothing
// is skipped: a client resuming from the last position it saw gets exactly
// the missed events.
func TestRestartStreamsWhatWasMissed(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startProcess(t, env)
			in := &instance{t: t, base: p.base}
			c := dial(t, in, alice)
			c.subscribe(project)
			db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'before')`, project, alice)
			invBefore := c.read(5 * time.Second)
			before := c.read(5 * time.Second)
			if before.data()["content"] != "before" {
				t.Fatalf("before: %v", before)
			}
			p.kill(sig)
			if sig == syscall.SIGTERM {
				// Graceful: sockets closed with 1001, a clean stop logged.
				if _, err := c.tryRead(5 * time.Second); err == nil || websocket.CloseStatus(c.closed()) != websocket.StatusGoingAway {
					t.Errorf("SIGTERM: socket closed with %v, want 1001", c.closed())
				}
				if !strings.Contains(p.out.String(), `"stopped"`) {
					t.Errorf("SIGTERM: no clean stop in log:\n%s", p.out.String())
				}
			}

			for _, m := range []string{"missed 1", "missed 2", "missed 3"} {
				db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, $3)`, project, alice, m)
			}
			p = startProcess(t, env)
			in = &instance{t: t, base: p.base}

			// Resume from the last position seen: exactly the missed events.
			r := dial(t, in, alice)
			r.send(map[string]string{"action": "subscribe", "project_id": project, "since": before.str("position")})
			var got []string
			last := before.str("position")
			for len(got) < 3 {
				f := r.read(10 * time.Second)
				switch f.str("type") {
				case "message_created":
					got = append(got, f.data()["content"].(string))
				case "cache_invalidate", "subscribed":
				default:
					t.Fatalf("resume: unexpected %v", f)
				}
				if pos := f.str("position"); pos < last && f.str("type") != "subscribed" {
					t.Fatalf("position %s after %s", pos, last)
				}
			}
			if strings.Join(got, ",") != "missed 1,missed 2,missed 3" {
				t.Fatalf("missed messages: %v", got)
			}

			// The replayed window gives the pre-crash event its old position.
			s := dial(t, in, alice)
			s.send(map[string]string{"action": "subscribe", "project_id": project, "since": invBefore.str("position")})
			f := s.read(5 * time.Second)
			if f.str("type") != "message_created" || f.str("position") != before.str("position") {
				t.Fatalf("replayed event: want message_created at %s, got %v", before.str("position"), f)
			}
			db.Exec(t, `DELETE FROM messages`)
			drain(r)
			drain(s)
			p.kill(syscall.SIGTERM)
		})
	}
}

// drain reads frames until none comes for a moment.
func drain(c *client) {
	for {
		if _, err := c.tryRead(300 * time.Millisecond); err != nil {
			return
		}
	}
}

// TestNothingConfirmedBeforeTheHub: with no hold-back window the slot's
// confirmed position advances only past transactions the hub published.
func TestConfirmedPositionFollowsTheHub(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	env["WALCAST_HOLD_BACK_AGE"] = "0s"
	in := start(t, db, env)
	c := dial(t, in, alice)
	c.subscribe(project)
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'x')`, project, alice)
	c.read(5 * time.Second)
	mc := c.read(5 * time.Second)
	pos, _ := events.ParsePosition(mc.str("position"))
	var confirmed uint64
	waitFor(t, 10*time.Second, "slot confirmed past the published transaction", func() bool {
		var lsn string
		if err := db.Pool.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, env["WALCAST_SLOT_NAME"]).Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		confirmed = parseLSN(t, lsn)
		return confirmed > pos.LSN
	})
}

// TestProtocolDocInStep: docs/protocol.md part A is the shared contract,
// verbatim, where the shared copy is beside the checkout (as in CI).
func TestProtocolDocInStep(t *testing.T) {
	t.Parallel()
	shared, err := os.ReadFile("../../../shared/PROTOCOL.md")
	if err != nil {
		t.Logf("no shared/PROTOCOL.md beside the checkout (%v); comparing nothing", err)
		return
	}
	doc, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(shared), "\n", 2)
	if len(lines) == 2 && !strings.Contains(string(doc), lines[1]) {
		t.Fatal("docs/protocol.md part A differs from shared/PROTOCOL.md: copy it again")
	}
}

// TestSeriesExistAtStart: a scrape right after start shows the labelled
// series dashboards and rate() alerts need, at zero, before any change or
// event.
func TestSeriesExistAtStart(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))
	text := scrape(t, in.base)
	for _, series := range []string{
		`walcast_wal_changes_total{action="INSERT",table="messages"} 0`,
		`walcast_wal_changes_total{action="DELETE",table="project_members"} 0`,
		`walcast_events_sent_total{type="message_created"} 0`,
		`walcast_events_sent_total{type="resync_required"} 0`,
		`walcast_subscription_revocations_total{reason="member_removed"} 0`,
		`walcast_access_fail_closed_total{reason="publication_missing"} 0`,
	} {
		if !strings.Contains(text, series) {
			t.Errorf("no %s in a scrape right after start", series)
		}
	}
}
